"""Benchmark: `mailer subscribers import` of generated CSV files, beside a bare executemany.

For each size it prints, in one run: rows/s, wall seconds, CPU seconds and the peak RSS of
the whole process tree (the importer and its validation workers, sampled every 20 ms), and
a bare driver executemany of the same rows into a one-table schema, so the overhead of
validation, de-duplication, suppression checks, memberships and consent events is visible.

    .venv/bin/python bench/import_bench.py                      # SQLite, 100k and 1M rows
    .venv/bin/python bench/import_bench.py --sizes 100000 --postgres
    .venv/bin/python bench/import_bench.py --sizes 1000000 --postgres --before /tmp/old

On PostgreSQL it also prints the server's CPU seconds during the import (its processes,
those that ended included): the server shares the machine's cores with the importer.
`--before DIR` runs every import a second time with the code of another checkout
(PYTHONPATH=DIR, e.g. a clone at an earlier commit), right after this code's, each into
a fresh database.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST = ["An", "Jan", "Marie", "Sofie", "Lukas", "Els", "Jürgen", "Noor", "Pieter", "Lotte"]
LAST = ["Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens"]
CITIES = ["Gent", "Antwerpen", "Brussel", "Leuven", "Brugge", "Hasselt", "Mechelen"]


def generate(path: Path, rows: int) -> None:
    """address;first;last;two attributes, 200 distinct domains, deterministic."""
    rnd = random.Random(rows)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["email", "first_name", "last_name", "city", "member_since"])
        for i in range(rows):
            writer.writerow([f"person.{i}@domain{i % 200}.example.be", rnd.choice(FIRST),
                             rnd.choice(LAST), rnd.choice(CITIES), 2000 + i % 26])


def read_rows(path: Path) -> list[tuple[str, ...]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=";")
        next(reader)
        return [tuple(r) for r in reader]


def bare_sqlite(path: Path, rows: list[tuple[str, ...]]) -> float:
    db = path.with_suffix(".bare.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, email TEXT UNIQUE, first TEXT, "
                 "last TEXT, city TEXT, since TEXT)")
    start = time.perf_counter()
    conn.executemany("INSERT INTO s (email, first, last, city, since) VALUES (?,?,?,?,?)", rows)
    conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return elapsed


def bare_postgres(url: str, rows: list[tuple[str, ...]]) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS bare_s")
        conn.execute("CREATE TABLE bare_s (id SERIAL PRIMARY KEY, email TEXT UNIQUE, "
                     "first TEXT, last TEXT, city TEXT, since TEXT)")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bare_s (email, first, last, city, since) "
                            "VALUES (%s,%s,%s,%s,%s)", rows)
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bare_s")
    return elapsed


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in kB."""
    total = 0
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    stack = [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def server_cpu(server: object | None) -> float:
    """CPU seconds used so far by a PostgreSQL server started by the bench: the postmaster,
    its live processes and those it has reaped (0 without a server)."""
    if server is None:
        return 0.0
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])  # type: ignore[attr-defined]
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster:  # utime, stime and its reaped children's
            ticks += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_import(project: Path, csv_path: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (tree) and peak tree RSS (MB) of one import."""
    cmd = [sys.executable, "-m", "mailer", "subscribers", "import", str(csv_path),
           "--list", "nieuwsbrief", "--consent", "bench", "--confirmed", "--quiet"]
    before = os.times()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # the summary goes to stderr: shown on failure
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL,
                                stderr=errors)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss_kb(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        after = os.times()
        errors.seek(0)
        said = errors.read().decode(errors="replace")
    if code != 0:
        raise SystemExit(f"import failed with exit code {code}:\n{said[-2000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    return wall, cpu, peak // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--postgres", action="store_true", help="Also run on PostgreSQL.")
    parser.add_argument("--skip-sqlite", action="store_true",
                        help="PostgreSQL only (with --postgres).")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of the engine to run each import with as well "
                             "(PYTHONPATH=DIR)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from mailer.scaffold import create_project

    backends = ([] if args.skip_sqlite and args.postgres else ["sqlite"]) + (
        ["postgresql"] if args.postgres else [])
    codes: list[tuple[str, Path | None]] = [("", None)]
    if args.before is not None:
        if not (args.before / "mailer" / "__init__.py").exists():
            parser.error(f"--before {args.before}: not a checkout of the engine")
        codes.append(("before", args.before.resolve()))
    server = None
    if args.postgres:
        from tests.support.pgserver import start_postgres

        server = start_postgres()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
          + (f"; beside the code of {args.before}" if args.before else ""))
    print(f"{'backend':<18}{'rows':>10}{'wall s':>9}{'rows/s':>10}{'cpu s':>8}{'server':>8}"
          f"{'peak MB':>9}{'bare s':>8}{'bare rows/s':>13}{'ratio':>7}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmpdir = Path(tmp)
            results: dict[tuple[str, str, int], float] = {}
            for size in sizes:
                csv_path = tmpdir / f"people-{size}.csv"
                generate(csv_path, size)
                rows = read_rows(csv_path)
                for backend in backends:
                    bare = None
                    for code, tree in codes:
                        label = backend + (f", {code}" if code else "")
                        project = tmpdir / f"p-{backend}-{size}-{code or 'this'}"
                        create_project(project)
                        env = dict(os.environ)
                        if tree is not None:
                            env["PYTHONPATH"] = str(tree)
                        if backend == "postgresql":
                            assert server is not None
                            url = server.create_database(f"bench_{size}_{code or 'this'}")
                            env["MAILER_DATABASE_URL"] = url
                            subprocess.run([sys.executable, "-m", "mailer", "db", "upgrade"],
                                           cwd=project, env=env, check=True,
                                           capture_output=True)
                            if bare is None:
                                bare = bare_postgres(url, rows)
                        elif bare is None:
                            bare = bare_sqlite(csv_path, rows)
                        subprocess.run([sys.executable, "-m", "mailer", "lists", "sync"],
                                       cwd=project, env=env, check=True, capture_output=True)
                        used = server_cpu(server)
                        wall, cpu, peak = run_import(project, csv_path, env)
                        used = server_cpu(server) - used
                        results[(backend, code, size)] = wall
                        shown = f"{used:>8.1f}" if backend == "postgresql" else f"{'':>8}"
                        print(f"{label:<18}{size:>10,}{wall:>9.1f}{size / wall:>10,.0f}"
                              f"{cpu:>8.1f}{shown}{peak:>9}{bare:>8.1f}{size / bare:>13,.0f}"
                              f"{wall / bare:>7.1f}", flush=True)
                del rows
            for backend in backends:
                for code, _ in codes:
                    if len(sizes) >= 2:
                        small, big = sizes[0], sizes[-1]
                        if (backend, code, small) in results and (
                                backend, code, big) in results:
                            ratio = results[(backend, code, big)] / results[
                                (backend, code, small)]
                            print(f"{backend}{', ' + code if code else ''}: {big:,} rows took "
                                  f"{ratio:.1f}x the time of {small:,} ({big / small:.0f}x "
                                  "the rows)")
                if len(codes) > 1:
                    for size in sizes:
                        now, then = results[(backend, "", size)], results[
                            (backend, "before", size)]
                        print(f"{backend}, {size:,} rows: this code {now:.1f} s, before "
                              f"{then:.1f} s: {then / now:.2f}x the rate")
    finally:
        if server is not None:
            server.stop()
    print(f"load average at the end {os.getloadavg()[0]:.1f}; cpu s: the importer and its "
          "validation workers; server: PostgreSQL's processes during the import")


if __name__ == "__main__":
    main()
