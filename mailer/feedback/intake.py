"""Reading the return sources: every message of every source through the processor, within
a time budget. Messages are recorded in batches, one transaction each (up to
BATCH_MESSAGES, or BATCH_SECONDS after the first): a batch is committed, then its
messages are moved or deleted; a crash in between leaves them to be read again, and
their keys, committed with their events, make that count once.

A message that cannot be read, or whose processing fails for a reason of its own, is
logged with its id and moved aside (the source's failed folder); the others go on. A
failure that is not the message's (the database is down) stops the run and leaves the
message where it is, to be read again next time: idempotent processing makes that safe.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError

from mailer.config import Feedback as FeedbackSettings
from mailer.errors import MailerError
from mailer.feedback.processing import Batch, Outcome, Processor
from mailer.feedback.reports import Unreadable

if TYPE_CHECKING:
    from mailer.feedback.sources import Incoming, Source

__all__ = ["IntakeReport", "read_sources"]

log = logging.getLogger("mailer.feedback")
BATCH_MESSAGES = 50  # messages recorded in one transaction, at most...
BATCH_SECONDS = 0.2  # ...and for at most this long (a slow IMAP server holds no lock long)


@dataclass
class IntakeReport:
    read: int = 0
    duplicates: int = 0
    aside: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    out_of_time: bool = False

    def add(self, outcome: Outcome) -> None:
        self.read += 1
        if outcome.duplicate:
            self.duplicates += 1
            return
        kind = outcome.report.kind
        if kind == "bounce":
            hard = any(r.hard for r in outcome.report.recipients)
            sender = all(r.sender_side for r in outcome.report.recipients)
            kind = "bounce (sender-side)" if sender else "bounce (hard)" if hard \
                else "bounce (soft)"
        self.kinds[kind] += 1
        for action in outcome.actions:
            self.actions[action.split(" (")[0]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "duplicates": self.duplicates, "moved_aside": self.aside,
                "kinds": dict(self.kinds), "actions": dict(self.actions),
                "problems": self.problems, "out_of_time": self.out_of_time}


def read_sources(processor: Processor, urls: list[str], settings: FeedbackSettings, *,
                 password: str | None, keep: bool = False, dry_run: bool = False,
                 max_seconds: float | None = None,
                 resolve: Callable[[str], str] = lambda url: url,
                 on_message: Callable[[], None] | None = None,
                 stop: Callable[[], bool] = lambda: False) -> IntakeReport:
    """Process every message of the sources, in order, until `stop()` (a signal that
    stops `mailer run`; what was read is committed and settled first). `resolve` turns a
    relative maildir/mbox path into the project's. Raises MailerError when a source
    cannot be opened (one line: which source, why)."""
    from mailer.feedback.sources import open_source  # imaplib, poplib: only when reading

    report = IntakeReport()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    for url in urls:
        source = open_source(resolve(url), password=password, keep=keep or dry_run,
                             after=settings.after, processed=settings.processed_folder,
                             failed=settings.failed_folder, cafile=settings.cafile or None)
        with source, processor.batch(dry_run=dry_run) as batch:
            pending: list[tuple[Incoming, Outcome]] = []  # recorded, not yet committed
            started = 0.0
            for item in source:
                if stop() or deadline is not None and time.monotonic() > deadline:
                    report.out_of_time = not stop()
                    _settle(batch, source, pending, report, on_message)
                    return report
                try:
                    outcome = batch.process(item.data, source=source.name)
                except Unreadable as exc:  # the source logs where it went
                    report.problems.append(f"{source.name} {item.id}: {exc}")
                    report.aside += 1
                    source.aside(item, str(exc))
                    continue
                except (OperationalError, MailerError):
                    raise  # not this message's fault: the batch stays, and is read next time
                except Exception as exc:  # noqa: BLE001 - one odd message must not stop the run
                    log.exception("%s: message %s could not be processed", source.name,
                                  item.id)
                    report.problems.append(f"{source.name} {item.id}: "
                                           f"{exc.__class__.__name__}: {exc}")
                    report.aside += 1
                    source.aside(item, f"{exc.__class__.__name__}: {exc}")
                    continue
                if not pending:
                    started = time.monotonic()
                pending.append((item, outcome))
                if len(pending) >= BATCH_MESSAGES or \
                        time.monotonic() - started >= BATCH_SECONDS:
                    _settle(batch, source, pending, report, on_message)
            _settle(batch, source, pending, report, on_message)
    return report


def _settle(batch: Batch, source: Source, pending: list[tuple[Incoming, Outcome]],
            report: IntakeReport, on_message: Callable[[], None] | None) -> None:
    """Commit the batch, then move or delete its messages."""
    batch.commit()
    for item, outcome in pending:
        report.add(outcome)
        source.done(item)
        if on_message is not None:
            on_message()
    pending.clear()
