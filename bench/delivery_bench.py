"""Benchmark: the delivery engine against a bare SMTP client, into Postfix's smtp-sink.

In one run, against the same `smtp-sink` on loopback:

  A  the engine: `mailer campaign send` of an N-recipient campaign, personalised and
     DKIM-signed (ed25519 by default; rsa, or both: two signatures a message), every
     delivery's state written to the database, the "sending" marks durably (synced to
     disk at each commit: a mark lost to a power cut would mean a resend);
  B  a bare aiosmtplib client sending N pre-built messages over 16 reused connections.

Prints messages/s, CPU seconds and peak RSS of each (each runs in its own process,
measured with wait4), and the ratio A/B.

    .venv/bin/python bench/delivery_bench.py                      # 100,000, ed25519, SQLite
    .venv/bin/python bench/delivery_bench.py --recipients 1000000
    .venv/bin/python bench/delivery_bench.py --dkim rsa
    .venv/bin/python bench/delivery_bench.py --dkim rsa+ed25519     # two signatures a message
    .venv/bin/python bench/delivery_bench.py --dkim ed25519,rsa+ed25519   # both, one run
    .venv/bin/python bench/delivery_bench.py --marks both   # durable marks against NORMAL
    .venv/bin/python bench/delivery_bench.py --marks commits --skip-bare  # the commit alone
    .venv/bin/python bench/delivery_bench.py --postgres           # the engine on PostgreSQL
    .venv/bin/python bench/delivery_bench.py --stores sqlite,postgresql --repeat 2
    .venv/bin/python bench/delivery_bench.py --stores sqlite,postgresql --before /tmp/old
    .venv/bin/python bench/delivery_bench.py --stores sqlite,postgresql --repeat 2 --server-core

`--stores sqlite,postgresql` sends the same campaign from a SQLite project and from a
PostgreSQL one (the server started by the bench, on the same machine), in turn: with
`--repeat 2` in the order S P P S, so both see the machine alike; it prints PostgreSQL's
rate over SQLite's. `--before DIR` also runs every send with the engine of another
checkout (PYTHONPATH=DIR; e.g. a clone at an earlier commit), alternating with this one.

`--server-core` gives PostgreSQL's server a CPU of its own (the last) and runs all else
on the others, for either store: the sender's machine alike for both, the database
server apart (as docs/scale-out.md recommends), instead of all sharing every core.

`--marks both` sends each configuration four times, each a fresh campaign to the same
people: with durable marks, with the marks at SQLite's synchronous=NORMAL (as before
they were made durable), again NORMAL, again durable; the ratio is of the means, so a
machine that gets busier or quieter during the run weighs on both alike.

Needs /usr/sbin/smtp-sink (Debian package postfix; the bench starts its own sink and
does not need the postfix daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SINK = "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen[bytes]:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SINK, *user, "-R", "/tmp", f"127.0.0.1:{port}", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return sink
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start")


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> dict[str, float]:
    """Run `cmd`; its wall time, CPU seconds (with its helper processes, from wait4) and
    peak RSS: of the whole process tree (the sum, sampled every 50 ms) and of the largest
    single process (the kernel's high-water mark)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_file, stderr=err_file)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": max(peak, usage.ru_maxrss * 1024) / 2**20,
            "max_process_mb": usage.ru_maxrss / 1024, "stdout": out}  # type: ignore[dict-item]


# -- B: the bare client ---------------------------------------------------------------------

def bare_client(port: int, n: int, connections: int = 16) -> None:
    """Send n pre-built messages over `connections` reused connections."""
    import aiosmtplib

    from bench.message_bench import CAMPAIGN, LIST, ORG, SUBJECT, recipients, templates
    from mailer.content.dkim import Signer, generate_key
    from mailer.content.mailing import Mailing, load_sources
    from mailer.tokens import Signer as TokenSigner

    with tempfile.TemporaryDirectory() as tmp:
        templates(Path(tmp))
        sources = load_sources(Path(tmp), "typical.html.j2")
    mailing = Mailing(sources=sources, subject=SUBJECT, mailing_list=LIST, campaign=CAMPAIGN,
                      organisation=ORG, public_url="https://nieuws.example.be",
                      tokens=TokenSigner(b"bench-secret-key-0123456789abcdef"),
                      dkim=Signer(generate_key("ed25519"), domain="example.be",
                                  selector="s"))
    # Pre-built: 1,000 distinct signed messages, sent n times in turn (the client's cost
    # does not depend on the bytes being different; memory stays small).
    built = [mailing.message(p) for p in recipients(1000)]

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            while not queue.empty():
                m = built[queue.get_nowait() % len(built)]
                await client.sendmail(m.envelope_from, [m.recipient], m.data)
            await client.quit()
        await asyncio.gather(*(worker() for _ in range(connections)))
    asyncio.run(main())


