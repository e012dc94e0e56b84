"""Benchmark: the one-click unsubscribe endpoint (RFC 8058) of `mailer serve` under load.

Starts `mailer serve` on a fresh project of N confirmed subscribers and drives it with
the load generator below: C keep-alive HTTP/1.1 connections, each sending
`POST /u/TOKEN` with `List-Unsubscribe=One-Click` back to back, every request for the
next subscriber in turn, so every request is a write. After a warm-up it measures for a
fixed time and prints requests/s, latency percentiles, errors by kind and the CPU seconds
of the server (all its processes), of PostgreSQL when used, and of the generator; then it
checks in the database that the subscribers answered 200 are exactly the ones unsubscribed.

    .venv/bin/python bench/web_bench.py                       # 50 clients, 10 s, SQLite
    .venv/bin/python bench/web_bench.py --seconds 30 --clients 100
    .venv/bin/python bench/web_bench.py --workers 2           # mailer serve --workers 2
    .venv/bin/python bench/web_bench.py --postgres

Target: at least 1,000 requests/s with p99 <= 50 ms at 50 clients on SQLite, no errors.

The generator is one process (on uvloop when it is installed) on the same machine as the
server, so they share its cores: the figures are a floor for the server alone. Each client
waits for an answer before it sends again (a closed loop), so latency is measured as the
clients see it, queueing in the generator included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.project import Project

try:
    import uvloop
except ImportError:  # the generator runs on asyncio's own loop, a little slower
    uvloop = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOST = "127.0.0.1"
BODY = b"List-Unsubscribe=One-Click"
GRACE = 10.0  # seconds an answer may still take after the measured phase ends


# -- the project and the server ---------------------------------------------------------------

def make_project(folder: Path, n: int, db_url: str | None) -> dict[str, str]:
    """A project with one list, `nieuwsbrief`, of n confirmed subscribers; its environment."""
    from bench.delivery_bench import add_people

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    if db_url:
        env["MAILER_DATABASE_URL"] = db_url
    subprocess.run([sys.executable, "-m", "mailer", "init", str(folder)], check=True,
                   env=env, capture_output=True)
    add_people(folder, n, env)
    return env


def serve_command(port: int, workers: int | None) -> list[str]:
    extra = ["--workers", str(workers)] if workers else []
    return [sys.executable, "-m", "mailer", "serve", "--host", HOST, "--port", str(port),
            *extra]


def healthz(port: int) -> int | None:
    """The status of GET /healthz, or None while the port does not answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def start_server(cmd: list[str], cwd: Path, env: dict[str, str], port: int,
                 log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the server; return once /healthz answers 200 (or 404: no health check)."""
    server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{' '.join(cmd[2:4])} exited ({server.returncode}):\n"
                             f"{log_tail(log)}")
        if healthz(port) in (200, 404):
            return server
        time.sleep(0.1)
    stop(server)
    raise SystemExit(f"the server did not answer on {HOST}:{port} within 60 s:\n"
                     f"{log_tail(log)}")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def log_tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) so far of a process and its live descendants."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


# -- the load generator -----------------------------------------------------------------------

def build_requests(tokens: list[str], port: int) -> list[bytes]:
    """One complete request per subscriber, built before the clock starts."""
    head = (f"Host: {HOST}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode()
    return [b"POST /u/" + t.encode() + b" HTTP/1.1\r\n" + head + BODY for t in tokens]


@dataclass
class Tally:
    """What one phase (warm-up or measured) saw, by the time each answer arrived."""

    latencies: list[float] = field(default_factory=list)  # seconds, answers with any status
    statuses: Counter[int] = field(default_factory=Counter)  # answers other than 200
    failures: Counter[str] = field(default_factory=Counter)  # connection errors by kind
    closes: int = 0  # answers that closed the connection (`Connection: close`, no length)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())


@dataclass
class Run:
    """The shared state of the clients: the phases, the next subscriber, what was hit."""

    requests: list[bytes]
    port: int
    measure_from: float
    measure_until: float
    turn: Iterator[int] = field(default_factory=itertools.count)
    warmup: Tally = field(default_factory=Tally)
    measured: Tally = field(default_factory=Tally)
    sent: int = 0
    touched: bytearray = field(default_factory=bytearray)  # per subscriber: a request sent
    answered: bytearray = field(default_factory=bytearray)  # per subscriber: a 200 received

    def tally(self, now: float) -> Tally | None:
        """The phase an answer at `now` belongs to; None after the measured phase."""
        if now < self.measure_from:
            return self.warmup
        return self.measured if now <= self.measure_until else None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close, chunked = None, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then a blank line
            pass
    elif length is not None:
        await reader.readexactly(length)
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # no length: the body ends with the connection (RFC 9112 6.3)
        close = True
    return status, close


async def client(run: Run) -> None:
    """One connection: a request, its answer, the next request, until the phase ends."""
    n = len(run.requests)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (start := time.perf_counter()) < run.measure_until:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, run.port)
                assert reader is not None
                i = next(run.turn) % n
                writer.write(run.requests[i])
                run.sent += 1
                run.touched[i] = 1
                status, close = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, IndexError) as exc:
                tally = run.tally(time.perf_counter())
                if tally is not None:
                    tally.failures[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a refused connect must not spin
                continue
            now = time.perf_counter()
            tally = run.tally(now)
            if status == 200:
                run.answered[i] = 1
            if tally is not None:
                tally.latencies.append(now - start)
                if status != 200:
                    tally.statuses[status] += 1
                tally.closes += int(close)
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def generate(run: Run, clients: int, watched: dict[str, int]) -> dict[str, float]:
    """Run the clients through both phases; the CPU seconds that the generator and each
    watched process tree spent in the measured one."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(client(run)) for _ in range(clients)]
    await asyncio.sleep(run.measure_from - time.perf_counter())
    cpu0 = {k: tree_cpu(p) for k, p in watched.items()} | {"generator": time.process_time()}
    await asyncio.sleep(run.measure_until - time.perf_counter())
    cpu1 = {k: tree_cpu(p) for k, p in watched.items()} | {"generator": time.process_time()}
    _, stuck = await asyncio.wait(tasks, timeout=GRACE)
    for task in stuck:
        task.cancel()
        run.measured.failures[f"no answer {GRACE:.0f} s after the end"] += 1
    await asyncio.gather(*tasks, return_exceptions=True)
    return {k: cpu1[k] - cpu0[k] for k in cpu0}


def load(run: Run, clients: int, watched: dict[str, int]) -> dict[str, float]:
    gc.collect()
    gc.freeze()  # the tokens and requests are never garbage: keep the collector off them
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(generate(run, clients, watched))


# -- the report -------------------------------------------------------------------------------

def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def describe_errors(tally: Tally) -> str:
    parts = [f"HTTP {s} x {c:,}" for s, c in sorted(tally.statuses.items())]
    parts += [f"{kind} x {c:,}" for kind, c in tally.failures.most_common()]
    return "; ".join(parts) or "none"


def report(run: Run, args: argparse.Namespace, cpu: dict[str, float], db: str,
           unsubscribed: int) -> bool:
    """Print the results; whether the database agrees with the answers."""
    m = run.measured
    ordered = sorted(m.latencies)
    rate = len(ordered) / args.seconds
    touched, answered = sum(run.touched), sum(run.answered)
    print(f"requests     {len(ordered):>10,} answered (any status) in {args.seconds:g} s; "
          f"{run.sent:,} sent in all, warm-up included")
    print(f"throughput   {rate:>10,.0f} requests/s")
    p99 = percentile(ordered, 99) * 1000 if ordered else math.inf
    if ordered:
        print(f"latency ms   p50 {percentile(ordered, 50) * 1000:.1f}   "
              f"p90 {percentile(ordered, 90) * 1000:.1f}   p99 {p99:.1f}   "
              f"max {ordered[-1] * 1000:.1f}")
    print(f"errors       {describe_errors(m)}")
    if run.warmup.errors:
        print(f"  warm-up    {describe_errors(run.warmup)}")
    print(f"reconnects   {m.closes:,} (answers that closed the connection)")
    for row, (name, seconds) in enumerate(cpu.items()):
        each = f", {seconds / len(ordered) * 1e6:,.0f} us/request" if ordered else ""
        print(f"{'' if row else 'CPU seconds':<13}{name} {seconds:.1f} "
              f"({seconds / args.seconds:.2f} cores{each})")
    if run.sent > touched:
        print(f"repeats      {run.sent - touched:,} requests for a subscriber asked before "
              f"(the {len(run.requests):,} came round; --subscribers for more)")
    agrees = answered <= unsubscribed <= touched
    sign = "=" if answered == unsubscribed else "!="
    print(f"database     {unsubscribed:,} memberships unsubscribed ({db}) {sign} {answered:,} "
          f"distinct subscribers answered 200"
          + (f", {touched:,} asked" if touched != answered else "")
          + f": {'OK' if agrees else 'MISMATCH'}")
    checks = [(rate >= 1000, f"{rate:,.0f} req/s >= 1,000"),
              (p99 <= 50, f"p99 {p99:.1f} ms <= 50"),
              (m.errors == 0, f"{m.errors:,} errors = 0")]
    verdict = "MET" if all(ok for ok, _ in checks) else "NOT MET"
    print("target       " + "; ".join(f"{text} {'yes' if ok else 'NO'}" for ok, text in checks)
          + f": {verdict}")
    if args.clients != 50 or db != "SQLite":
        print("             (the target is stated for 50 clients on SQLite)")
    return agrees


def prepare(folder: Path, n: int, db_url: str | None,
            port: int) -> tuple[dict[str, str], Project, int, list[bytes]]:
    """The project, its environment, the list's id and one request per subscriber."""
    from sqlalchemy import text

    from mailer.config import load_settings
    from mailer.project import Project

    env = make_project(folder, n, db_url)
    # The server's settings exactly: the same file, the same environment.
    project = Project(load_settings(folder / "mailer.toml", environ=env))
    with project.engine.connect() as conn:
        list_id = conn.execute(text(
            "SELECT id FROM mailing_list WHERE slug = 'nieuwsbrief'")).scalar_one()
        ids = list(conn.execute(text(
            "SELECT subscriber_id FROM subscription WHERE list_id = :l "
            "AND status = 'confirmed' ORDER BY subscriber_id"), {"l": list_id}).scalars())
    if len(ids) != n:
        raise SystemExit(f"{len(ids):,} confirmed members after the import, expected {n:,}")
    tokens = [project.signer.message_token(i, list_id, 0).link for i in ids]
    return env, project, list_id, build_requests(tokens, port)


def count_unsubscribed(project: Project, list_id: int) -> int:
    from sqlalchemy import text

    with project.engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM subscription WHERE list_id = :l AND status = 'unsubscribed'"),
            {"l": list_id}).scalar_one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--workers", type=int, help="passed to mailer serve --workers")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()

    from bench.delivery_bench import free_port

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="mailer-web-bench-"))
    pg = server = project = None
    with tempfile.TemporaryFile() as log:
        try:
            db_url = None
            if args.postgres:
                from tests.support.pgserver import start_postgres
                pg = start_postgres()
                db_url = pg.create_database("bench")
            db = "PostgreSQL" if db_url else "SQLite"
            t = time.perf_counter()
            env, project, list_id, requests = prepare(tmp / "project", args.subscribers,
                                                      db_url, port)
            setup = time.perf_counter() - t
            server = start_server(serve_command(port, args.workers), tmp / "project", env,
                                  port, log)
            workers = f"--workers {args.workers}" if args.workers else "default --workers"
            print(f"mailer serve on {HOST}:{port} ({db}, {workers}); {args.clients} clients; "
                  f"{args.subscribers:,} subscribers, the next one each request")
            print(f"{os.cpu_count()} CPU cores, shared by the server and this load generator "
                  f"(one process, {'uvloop' if uvloop else 'asyncio'})")
            print(f"(setup: project, import, tokens: {setup:.0f} s; warm-up {args.warmup:g} s, "
                  f"then {args.seconds:g} s measured)\n")
            start = time.perf_counter() + args.warmup
            run = Run(requests, port, start, start + args.seconds,
                      touched=bytearray(len(requests)), answered=bytearray(len(requests)))
            watched = {"server": server.pid}
            if pg is not None:  # its server processes are not the bench's children
                watched[db] = int((pg.datadir / "postmaster.pid").read_text().split()[0])
            cpu = load(run, args.clients, watched)
            if server.poll() is not None:
                print(f"the server exited ({server.returncode}) during the run:\n"
                      f"{log_tail(log)}")
            if not report(run, args, cpu, db, count_unsubscribed(project, list_id)):
                sys.exit(1)
        finally:
            if server is not None:
                stop(server)
            if project is not None:
                project.close()
            if pg is not None:
                pg.stop()
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
