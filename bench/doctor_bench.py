"""Benchmark: `mailer doctor` against the test DNS server, as a user runs it.

The sender of the doctor's tests, set up right (tests/support/doctorworld.py): dnsmasq on
a loopback port serving the zone (SPF with an include, the DKIM key, DMARC, MX, PTR, A),
the STARTTLS relay with a login, the web app over TLS for the one-click probe, one list
and its template. The command is the real one, in its own process:

    python -m mailer doctor --json --nameserver 127.0.0.1:PORT --sending-ip 192.0.2.10

Printed per run: the wall and CPU time of the whole process, the doctor's own time (the
report's `checked.seconds`: everything after the project is loaded), and as the baseline
the wall and CPU time of `python -m mailer --help` in the same run (Python and the CLI's
imports), so the figure can be read on a busy machine: the CPU seconds barely change with
the load, the wall seconds do. Target: under 2 s. Every run must exit 0 with no finding
other than ok.

    .venv/bin/python bench/doctor_bench.py
    .venv/bin/python bench/doctor_bench.py --repeat 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.doctorworld import World, arguments  # noqa: E402


def _timed(command: list[str],
           env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the process, the result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    with tempfile.TemporaryDirectory(prefix="doctor-bench-") as tmp:
        world = World.make(Path(tmp))
        with world.running() as env:
            full = {**base, **env}
            python = [sys.executable, "-m", "mailer"]
            rows = []
            for run in range(1, args.repeat + 1):
                baseline, baseline_cpu, _ = _timed([*python, "--help"], full)
                wall, cpu, done = _timed([*python, *arguments(env)], full)
                if done.returncode != 0:
                    sys.exit(f"doctor exited {done.returncode}: {done.stderr or done.stdout}")
                report = json.loads(done.stdout)
                bad = [f for f in report["findings"] if f["status"] != "ok"]
                if bad:
                    sys.exit(f"unexpected findings: {bad}")
                rows.append((run, wall, cpu, report["checked"]["seconds"], baseline,
                             baseline_cpu, report["checked"]["dns_queries"]))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'run':>3} {'wall s':>7} {'cpu s':>6} {'doctor s':>9} {'--help s':>9} "
          f"{'cpu s':>6} {'queries':>8}")
    for run, wall, cpu, own, baseline, baseline_cpu, queries in rows:
        print(f"{run:>3} {wall:>7.2f} {cpu:>6.2f} {own:>9.2f} {baseline:>9.2f} "
              f"{baseline_cpu:>6.2f} {queries:>8}")
    median = [statistics.median(r[i] for r in rows) for i in range(1, 6)]
    print(f"median: wall {median[0]:.2f} s (cpu {median[1]:.2f} s), the doctor's own "
          f"{median[2]:.2f} s; start-up baseline (--help) {median[3]:.2f} s (cpu "
          f"{median[4]:.2f} s); target: under 2 s")


if __name__ == "__main__":
    main()