# -- A: the engine ----------------------------------------------------------------------------

def add_people(folder: Path, n: int, env: dict[str, str]) -> None:
    """Sync the project's lists and import n confirmed members of nieuwsbrief."""
    mailer = [sys.executable, "-m", "mailer"]
    run = {"cwd": folder, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "lists", "sync"], **run)
    csv = folder / "people.csv"
    with csv.open("w") as fh:
        fh.write("email,first_name,last_name,language,city,since\n")
        for i in range(n):
            fh.write(f"person.{i}@example.be,Naam{i},Peeters,nl,Gent,2019\n")
    subprocess.run([*mailer, "subscribers", "import", str(csv), "--list", "nieuwsbrief",
                    "--consent", "bench", "--confirmed"], **run)


def make_project(folder: Path, n: int, port: int, algorithms: list[str],
                 db_url: str | None) -> tuple[dict[str, str], dict[str, tuple[str, Path]],
                                              dict[str, bytes]]:
    """A project of n confirmed members with a DKIM key per algorithm; returns its
    environment (without keys configured), the keys (selector -> algorithm, file) and
    their DNS records."""
    from mailer.cli import cli  # noqa: F401 - imported to fail early
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    keys = {f"bench{i}": (algorithm, folder / f"dkim{i}.pem")
            for i, algorithm in enumerate(algorithms)}
    env.update({"MAILER_DELIVERY__TRANSPORT": f"smtp://127.0.0.1:{port}?tls=none",
                "MAILER_DELIVERY__RATE": "0", "MAILER_DELIVERY__CONNECTIONS": "16",
                "MAILER_DELIVERY__MESSAGES_PER_CONNECTION": "100000"})
    if db_url:
        env["MAILER_DATABASE_URL"] = db_url
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "init", str(folder)], check=True, env=env,
                   capture_output=True)
    run = {"cwd": folder, "env": env, "check": True, "capture_output": True}
    records = {}
    for selector, (algorithm, path) in keys.items():
        made = subprocess.run([*mailer, "dkim", "keygen", "--domain", "example.be", "--selector",
                               selector, "--algorithm", algorithm, "--out", str(path),
                               "--json"], **run)
        records[selector] = json.loads(made.stdout)["value"].encode()
    add_people(folder, n, env)
    (folder / "templates" / "bench.html.j2").write_text(
        (ROOT / "templates" / "newsletter.html.j2").read_text().replace(
            "<h2>Agenda</h2>", "<h2>Agenda</h2>\n" + ("<p>Deze maand organiseren we een open "
            "dag in de nieuwe werkplaats. Kom langs met de familie: er is koffie, taart en "
            "een rondleiding. <a href=\"https://www.example.be/agenda\">Agenda</a>.</p>\n")
            * 11))
    return env, keys, records


def signing(env: dict[str, str], keys: dict[str, tuple[str, Path]],
            dkim: str) -> dict[str, str]:
    """`env` with the keys of `dkim` ("rsa+ed25519": one of each) configured."""
    chosen = [f"{selector}:{path}" for selector, (algorithm, path) in keys.items()
              if algorithm in dkim.split("+")]
    return {**env, "MAILER_SENDING__DKIM_KEYS": ",".join(chosen)}


def create_campaign(folder: Path, env: dict[str, str], name: str) -> None:
    subprocess.run([sys.executable, "-m", "mailer", "campaign", "create", name, "--list",
                    "nieuwsbrief", "--template", "templates/bench.html.j2", "--subject",
                    "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws"],
                   cwd=folder, env=env, check=True, capture_output=True)


