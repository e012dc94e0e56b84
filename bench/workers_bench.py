"""Benchmark: several `mailer worker` processes sending one campaign over PostgreSQL
(issue 17, points 1 and 6: the figures with 1, 2 and 4 senders).

A PostgreSQL server started by the bench (tests/support/pgserver.py), a project of N
confirmed members (bench/delivery_bench.py's, ed25519-signed messages), Postfix's
smtp-sink on loopback. For each count of workers, a fresh campaign to the same people is
started (its deliveries queued) and that many `mailer worker` processes are started at
once; they claim the outbox between them. Printed per count: the total messages a second
from the first message sent to the last (the deliveries' sent_at, all workers together),
the wall time from the start of the processes until the last one ended, and the CPU
seconds of all of them (wait4, helpers included). The counts run in the order given and
then back (1 2 4 4 2 1), so a machine that gets busier weighs on all alike; each is the
mean of its two runs.

    PYTHONPATH=. .venv/bin/python bench/workers_bench.py                  # 20,000, 1 2 4
    PYTHONPATH=. .venv/bin/python bench/workers_bench.py --recipients 50000 --workers 1,2

Needs /usr/sbin/smtp-sink (Debian package postfix).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delivery_bench import (  # noqa: E402
    create_campaign,
    free_port,
    make_project,
    signing,
    start_sink,
)

START = ("from mailer.db import session_scope; from mailer.project import Project; "
         "from mailer.delivery.campaigns import get_campaign; "
         "from mailer.delivery.runner import prepare_start; p = Project.load(None)\n"
         "with session_scope(p.engine) as s: prepare_start(p, s, get_campaign(s, {name!r}))")


def send(folder: Path, env: dict[str, str], name: str, workers: int) -> dict[str, float]:
    """Start campaign `name`, then `workers` workers at once; their figures."""
    create_campaign(folder, env, name)
    subprocess.run([sys.executable, "-c", START.format(name=name)], cwd=folder, env=env,
                   check=True, capture_output=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        procs = [subprocess.Popen([sys.executable, "-m", "mailer", "worker", "-q"],
                                  cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                  stderr=err) for _ in range(workers)]
        cpu = 0.0
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                err.seek(0)
                raise SystemExit(f"a worker failed:\n{err.read().decode()[-2000:]}")
    wall = time.perf_counter() - started
    from sqlalchemy import create_engine

    engine = create_engine(env["MAILER_DATABASE_URL"])
    with engine.connect() as conn:
        sent, first, last = conn.exec_driver_sql(
            "SELECT count(*), min(d.sent_at), max(d.sent_at) FROM delivery d JOIN campaign c "
            "ON c.id = d.campaign_id WHERE c.slug = %s AND d.state = 'sent'", (name,)).one()
    engine.dispose()
    span = (last - first).total_seconds()
    return {"sent": sent, "rate": (sent - 1) / span if span else 0.0, "wall": wall,
            "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--connections", type=int, default=8,
                        help="SMTP connections of each worker")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    from tests.support.pgserver import start_postgres

    pg = start_postgres()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "project"
            env, keys, _ = make_project(folder, args.recipients, port, ["ed25519"],
                                        pg.create_database("bench"))
            env = {**signing(env, keys, "ed25519"), "PYTHONPATH": str(ROOT),
                   "MAILER_DELIVERY__CONNECTIONS": str(args.connections)}
            results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
            for i, n in enumerate([*counts, *reversed(counts)]):
                results[n].append(send(folder, env, f"w{n}-{i}", n))
                print(f"  {n} worker(s): {results[n][-1]['rate']:,.0f} msgs/s", flush=True)
        print(f"\n{args.recipients:,} recipients, ed25519, {args.connections} connections "
              f"a worker, PostgreSQL on this machine; load average "
              f"{os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores")
        base = sum(r["rate"] for r in results[counts[0]]) / len(results[counts[0]])
        for n, runs in results.items():
            mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("rate", "wall", "cpu")}
            assert all(r["sent"] == args.recipients for r in runs), runs
            print(f"  {n} worker(s): {mean['rate']:7,.0f} msgs/s ({mean['rate'] / base:.2f}x "
                  f"{counts[0]}), {mean['wall']:5.1f} s wall, {mean['cpu']:5.1f} s CPU, "
                  f"{mean['cpu'] * 1e6 / args.recipients:,.0f} us CPU a message")
    finally:
        sink.terminate()
        pg.stop()


if __name__ == "__main__":
    main()
