"""A run of forged links: requests to /u, /p or /c whose token is not one of ours.

A few are normal: a mail client that cut a link short, a link copied by halves. Many in a
short time are someone guessing or altering tokens. The web app counts them (in this
process's memory, in one-minute buckets, per client address); when more than `[web]
forged_tokens_alert` arrive within `forged_tokens_minutes`, all clients together, the
engine records an incident in the breach register and logs a warning, once an hour at
most (also across workers: the register is asked first). The entry gives counts only:
how many requests, from how many client addresses, never an address.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.models import Incident, utcnow
from mailer.privacy.incidents import IncidentText, add_incident

__all__ = ["TITLE", "ForgedLinks", "Run", "record_run"]

TITLE = "A run of forged links against the web app"
QUIET = 3600.0  # seconds: at most one incident an hour
BUCKET = 60.0  # seconds
MAX_CLIENTS = 10_000  # client addresses remembered per bucket; more are only counted


@dataclass(frozen=True)
class Run:
    requests: int
    clients: int  # distinct client addresses (an IPv6 /64 counts once)
    most_from_one: int
    first: datetime  # when the first of them arrived (to the minute)
    minutes: int
    limit: int


class ForgedLinks:
    def __init__(self, limit: int, minutes: int, *, quiet: float = QUIET) -> None:
        self.limit = limit
        self.minutes = minutes
        self.quiet = quiet
        self._buckets: deque[tuple[float, Counter[str]]] = deque()
        self._totals: deque[int] = deque()
        self._alerted: float | None = None

    def count(self, client: str, *, now: float | None = None) -> Run | None:
        """Count one forged request from `client`; a Run when that makes more than the
        limit within the window and no run was reported in the last hour."""
        now = time.monotonic() if now is None else now
        start = now - now % BUCKET
        while self._buckets and self._buckets[0][0] <= now - self.minutes * BUCKET:
            self._buckets.popleft()
            self._totals.popleft()
        if not self._buckets or self._buckets[-1][0] != start:
            self._buckets.append((start, Counter()))
            self._totals.append(0)
        clients = self._buckets[-1][1]
        if client in clients or len(clients) < MAX_CLIENTS:
            clients[client] += 1
        self._totals[-1] += 1
        total = sum(self._totals)
        if total <= self.limit:
            return None
        if self._alerted is not None and now - self._alerted < self.quiet:
            return None
        self._alerted = now
        per_client: Counter[str] = Counter()
        for _, bucket in self._buckets:
            per_client.update(bucket)
        first = datetime.now(UTC) - timedelta(seconds=now - self._buckets[0][0])
        return Run(total, len(per_client), max(per_client.values()),
                   first.replace(second=0, microsecond=0), self.minutes, self.limit)


def record_run(engine: Engine, run: Run) -> int | None:
    """Record the run in the breach register, unless the engine recorded one within the
    hour (another worker); the incident's number, or None."""
    table = Incident.__table__  # type: ignore[attr-defined]
    since = utcnow() - timedelta(seconds=QUIET)
    with engine.connect() as conn:
        recent = conn.execute(sa.select(table.c.id).where(
            table.c.source == "engine", table.c.title == TITLE,
            table.c.at >= sa.literal(since, table.c.at.type)).limit(1)).first()
    if recent is not None:
        return None
    clients = "1 client address" if run.clients == 1 else f"{run.clients} client addresses"
    text = IncidentText(
        title=TITLE,
        facts=(f"{run.requests} requests with a forged or altered link (/u, /p or /c) "
               f"reached the web app within {run.minutes} minutes, from {clients} (at most "
               f"{run.most_from_one} from one), starting around "
               f"{run.first.strftime('%Y-%m-%d %H:%M')} UTC. The alert is set at more "
               f"than {run.limit} ([web] forged_tokens_alert)."),
        effects=("None seen: a forged link opens nobody's page, each of these requests got "
                 "the 'link not valid' page. It looks like someone guessing or altering "
                 "the tokens of links."),
        remedy=("Look up the client addresses in the proxy's log and block them there if "
                "the run goes on. If links may have leaked, rotate secret_key (old links "
                "keep working while the old key is in previous_secret_keys)."))
    return add_incident(engine, text, actor="web", source="engine",
                        occurred_at=run.first)
