"""Benchmark: how long `mailer` takes to start, as whole processes (issue 17, point 5).

Each command is started as its own process, as cron or a shell starts it, and timed from
outside: wall seconds (a monotonic clock around start and reap), CPU seconds (user +
system of the finished child, os.wait4) and peak RSS (the kernel's high-water mark).

    python -c pass                   the interpreter alone (the floor)
    python -c 'import mailer.cli'    the command line's own import
    python -m mailer --version
    python -m mailer --help
    python -m mailer run             in a fresh `mailer init` project, nothing due

To compare two source trees (before/after a change), give each with --tree LABEL=DIR: the
commands run with PYTHONPATH=DIR, alternating between the trees run by run, so a drift in
the machine's load moves both; each tree gets its own project (made by its own `mailer
init`). The ratio column is the median of the per-pair ratios against the first tree.

    git clone -q . /tmp/startup-before && git -C /tmp/startup-before checkout -q REV
    .venv/bin/python bench/startup_bench.py --tree before=/tmp/startup-before --tree after=.
    .venv/bin/python bench/startup_bench.py --runs 20           # this tree alone

Medians are the figures to quote; min and max show how noisy the machine was. On a
loaded machine quote the CPU seconds beside the wall seconds, and the load average
(printed first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS: dict[str, tuple[list[str], bool]] = {  # label -> (argv after python, in project)
    "python -c pass": (["-c", "pass"], False),
    "import mailer.cli": (["-c", "import mailer.cli"], False),
    "mailer --version": (["-m", "mailer", "--version"], False),
    "mailer --help": (["-m", "mailer", "--help"], False),
    "mailer run (idle)": (["-m", "mailer", "run"], True),
}


def run_once(python: str, argv: list[str], tree: Path, cwd: Path) -> tuple[float, float, int]:
    """Wall s, CPU s (user + system) and peak RSS (MiB) of one whole process."""
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    env["PYTHONPATH"] = str(tree)
    start = time.perf_counter()
    proc = subprocess.Popen([python, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    error = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} in {tree}: exit {proc.returncode}: "
                 f"{error.decode(errors='replace').strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def byte_compile(python: str, tree: Path) -> None:
    """The tree's .pyc files, as an installed package has them: with PYTHONDONTWRITEBYTECODE
    set (as on this machine) a fresh checkout would compile every module it imports from
    source at every start, and a tree would be timed on its cache, not its imports."""
    subprocess.run([python, "-m", "compileall", "-q", str(tree / "mailer")], check=True,
                   stdout=subprocess.DEVNULL)


def make_project(python: str, tree: Path, where: Path) -> Path:
    """A fresh `mailer init` project after its first `mailer run` (the daily purge done,
    the run cache written): the runs timed are idle ones, as cron's are most minutes."""
    folder = where / "project"
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    env["PYTHONPATH"] = str(tree)
    quiet = {"check": True, "env": env, "stdin": subprocess.DEVNULL,
             "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([python, "-m", "mailer", "init", str(folder), "--organisation", "Bench",
                    "--domain", "example.be"], cwd=where, **quiet)  # type: ignore[call-overload]
    subprocess.run([python, "-m", "mailer", "run"], cwd=folder, **quiet)  # type: ignore[call-overload]
    return folder


def spread(values: list[float], digits: int = 3) -> str:
    return (f"{statistics.median(values):.{digits}f} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="a source tree to run (repeat to compare; default: this one)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter (default: this one)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", action="append", choices=sorted(COMMANDS),
                        help="only these commands (repeat)")
    args = parser.parse_args()

    trees = [(label, Path(path).resolve()) for label, _, path in
             (t.partition("=") for t in args.tree)] or [("this", ROOT)]
    commands = {k: v for k, v in COMMANDS.items() if not args.only or k in args.only}
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}, {os.cpu_count()} cores; {args.runs} runs each, "
          f"{args.warmup} warm-up; median [min-max]")

    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        projects = {}
        for label, tree in trees:
            byte_compile(args.python, tree)
            (Path(tmp) / label).mkdir()
            projects[label] = make_project(args.python, tree, Path(tmp) / label)
        for name, (argv, in_project) in commands.items():
            walls: dict[str, list[float]] = {label: [] for label, _ in trees}
            cpus: dict[str, list[float]] = {label: [] for label, _ in trees}
            rss: dict[str, list[float]] = {label: [] for label, _ in trees}
            for run in range(args.warmup + args.runs):
                for label, tree in trees:
                    cwd = projects[label] if in_project else Path(tmp)
                    wall, cpu, peak = run_once(args.python, argv, tree, cwd)
                    if run >= args.warmup:
                        walls[label].append(wall)
                        cpus[label].append(cpu)
                        rss[label].append(peak)
            first = trees[0][0]
            for label, _ in trees:
                ratio = ""
                if label != first:
                    pairs = [a / b for a, b in zip(walls[label], walls[first], strict=True)]
                    ratio = f"  wall x{statistics.median(pairs):.2f} of {first}"
                print(f"{name:<20} {label:<8} wall {spread(walls[label])} s  "
                      f"cpu {spread(cpus[label])} s  "
                      f"peak {statistics.median(rss[label]):.0f} MiB{ratio}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
