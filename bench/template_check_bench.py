"""Benchmark: what the template check costs a send (issue 12, point 2).

`campaign create`, `campaign test` and the start of `campaign send` check the template
against the whole audience (mailer/content/lint.py): the members are read with their
fields, grouped by the fields they have, and one recording render per group decides. This
times that check as a user runs it, `mailer templates check --campaign bench --json`, as
a whole process in a SQLite project of N confirmed members (default 100,000; a sixth
without a first name, a third English), beside `mailer --help` (the start-up every
command pays). Wall seconds, CPU seconds (user + system, from wait4) and peak memory of
the process; the load average with every figure.

    .venv/bin/python bench/template_check_bench.py
    .venv/bin/python bench/template_check_bench.py --people 1000000
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

from mailer.scaffold import create_project  # noqa: E402

TEMPLATE = """{% extends "layout.html.j2" %}
{% block content %}
<p>Dag {{ subscriber.first_name | default("lezer") }},</p>
<p>{{ subscriber.attributes.Gemeente | default("") }}</p>
{% endblock %}
"""


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PYTHONPATH"] = str(ROOT)
    mailer = [sys.executable, "-m", "mailer"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        create_project(folder)
        (folder / "templates" / "bench.html.j2").write_text(TEMPLATE)
        csv = folder / "people.csv"
        with csv.open("w") as out:
            out.write("email,first_name,language,Gemeente\n")
            for i in range(options.people):
                name = "" if i % 6 == 0 else f"Naam{i}"
                out.write(f"p{i}@example.be,{name},{'en' if i % 3 == 0 else 'nl'},Gent\n")
        for args in (["lists", "sync"],
                     ["subscribers", "import", str(csv), "--list", "nieuwsbrief",
                      "--consent", "bench", "--confirmed", "--quiet"],
                     ["campaign", "create", "bench", "--list", "nieuwsbrief", "--template",
                      "templates/bench.html.j2", "--subject", "Nieuws"]):
            subprocess.run([*mailer, *args], cwd=folder, env=env, check=True,
                           stdout=subprocess.DEVNULL)
        for label, args in (("mailer --help", ["--help"]),
                            ("templates check --campaign", ["templates", "check",
                                                            "--campaign", "bench", "--json"])):
            runs = [timed([*mailer, *args], folder, env) for _ in range(options.repeat)]
            wall, cpu, peak = min(runs)
            print(f"{label:28} {options.people:>9,} members: wall {wall:5.2f} s, "
                  f"CPU {cpu:5.2f} s, peak {peak:4.0f} MB  (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
