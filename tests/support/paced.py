"""A sender process for the shared rate limit's tests and benchmark: it sends `--count`
small messages to an SMTP server, each after `SharedRateLimiter.acquire`, over
`--connections` connections at once, as the engine's sender does (the pace taken right
before MAIL FROM).

    python -m tests.support.paced --url postgresql+psycopg://… --port 2525 --rate 20 \\
        --count 40 --tag a

It prints "ready" once its SMTP connections are open, sends when a line comes on stdin
(so that several start together), and prints one JSON line at the end: how many it sent,
the quota that stopped it (or null) and the limiter's round trips ("claims"), their
seconds and the slots it dropped ("wasted").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiosmtplib

from mailer.db import make_engine
from mailer.delivery.ratelimit import Limits, QuotaExhausted
from mailer.delivery.sharedrate import SharedRateLimiter


async def send(args: argparse.Namespace) -> dict[str, object]:
    engine = make_engine(args.url)
    limits = Limits(rate=args.rate, burst=args.burst, hourly=args.hourly, daily=args.daily,
                    per_domain={args.slow: (args.slow_rate, args.slow_burst)}
                    if args.slow else {})
    limiter = SharedRateLimiter(limits, engine, batch=args.batch)
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=args.port, use_tls=False,
                               start_tls=False) for _ in range(args.connections)]
    for client in clients:
        await client.connect()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    numbers = iter(range(args.count))
    sent = 0
    stopped: list[str] = []

    async def worker(client: aiosmtplib.SMTP) -> None:
        nonlocal sent
        for i in numbers:
            if stopped:
                return
            domain = args.slow if args.slow and i % args.every == 0 else "example.org"
            to = f"{args.tag}-{i}@{domain}"
            try:
                await limiter.acquire(to)
            except QuotaExhausted as exc:
                stopped.append(exc.quota)
                return
            await client.sendmail(f"{args.tag}@sender.example", [to],
                                  f"Subject: {i}\r\n\r\nmessage {i} of {args.tag}\r\n")
            sent += 1

    await asyncio.gather(*(worker(c) for c in clients))
    for client in clients:
        await client.quit()
    limiter.close()
    engine.dispose()
    return {"tag": args.tag, "sent": sent, "quota": stopped[0] if stopped else None,
            "claims": limiter.claims, "claim_seconds": limiter.claim_seconds,
            "wasted": limiter.wasted, "batch": limiter.batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--burst", type=int, default=None)
    parser.add_argument("--hourly", type=int, default=None)
    parser.add_argument("--daily", type=int, default=None)
    parser.add_argument("--slow", default=None, help="a domain with a limit of its own")
    parser.add_argument("--slow-rate", type=float, default=5.0)
    parser.add_argument("--slow-burst", type=int, default=None)
    parser.add_argument("--every", type=int, default=5, help="every N-th to --slow")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(send(args))), flush=True)


if __name__ == "__main__":
    main()