def check_signatures(folder: Path, env: dict[str, str], records: dict[str, bytes],
                     expected: int) -> None:
    """A preview of the bench message carries one DKIM signature per key, each valid."""
    import dkim

    shown = subprocess.run([sys.executable, "-m", "mailer", "preview", "--template",
                            "templates/bench.html.j2", "--out", "preview", "--json"],
                           cwd=folder, env=env, check=True, capture_output=True)
    eml = (folder / json.loads(shown.stdout)["files"]["eml"]).read_bytes()
    checker = dkim.DKIM(eml)
    if eml.split(b"\r\n\r\n")[0].count(b"DKIM-Signature:") != expected:
        raise SystemExit("the bench message does not carry one signature per key")
    for idx in range(expected):
        if not checker.verify(idx=idx, dnsfunc=lambda name, timeout=5: records[
                name.decode().split(".")[0]]):
            raise SystemExit(f"DKIM signature {idx} of the bench message does not verify")


def mark_commits(url: str, rounds: int, width: int = 16,
                 server: Callable[[], float] | None = None) -> dict[str, dict[str, float]]:
    """The status writer's transaction alone, as the sender runs it (Outbox.apply: mark
    `width` deliveries "sending", record the previous round's results), `rounds` times
    at each level, in blocks of 50 that alternate FULL, NORMAL, NORMAL, FULL: wall and
    CPU milliseconds per commit, on the project's own database (SQLite: its file, on a
    real disk; PostgreSQL: one level, its marks commit with synchronous_commit on, and
    `server` tells the server's CPU seconds so far)."""
    import mailer.db
    from mailer.db import make_engine
    from mailer.dbtypes import placeholder
    from mailer.delivery.outbox import Outbox, Result
    from mailer.delivery.transports import Outcome

    engine = make_engine(url)
    q = placeholder(engine.dialect)
    with engine.begin() as conn:
        campaign, = conn.exec_driver_sql("SELECT min(campaign_id) FROM delivery").one()
        ids = [r[0] for r in conn.exec_driver_sql(
            f"SELECT id FROM delivery WHERE campaign_id = {q} ORDER BY id LIMIT {q}",
            (campaign, rounds * width * 2))]
        conn.exec_driver_sql(f"UPDATE delivery SET state = 'queued' WHERE id IN "
                             f"({', '.join(map(str, ids))})")
    outbox = Outbox(engine, campaign, b"k" * 32, max_attempts=3, retry_after=60)
    outbox.hold_connection()  # as the sender's status writer does
    sqlite = engine.dialect.name == "sqlite"
    taken: dict[str, list[tuple[float, float]]] = \
        {"FULL": [], "NORMAL": []} if sqlite else {"on": []}
    batches = [ids[i:i + width] for i in range(0, len(ids), width)]
    block = 50
    order = ["FULL", "NORMAL", "NORMAL", "FULL"] if sqlite else ["on"]
    used = 0.0 if sqlite or server is None else server()

    async def write() -> None:  # PostgreSQL's rounds go from an event loop, as the sender's
        previous: list[int] = []
        current = "FULL"
        for n, batch in enumerate(batches[:rounds * len(taken)]):
            level = order[(n // block) % len(order)]
            if sqlite and level != current:  # the held connection takes it as it opens
                outbox.release_connection()
                mailer.db.DURABLE = current = level
                outbox.hold_connection()
            wall, cpu = time.perf_counter(), time.process_time()
            results = [Result(i, Outcome("sent", "250 2.0.0 Ok"), 1, f"<{i}@b>")
                       for i in previous]
            if sqlite:  # on this thread: the commit alone, no thread hand-over
                outbox.apply(batch, results, [])
            else:
                await outbox.apply_async(batch, results, [])
            taken[level].append((time.perf_counter() - wall, time.process_time() - cpu))
            previous = batch
        await outbox.release_connection_async()

    asyncio.run(write())
    mailer.db.DURABLE = "FULL"
    engine.dispose()
    costs = {level: {"wall_ms": 1000 * sum(w for w, _ in t) / len(t),
                     "cpu_ms": 1000 * sum(c for _, c in t) / len(t), "commits": len(t)}
             for level, t in taken.items()}
    if not sqlite and server is not None:
        costs["on"]["server_ms"] = 1000 * (server() - used) / len(taken["on"])
    return costs


def print_mark_commits(store: str, costs: dict[str, dict[str, float]],
                       width: int = 16) -> None:
    print(f"\nthe status writer's commit alone ({width} marks + {width} results, "
          f"Outbox.apply on the project's database, {STORE_NAMES[store]}; the client's CPU):")
    setting = "synchronous" if store == "sqlite" else "synchronous_commit"
    for level, c in costs.items():
        server = f" (+{c['server_ms']:.2f} ms the server's)" if "server_ms" in c else ""
        print(f"  {setting}={level:<7}{c['wall_ms']:>8.2f} ms wall{c['cpu_ms']:>8.2f} ms CPU"
              f"{server} a commit over {c['commits']:,}: at most "
              f"{width * 1000 / c['wall_ms']:,.0f} marks/s from one writer")
    if "FULL" in costs:
        print(f"  FULL / NORMAL: {costs['FULL']['wall_ms'] / costs['NORMAL']['wall_ms']:.1f}x "
              "the wall time of a commit")


# The engine with its mark commits at SQLite's synchronous=NORMAL, as before they were
# made durable: the comparison's other half (mailer/db.py, durable_begin).
NORMAL_MARKS = ("import sys, mailer.db; mailer.db.DURABLE = 'NORMAL'; "
                "from mailer.cli import main; sys.argv[0] = 'mailer'; main()")


def main() -> None:
    from bench.import_bench import server_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--dkim", default="ed25519",
                        help="the signing key(s): ed25519, rsa, rsa+ed25519 (two signatures "
                             "a message); several, comma-separated, each measured in turn")
    parser.add_argument("--marks", choices=["durable", "normal", "both", "commits"],
                        default="durable",
                        help="the mark commits: durable (the engine as it is), at SQLite's "
                             "synchronous=NORMAL, both (four sends: D N N D, then the "
                             "commits alone), or commits (only the status writer's commit, "
                             "timed at both levels: no sends)")
    parser.add_argument("--postgres", action="store_true",
                        help="the engine on PostgreSQL (the same as --stores postgresql)")
    parser.add_argument("--stores", default=None,
                        help="sqlite, postgresql or both (comma-separated): a project on "
                             "each, their sends in turn")
    parser.add_argument("--repeat", type=int, default=1,
                        help="send each store's (and code's) campaign this many times, in "
                             "turn and reversed at every other pass (2: S P P S)")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of the engine to run beside this one "
                             "(PYTHONPATH=DIR), alternating")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--rate", type=float, default=None,
                        help="pace the engine at this many messages/s (default burst) and "
                             "report the rate it achieved (default: unlimited)")
    parser.add_argument("--render-processes", type=int, default=None,
                        help="[delivery] render_processes for the engine (default: automatic)")
    parser.add_argument("--server-core", action="store_true",
                        help="PostgreSQL's server on a core of its own (the last one), "
                             "everything else (the engine on either store, the sink, the "
                             "bare client) on the others: a database server of its own, "
                             "as docs/scale-out.md recommends")
    args = parser.parse_args()
    configurations = [c.strip() for c in args.dkim.split(",") if c.strip()]
    for c in configurations:
        if c not in ("ed25519", "rsa", "rsa+ed25519"):
            parser.error(f"--dkim {c}: ed25519, rsa or rsa+ed25519")
    stores = [s.strip() for s in (args.stores or ("postgresql" if args.postgres else
                                                  "sqlite")).split(",") if s.strip()]
    if not stores or any(s not in ("sqlite", "postgresql") for s in stores):
        parser.error("--stores: sqlite, postgresql or both")
    codes: list[tuple[str, Path | None]] = [("", None)]
    if args.before is not None:
        if not (args.before / "mailer" / "__init__.py").exists():
            parser.error(f"--before {args.before}: not a checkout of the engine")
        codes.append(("before", args.before.resolve()))
    if not Path(SINK).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix (the daemon is not "
                         "needed; stop it if the install starts it)")
    n = args.recipients
    port = free_port()
    sink = start_sink(port)
    tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    pg = None
    try:
        urls: dict[str, str | None] = {"sqlite": None}
        if "postgresql" in stores:
            from tests.support.pgserver import start_postgres
            pg = start_postgres()
            urls["postgresql"] = pg.create_database("bench")
        if args.server_core:
            cores = pin_server(pg, sink)
            print(f"the database server on CPU {cores[1]}, the rest on CPU "
                  f"{', '.join(map(str, cores[0]))}", flush=True)
        order = {"durable": ["durable"], "normal": ["normal"], "commits": [],
                 "both": ["durable", "normal", "normal", "durable"]}[args.marks]
        print(f"smtp-sink on 127.0.0.1:{port}; {n:,} recipients; DKIM "
              f"{', '.join(configurations)}; marks {', '.join(order) or 'commits only'}; "
              f"{', '.join(STORE_NAMES[s] for s in stores)}"
              f"{'; beside the engine of ' + str(args.before) if args.before else ''}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        t = time.perf_counter()
        algorithms = sorted({a for c in configurations for a in c.split("+")})
        projects = {store: (tmp / f"project-{store}",
                            *make_project(tmp / f"project-{store}", n, port, algorithms,
                                          urls[store]))
                    for store in stores}
        for _, env, _, _ in projects.values():
            if args.rate:
                env["MAILER_DELIVERY__RATE"] = str(args.rate)  # the burst: its default
            if args.render_processes is not None:
                env["MAILER_DELIVERY__RENDER_PROCESSES"] = str(args.render_processes)
        variants = [(store, code) for store in stores for code in codes]
        runs: list[Run] = []
        for dkim in configurations:
            for folder, env, keys, records in projects.values():
                check_signatures(folder, signing(env, keys, dkim), records,
                                 dkim.count("+") + 1)
            for marks in order:
                for turn in range(args.repeat):
                    for store, (code, tree) in variants if turn % 2 == 0 else variants[::-1]:
                        name = f"bench-{len(runs) + 1}"
                        folder, env, _, _ = projects[store]
                        create_campaign(folder, env, name)
                        runs.append(Run(dkim, marks, store, code, tree, name))
        print(f"(setup: {len(projects)} project(s), import, {len(runs)} campaigns: "
              f"{time.perf_counter() - t:.0f} s)\n", flush=True)
        bare: dict[str, float] | None = None
        if not args.skip_bare and runs:
            bare = measure([sys.executable, __file__, "--bare-run", str(port), str(n)])
        if runs:
            print(f"{'':<56}{'msgs/s':>10}{'sending':>9}{'CPU s':>9}{'server':>8}"
                  f"{'peak RSS':>11}{'largest':>10}")
        if bare is not None:
            print_row("B bare aiosmtplib, 16 connections", n, bare)
        for run in runs:
            folder, env, keys, _ = projects[run.store]
            env = signing(env, keys, run.dkim)
            if run.tree is not None:
                env["PYTHONPATH"] = str(run.tree)
            start = [sys.executable, "-c", NORMAL_MARKS] if run.marks == "normal" \
                else [sys.executable, "-m", "mailer"]
            used = server_cpu(pg if run.store == "postgresql" else None)
            a = measure([*start, "campaign", "send", run.name, "--yes", "--json"],
                        env=env, cwd=folder)
            if run.store == "postgresql":  # the server's share, beside the engine's
                a["server_cpu"] = server_cpu(pg) - used
            report = json.loads(a["stdout"])  # type: ignore[arg-type]
            if report["sent"] != n:
                raise SystemExit(f"the engine sent {report['sent']:,} of {n:,}: {report}")
            a["rate"] = report["rate"]  # from its first message to its last
            run.measured = a
            print_row(f"A engine ({run.label})", n, a)
            if args.rate:
                print(f"paced at {args.rate:,.0f} msgs/s: the engine sent at "
                      f"{report['rate']:,.1f} msgs/s from its first message to its last "
                      f"({report['rate'] / args.rate:.1%} of the rate)")
        if runs:
            summarise(runs, n, bare)
        if args.marks in ("both", "commits"):
            for store, (folder, env, _, _) in projects.items():
                if not runs:  # deliveries to mark: a campaign started, nothing sent
                    subprocess.run([sys.executable, "-m", "mailer", "campaign", "create",
                                    "marks", "--list", "nieuwsbrief", "--template",
                                    "templates/bench.html.j2", "--subject", "Nieuws"],
                                   cwd=folder, env=env, check=True, capture_output=True)
                    subprocess.run([sys.executable, "-c", "import sys; from mailer.cli "
                                    "import main; sys.argv[0] = 'mailer'; main()", "campaign",
                                    "send", "marks", "--yes", "--max-seconds", "0.001"],
                                   cwd=folder, env=env, capture_output=True)
                url = urls[store] or f"sqlite:///{folder / 'mailer.db'}"
                print_mark_commits(store, mark_commits(
                    url, min(1000, n // 32), server=lambda: server_cpu(pg)))
        print("peak RSS: the process and its helpers together; largest: one process; "
              f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        sink.terminate()
        sink.wait()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


STORE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def pin_server(pg: Any, sink: subprocess.Popen[bytes]) -> tuple[list[int], int]:
    """`--server-core`: PostgreSQL's processes (the postmaster, whose new backends
    inherit it, and those running) on the last CPU; this process (so every command it
    starts from now on) and the sink on the others. Returns (the others, the last)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--server-core needs two CPUs or more")
    rest, last = cpus[:-1], cpus[-1]
    if pg is not None:
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        for pid in [postmaster, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, {last})
    os.sched_setaffinity(sink.pid, rest)
    os.sched_setaffinity(0, rest)
    return rest, last


@dataclass
class Run:
    """One send of the bench: its configuration, and what was measured."""
    dkim: str
    marks: str
    store: str
    code: str  # "" for this checkout, "before" for --before
    tree: Path | None
    name: str
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return (f"{self.dkim}, marks {self.marks}, {STORE_NAMES[self.store]}"
                + (f", {self.code}" if self.code else ""))


def print_row(label: str, n: int, r: dict[str, float]) -> None:
    sending = f"{r['rate']:,.0f}" if "rate" in r else ""
    server = f"{r['server_cpu']:,.1f}" if "server_cpu" in r else ""
    print(f"{label:<56}{n / r['wall']:>10,.0f}{sending:>9}{r['cpu']:>9,.1f}{server:>8}"
          f"{r['rss_mb']:>8,.0f} MB{r['max_process_mb']:>7,.0f} MB", flush=True)


def summarise(runs: list[Run], n: int, bare: dict[str, float] | None) -> None:
    """Per kind of send: the rate over all its sends (N times the sends over their summed
    wall time), and the ratios of the means: durable against NORMAL marks, PostgreSQL
    against SQLite, this code against --before; and against the bare client."""
    print()

    def mean(selected: list[Run], key: str) -> float:
        return sum(r.measured[key] for r in selected) / len(selected)

    def total(selected: list[Run]) -> float:
        """CPU seconds a send, the database server's with the engine's."""
        return mean(selected, "cpu") + (mean(selected, "server_cpu")
                                        if "server_cpu" in selected[0].measured else 0.0)

    groups: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.dkim, run.marks, run.store, run.code), []).append(run)
    for (_, _, _, _), selected in groups.items():
        wall = mean(selected, "wall")
        cpu = total(selected)
        print(f"{selected[0].label}: {n / wall:,.0f} msgs/s over {len(selected)} send(s) "
              f"({mean(selected, 'rate'):,.0f} while sending), {mean(selected, 'cpu'):,.1f} "
              f"CPU s a send, {1000 * cpu / n:.2f} ms CPU a message with the database "
              "server's" + (f"; A/B = {bare['wall'] / wall:.2f}" if bare else ""))
    # (what differs, the value measured, the value it is measured against)
    for field_index, name, value, against in ((1, "marks", "durable", "normal"),
                                              (2, "store", "postgresql", "sqlite"),
                                              (3, "code", "", "before")):
        for key, selected in groups.items():
            if key[field_index] != value:
                continue
            other_key = (*key[:field_index], against, *key[field_index + 1:])
            if other_key not in groups:
                continue
            other = groups[other_key]
            what = {"marks": "durable marks against NORMAL ones",
                    "store": "PostgreSQL against SQLite",
                    "code": "this code against --before"}[name]
            rest = [part for i, part in enumerate(
                (key[0], f"marks {key[1]}", STORE_NAMES[key[2]], key[3] or "this code"))
                if i != field_index]
            print(f"{what} ({', '.join(rest)}): {mean(other, 'wall') / mean(selected, 'wall'):.2f}x"
                  f" the rate ({mean(selected, 'rate') / mean(other, 'rate'):.2f}x while "
                  f"sending), {mean(selected, 'cpu') / mean(other, 'cpu'):.2f}x the engine's "
                  f"CPU, {total(selected) / total(other):.2f}x with the database server's")
    print("(msgs/s: N over the whole command, process start and template preparation "
          "included; sending: the engine's own rate from its first message to its last; "
          "server: the CPU seconds of PostgreSQL's processes during the send)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-run":
        bare_client(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
