"""Benchmark: the pace of a send with a per-domain limit, measured at the receiving server.

Issue 13's figure: with example0.com (a fifth of the recipients) limited to 5 messages/s
and the global rate at 50/s, the other domains use the rest of the rate, so the total
stays within 2 % of 50/s while both have mail to go (before the fix: 25.2/s, every
connection held by a message waiting for example0.com's turn).

A real `mailer campaign send` (its own process, as in production) into the tests' SMTP
server (tests/support/smtpserver.py, aiosmtpd on loopback, in this process), which notes
the moment each message was accepted. Recipients in outbox order: every fifth at
example0.com, the others spread over example1.com … example9.com. Reported, from the
server's times:

  total   all messages from the first to the last one to another domain (the span in
          which both have mail to go; after it only example0.com's remain, at 5/s)
  others  the other domains' messages in that span
  slow    example0.com's messages over its whole run
  burst   the most messages in any 1-second window at the server (the limit: 55)

and the sender's wall and CPU seconds (wait4: the process and its helpers) and the load
average, for a figure taken on a busy machine.

    .venv/bin/python bench/pacing_bench.py                   # 2,000 recipients, SQLite
    .venv/bin/python bench/pacing_bench.py --postgres
    .venv/bin/python bench/pacing_bench.py --recipients 5000 --rate 100 --slow-rate 10

--shared: the rate shared by several senders over PostgreSQL (issue 17, point 2;
mailer/delivery/sharedrate.py). First the cost of a claim, one round trip from one
connection: `mailer_rate_claim` taking 1 slot and taking a batch, and beside it the plain
one-statement GCRA update of one row (what the function adds: the lock, the quota buckets).
Then 1 and 3 sender processes (tests/support/paced.py: the limiter's acquire() right
before each SMTP transaction, --connections at once, as the engine's sender) sending
--seconds of the rate into the tests' SMTP server together: the rate at the server over
the span in which all of them send, from a second after the start (the burst spent), as
the least-squares slope of arrivals over time and as (n - 1) / span; the busiest second;
and for the senders together the round trips, slots per round trip, time per round trip
(as the senders waited for it) and the slots dropped unused.

    .venv/bin/python bench/pacing_bench.py --shared                  # 100/s, 10 s, default batch
    .venv/bin/python bench/pacing_bench.py --shared --batch 1 --processes 1 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SLOW = "example0.com"


def most_in_a_second(times: list[float]) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="the global rate")
    parser.add_argument("--slow-rate", type=float, default=5.0, help="example0.com's rate")
    parser.add_argument("--slow-burst", type=int, default=None,
                        help="example0.com's burst (default: the engine's default)")
    parser.add_argument("--every", type=int, default=5,
                        help="every N-th recipient is at example0.com (5: a fifth)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--shared", action="store_true",
                        help="the rate shared by sender processes over PostgreSQL")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="--shared: seconds of the rate each run sends")
    parser.add_argument("--batch", type=int, default=None,
                        help="--shared: slots a claim takes (default: the limiter's)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 3],
                        help="--shared: sender processes, one run each")
    args = parser.parse_args()
    if args.shared:
        shared(args)
        return

    from tests.support.smtpserver import SmtpServer

    mailer = [sys.executable, "-m", "mailer"]
    tmp = Path(tempfile.mkdtemp(prefix="mailer-pacing-"))
    folder = tmp / "project"
    pg = None
    with SmtpServer() as server:
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
            env.update({"MAILER_DELIVERY__TRANSPORT": f"smtp://127.0.0.1:{server.port}"
                                                      "?tls=none",
                        "MAILER_DELIVERY__RATE": str(args.rate),
                        "MAILER_DELIVERY__CONNECTIONS": str(args.connections),
                        "MAILER_DELIVERY__RETRY_AFTER": "0"})
            if args.postgres:
                from tests.support.pgserver import start_postgres
                pg = start_postgres()
                env["MAILER_DATABASE_URL"] = pg.create_database("bench")
            subprocess.run([*mailer, "init", str(folder)], check=True, env=env,
                           capture_output=True)
            config = folder / "mailer.toml"
            burst = f", {args.slow_burst}" if args.slow_burst else ""
            config.write_text(config.read_text().replace(
                "[delivery]\n", f'[delivery]\nper_domain = {{ "{SLOW}" = '
                                f'[{args.slow_rate}{burst}] }}\n'))
            run = {"cwd": folder, "env": env, "check": True, "capture_output": True}
            subprocess.run([*mailer, "lists", "sync"], **run)
            csv = folder / "people.csv"
            csv.write_text("email,first_name\n" + "".join(
                f"p{i}@example{0 if i % args.every == 0 else 1 + i % 9}.com,Naam{i}\n"
                for i in range(args.recipients)))
            subprocess.run([*mailer, "subscribers", "import", str(csv), "--list",
                            "nieuwsbrief", "--consent", "bench", "--confirmed"], **run)
            subprocess.run([*mailer, "campaign", "create", "dec", "--list", "nieuwsbrief",
                            "--template", "templates/newsletter.html.j2", "--subject",
                            "{{ subscriber.first_name | default('Beste lezer') }}, nieuws"],
                           **run)
            load = os.getloadavg()
            cpu_before = children_cpu()
            start = time.perf_counter()
            proc = subprocess.Popen([*mailer, "campaign", "send", "dec", "--yes", "--json"],
                                    cwd=folder, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            out, err = proc.communicate()
            wall = time.perf_counter() - start
            cpu = children_cpu() - cpu_before  # the sender, with its reaped helpers
        finally:
            if pg is not None:
                pg.stop()
        if proc.returncode != 0:
            raise SystemExit(f"campaign send failed:\n{err.decode(errors='replace')}")
        received = server.messages()
    report = json.loads(out)
    slow = sorted(m.at for m in received if m.recipients[0].endswith("@" + SLOW))
    others = sorted(m.at for m in received if not m.recipients[0].endswith("@" + SLOW))
    first, last_other = min(slow[0], others[0]), others[-1]
    span = [m.at for m in received if first <= m.at <= last_other]
    total = rate(span)
    print(f"{args.recipients:,} recipients, every {args.every}th at {SLOW}; rate "
          f"{args.rate:g}/s, {SLOW} {args.slow_rate:g}/s (burst {args.slow_burst or 'default'}); "
          f"{args.connections} connections; "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}; load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"sent {report['sent']:,} (server: {len(received):,}) in {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU (sender and helpers)")
    print(f"total   {total:6.2f}/s  over {last_other - first:5.1f} s "
          f"({total / args.rate:.1%} of the global rate)")
    print(f"others  {rate(others):6.2f}/s  ({len(others):,} messages)")
    during = [t for t in slow if t <= last_other]
    after = [t for t in slow if t > last_other]
    print(f"slow    {rate(slow):6.2f}/s  ({len(slow):,} messages, over its whole run: "
          f"{rate(during):.2f}/s beside the others, {rate(after):.2f}/s after them)")
    gaps = sorted(b - a for a, b in zip(during, during[1:], strict=False))
    if gaps:
        print(f"gaps    between {SLOW}'s messages beside the others: median "
              f"{gaps[len(gaps) // 2] * 1000:.0f} ms, 90th percentile "
              f"{gaps[len(gaps) * 9 // 10] * 1000:.0f} ms, longest {gaps[-1] * 1000:.0f} ms")
    whole = sorted(((b - a), a - last_other) for a, b in zip(slow, slow[1:], strict=False))
    print("longest gaps in its whole run: " + ", ".join(
        f"{g * 1000:.0f} ms at {at:+.1f} s" for g, at in whole[-4:]))
    print(f"burst   {most_in_a_second([m.at for m in received])} in the busiest second "
          f"at the server")


def fitted(times: list[float]) -> float:
    """The least-squares slope of the arrival count over time (messages a second)."""
    n = len(times)
    mean_t, mean_i = sum(times) / n, (n - 1) / 2
    return (sum((t - mean_t) * (i - mean_i) for i, t in enumerate(times))
            / sum((t - mean_t) ** 2 for t in times))


def claim_cost(url: str, batch: int, rate: float, calls: int = 1000, rounds: int = 5) -> None:
    """Microseconds per round trip, one connection, nobody else claiming: the quickest of
    `rounds` rounds of `calls`."""
    import psycopg

    from mailer.db import make_engine

    engine = make_engine(url)
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    engine.dispose()
    cparams.pop("context", None)
    with psycopg.connect(*cargs, **cparams, autocommit=True) as conn:
        statements = {
            "mailer_rate_claim, 1 slot": (
                "SELECT * FROM mailer_rate_claim(1, %s, 0, NULL, NULL, NULL, NULL, NULL, "
                "NULL, NULL)", 1),
            f"mailer_rate_claim, {batch} slots": (
                f"SELECT * FROM mailer_rate_claim({batch}, %s, 0, NULL, NULL, NULL, "
                "NULL, NULL, NULL, NULL)", batch),
            "mailer_rate_claim, 1 slot, hourly and daily quotas": (
                "SELECT * FROM mailer_rate_claim(1, %s, 0, NULL, NULL, NULL, 100000000, "
                "100000000, NULL, NULL)", 1),
            "plain GCRA UPDATE … RETURNING, 1 slot": (
                "UPDATE rate_state SET tat = greatest(tat, extract(epoch FROM "
                "clock_timestamp())) + %s WHERE key = 'rate' RETURNING tat", 1)}
        best = dict.fromkeys(statements, math.inf)
        for _ in range(rounds):  # alternated, the quickest round of each: a busy machine
            for name, (sql, _slots) in statements.items():
                for _ in range(50):  # warm: psycopg prepares after 5, plpgsql caches plans
                    conn.execute(sql, (1e-6,)).fetchone()
                start = time.perf_counter()
                for _ in range(calls):
                    conn.execute(sql, (1e-6,)).fetchone()
                best[name] = min(best[name], (time.perf_counter() - start) / calls)
        for name, (_sql, slots) in statements.items():
            each = best[name]
            print(f"  {name:52} {each * 1e6:6.0f} us a round trip, "
                  f"{each * 1e6 / slots:5.0f} us a slot ({rate / slots:,.0f} round "
                  f"trips/s at {rate:g}/s)")
        conn.execute("TRUNCATE rate_bucket")
        conn.execute("UPDATE rate_state SET tat = 0, total = 0")


def shared(args: argparse.Namespace) -> None:
    from mailer.db import make_engine, upgrade
    from mailer.delivery.runner import default_burst
    from tests.support.pgserver import start_postgres
    from tests.support.smtpserver import SmtpServer

    burst = default_burst(args.rate)
    batch = args.batch or max(1, math.ceil(args.rate * 0.05))
    print(f"shared rate {args.rate:g}/s, burst {burst}, {args.connections} connections a "
          f"sender, batch {batch}; load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores")
    pg = start_postgres()
    try:
        template = pg.create_database("bench_template")
        engine = make_engine(template)
        upgrade(engine)
        engine.dispose()
        url = pg.create_database("bench_cost", template="bench_template")
        print("claim cost (one connection, no contention):")
        claim_cost(url, batch, args.rate)
        for n, procs in enumerate(args.processes):
            url = pg.create_database(f"bench_{n}", template="bench_template")
            count = math.ceil(args.rate * args.seconds / procs)
            with SmtpServer() as server:
                reports = run_senders(url, server.port, procs, count, args, burst)
                received = server.messages()
            tags = [r["tag"] for r in reports]
            starts = [min(m.at for m in received if m.envelope_from.startswith(t + "@"))
                      for t in tags]
            ends = [max(m.at for m in received if m.envelope_from.startswith(t + "@"))
                    for t in tags]
            # from a second after the last sender's first message (the burst above the
            # rate is spent by then) to the first sender's last
            span = sorted(m.at for m in received if max(starts) + 1 <= m.at <= min(ends))
            claims = sum(r["claims"] for r in reports)
            seconds = sum(r["claim_seconds"] for r in reports)
            sent = sum(r["sent"] for r in reports)
            print(f"{procs} sender(s), {sent:,} messages (server: {len(received):,}); "
                  f"load average {os.getloadavg()[0]:.2f} after")
            print(f"  at the server, all sending: {fitted(span):7.2f}/s fitted "
                  f"({fitted(span) / args.rate - 1:+.2%}), {rate(span):7.2f}/s (n-1)/span "
                  f"({rate(span) / args.rate - 1:+.2%}) over {span[-1] - span[0]:.1f} s, "
                  f"{len(span):,} messages")
            print(f"  busiest second {most_in_a_second([m.at for m in received])} "
                  f"(burst {burst}); round trips {claims:,}: {sent / claims:.2f} slots "
                  f"each, {seconds / claims * 1e6:.0f} us each as the senders waited "
                  f"for them; slots dropped unused {sum(r['wasted'] for r in reports)}")
    finally:
        pg.stop()


def run_senders(url: str, port: int, procs: int, count: int, args: argparse.Namespace,
                burst: int | None) -> list[dict]:
    command = [sys.executable, "-m", "tests.support.paced", "--url", url, "--port",
               str(port), "--rate", str(args.rate), "--burst", str(burst), "--count",
               str(count), "--connections", str(args.connections)]
    if args.batch:
        command += ["--batch", str(args.batch)]
    children = [subprocess.Popen([*command, "--tag", f"s{i}"], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for i in range(procs)]
    for child in children:
        if child.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise SystemExit("a sender did not start")
    for child in children:
        child.stdin.write("go\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
    return [json.loads(child.communicate()[0]) for child in children]


if __name__ == "__main__":
    main()
