"""Benchmark: the delivery engine against a bare SMTP client, into Postfix's smtp-sink.

In one run, against the same `smtp-sink` on loopback:

  A  the engine: `mailer campaign send` of an N-recipient campaign, personalised and
     DKIM-signed (ed25519 by default; rsa, or both: two signatures a message), every
     delivery's state written to the database;
  B  a bare aiosmtplib client sending N pre-built messages over 16 reused connections.

Prints messages/s, CPU seconds and peak RSS of each (each runs in its own process,
measured with wait4), and the ratio A/B.

    .venv/bin/python bench/delivery_bench.py                      # 100,000, ed25519, SQLite
    .venv/bin/python bench/delivery_bench.py --recipients 1000000
    .venv/bin/python bench/delivery_bench.py --dkim rsa
    .venv/bin/python bench/delivery_bench.py --dkim rsa+ed25519     # two signatures a message
    .venv/bin/python bench/delivery_bench.py --postgres           # the engine on PostgreSQL

Needs /usr/sbin/smtp-sink (Debian package postfix; the bench starts its own sink and
does not need the postfix daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def make_project(folder: Path, n: int, port: int, dkim: str, db_url: str | None) -> dict[str, str]:
    from mailer.cli import cli  # noqa: F401 - imported to fail early
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    algorithms = dkim.split("+")  # "rsa+ed25519": a key (and a signature) each
    keys = {f"bench{i}": (algorithm, folder / f"dkim{i}.pem")
            for i, algorithm in enumerate(algorithms)}
    env.update({"MAILER_DELIVERY__TRANSPORT": f"smtp://127.0.0.1:{port}?tls=none",
                "MAILER_DELIVERY__RATE": "0", "MAILER_DELIVERY__CONNECTIONS": "16",
                "MAILER_DELIVERY__MESSAGES_PER_CONNECTION": "100000",
                "MAILER_SENDING__DKIM_KEYS": ",".join(
                    f"{selector}:{path}" for selector, (_, path) in keys.items())})
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
    subprocess.run([*mailer, "campaign", "create", "bench", "--list", "nieuwsbrief",
                    "--template", "templates/bench.html.j2", "--subject",
                    "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws"], **run)
    check_signatures(folder, run, records)
    return env


def check_signatures(folder: Path, run: dict, records: dict[str, bytes]) -> None:
    """A preview of the bench message carries one DKIM signature per key, each valid."""
    import dkim

    shown = subprocess.run([sys.executable, "-m", "mailer", "preview", "--template",
                            "templates/bench.html.j2", "--out", "preview", "--json"], **run)
    eml = (folder / json.loads(shown.stdout)["files"]["eml"]).read_bytes()
    checker = dkim.DKIM(eml)
    for idx in range(len(records)):
        if not checker.verify(idx=idx, dnsfunc=lambda name, timeout=5: records[
                name.decode().split(".")[0]]):
            raise SystemExit(f"DKIM signature {idx} of the bench message does not verify")
    if eml.split(b"\r\n\r\n")[0].count(b"DKIM-Signature:") != len(records):
        raise SystemExit("the bench message does not carry one signature per key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--dkim", choices=["ed25519", "rsa", "rsa+ed25519"], default="ed25519",
                        help="the signing key(s); rsa+ed25519: two signatures a message")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--rate", type=float, default=None,
                        help="pace the engine at this many messages/s (default burst) and "
                             "report the rate it achieved (default: unlimited)")
    parser.add_argument("--render-processes", type=int, default=None,
                        help="[delivery] render_processes for the engine (default: automatic)")
    args = parser.parse_args()
    if "--bare" in sys.argv:
        return
    if not Path(SINK).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix (the daemon is not "
                         "needed; stop it if the install starts it)")
    n = args.recipients
    port = free_port()
    sink = start_sink(port)
    tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    pg = None
    try:
        db_url = None
        if args.postgres:
            from tests.support.pgserver import start_postgres
            pg = start_postgres()
            db_url = pg.create_database("bench")
        print(f"smtp-sink on 127.0.0.1:{port}; {n:,} recipients; DKIM {args.dkim}; "
              f"{'PostgreSQL' if db_url else 'SQLite'}")
        t = time.perf_counter()
        env = make_project(tmp / "project", n, port, args.dkim, db_url)
        if args.rate:
            env["MAILER_DELIVERY__RATE"] = str(args.rate)  # the burst: its default
        if args.render_processes is not None:
            env["MAILER_DELIVERY__RENDER_PROCESSES"] = str(args.render_processes)
        print(f"(setup: project, import, campaign: {time.perf_counter() - t:.0f} s)\n")
        results = {}
        if not args.skip_bare:
            results["B"] = measure([sys.executable, __file__, "--bare-run", str(port), str(n)])
        a = measure([sys.executable, "-m", "mailer", "campaign", "send", "bench", "--yes",
                     "--json"], env=env, cwd=tmp / "project")
        report = json.loads(a["stdout"])  # type: ignore[arg-type]
        if report["sent"] != n:
            raise SystemExit(f"the engine sent {report['sent']:,} of {n:,}: {report}")
        results["A"] = a
        if args.rate:
            print(f"paced at {args.rate:,.0f} msgs/s: the engine sent at {report['rate']:,.1f} "
                  f"msgs/s from its first message to its last "
                  f"({report['rate'] / args.rate:.1%} of the rate)")
        print(f"{'':<44}{'msgs/s':>10}{'CPU s':>9}{'peak RSS':>11}{'largest':>10}")
        for key, label in (("A", f"A engine ({args.dkim}, status to "
                                  f"{'PostgreSQL' if db_url else 'SQLite'})"),
                           ("B", "B bare aiosmtplib, 16 connections")):
            if key in results:
                r = results[key]
                print(f"{label:<44}{n / r['wall']:>10,.0f}{r['cpu']:>9,.1f}"
                      f"{r['rss_mb']:>8,.0f} MB{r['max_process_mb']:>7,.0f} MB")
        if "B" in results:
            ratio = results["B"]["wall"] / results["A"]["wall"]
            print(f"\nA/B = {ratio:.2f} (target >= 0.8); engine wall {results['A']['wall']:.1f} s "
                  f"(process start and template preparation included)")
        print("peak RSS: the process and its helpers together; largest: one process")
    finally:
        sink.terminate()
        sink.wait()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-run":
        bare_client(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
