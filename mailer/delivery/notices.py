"""Confirmation, welcome and data-export mails: queued with the sign-up (or the request),
sent soon after.

A sign-up writes its `notice` row in the same transaction as the membership, so a
confirmation mail cannot be lost between the two; the web app's background sender sends
it within moments, and `mailer run` sends whatever is left (the web app was stopped, the
relay was down). They go through the project's transport and its rate limits, with the
outbox's promises: marked "sending" (committed) before the SMTP transaction, deferred and
retried with backoff, never sent twice.

The confirmation link is a CONFIRM token (subscriber, list, minute issued); it expires
after `[web] confirm_days`.

An export mail (asked for on the preferences page) carries what `mailer gdpr export`
writes, made when it is sent, not when asked: the readable text in the body, the JSON
document attached. It goes to the person's own address, whatever their lists' states
and the suppression list say (they asked for it, just now); not to a blocklisted one.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from mailer.audience.suppression import is_suppressed
from mailer.content.compose import Attachment
from mailer.content.mailing import CampaignInfo, Mailing, Message
from mailer.content.texts import LANGUAGES
from mailer.db import durable_begin
from mailer.delivery.ratelimit import QuotaExhausted, RateLimiter
from mailer.delivery.transports import Outcome, Transport
from mailer.messages import make_mailing, recipient
from mailer.models import (
    DeliveryState,
    GlobalStatus,
    MailingList,
    Notice,
    NoticeKind,
    Subscriber,
    Subscription,
    utcnow,
)
from mailer.privacy.export import export_person, render_text
from mailer.project import Project
from mailer.scaffold import SHIPPED
from mailer.tokens import Purpose

__all__ = ["NoticeReport", "confirm_url", "send_notices"]

SUBJECTS = {NoticeKind.CONFIRM: "{{ t.confirm_subject | replace('{list}', list.name) }}",
            NoticeKind.WELCOME: "{{ t.welcome_subject | replace('{list}', list.name) }}",
            NoticeKind.EXPORT: "{{ t.export_subject | replace('{org}', org.name) }}"}
TEMPLATES = {NoticeKind.CONFIRM: "confirm.html.j2", NoticeKind.WELCOME: "welcome.html.j2",
             NoticeKind.EXPORT: "export.html.j2"}
EXPORT_FILES = {"nl": "gegevens.json", "en": "my-data.json"}
MAX_ATTEMPTS = 8
RETRY_AFTER = timedelta(minutes=1)  # doubles each time
CLAIM_HOLD = timedelta(minutes=10)  # a claimed notice not sent by then is due again


@dataclass
class NoticeReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0


def confirm_url(project: Project, subscriber_id: int, list_id: int) -> str:
    token = project.signer.make(Purpose.CONFIRM, subscriber_id, list_id)
    return f"{project.settings.public_url.rstrip('/')}/c/{token}"


# Per project, the templates prepared once (premailer takes ~30 ms): a running web app
# picks up edited confirm/welcome templates when it restarts.
_MAILINGS: weakref.WeakKeyDictionary[Project, Callable[[str, MailingList], Mailing]] = (
    weakref.WeakKeyDictionary())


def _mailings(project: Project) -> Callable[[str, MailingList], Mailing]:
    cache: dict[tuple[str, int | None], Mailing] = {}

    def mailing(kind: str, mailing_list: MailingList) -> Mailing:
        key = (kind, mailing_list.id)
        if key not in cache:
            template = TEMPLATES[NoticeKind(kind)]
            if not (project.settings.templates_path / template).is_file():
                # a project made before this mail existed: the house style's, as shipped
                template = str(SHIPPED / "templates" / template)
            cache[key] = make_mailing(
                project, template=template, subject=SUBJECTS[NoticeKind(kind)],
                mailing_list=mailing_list, campaign=CampaignInfo(id=0, slug=kind, title=kind))
        return cache[key]
    return mailing


def _claim(project: Project) -> tuple[int, Message | str] | None:
    """Claim the next due notice, right before it is sent: it is marked "sending"
    (committed) only if it is still due, so two senders (the web app's workers, `mailer
    run`) never both take one. A claim holds for CLAIM_HOLD: a notice still "sending"
    after that was taken by a sender that died, and is due again (a confirmation twice
    beats none at all). Returns (id, the message or why it is skipped), or None."""
    while True:
        now = utcnow()
        due = or_(col(Notice.state) == DeliveryState.QUEUED,
                  col(Notice.state).in_([DeliveryState.DEFERRED, DeliveryState.SENDING])
                  & (col(Notice.next_attempt_at) <= now))
        with durable_begin(project.engine) as conn:  # a lost claim would mean a resend
            notice_id = conn.execute(select(Notice.id).where(due).order_by(col(Notice.id))
                                     .limit(1)).scalar()
            if notice_id is None:
                return None
            won = conn.execute(
                update(Notice).where(col(Notice.id) == notice_id, due)
                .values(state=DeliveryState.SENDING, attempts=col(Notice.attempts) + 1,
                        next_attempt_at=now + CLAIM_HOLD)).rowcount
        if won:
            return notice_id, _message(project, notice_id)


def _message(project: Project, notice_id: int) -> Message | str:
    """The notice's message, or why it must not go (checked now, at send time: the
    person may have been erased, blocklisted or suppressed, or confirmed, since)."""
    with Session(project.engine) as session:
        notice = session.get(Notice, notice_id)
        assert notice is not None
        person = session.get(Subscriber, notice.subscriber_id)
        mailing_list = session.get(MailingList, notice.list_id)
        membership = session.get(Subscription, (notice.subscriber_id, notice.list_id))
        if person is None or mailing_list is None:
            return "the person or the list is gone"
        if person.status != GlobalStatus.ACTIVE:
            return f"the subscriber is {person.status}"
        if project not in _MAILINGS:
            _MAILINGS[project] = _mailings(project)
        if notice.kind == NoticeKind.EXPORT:
            return _export(project, _MAILINGS[project](notice.kind, mailing_list), person)
        if membership is None:
            return "the person or the list is gone"
        if is_suppressed(session, project.hash_key, person.email):
            return "the address is on the suppression list"
        if notice.kind == NoticeKind.CONFIRM and membership.status == "confirmed":
            return "confirmed meanwhile"
        if notice.kind == NoticeKind.WELCOME and membership.status != "confirmed":
            return f"no longer subscribed ({membership.status})"
        extra = ({"confirm": confirm_url(project, notice.subscriber_id, notice.list_id)}
                 if notice.kind == NoticeKind.CONFIRM else None)
        return _MAILINGS[project](notice.kind, mailing_list).message(
            recipient(person), extra_urls=extra)


def _export(project: Project, mailing: Mailing, person: Subscriber) -> Message:
    """The export mail: everything held about the person as it is now, the readable
    text in the body (in the mail's language) and the JSON document attached."""
    document = export_person(project.engine, project.hash_key, person.email)
    language = person.language if person.language in LANGUAGES else mailing.list.language
    language = language if language in EXPORT_FILES else "nl"
    data = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
    attachment = Attachment(EXPORT_FILES[language], "application/json", data)
    return mailing.message(
        recipient(person),
        values={"export": {"text": render_text(document, language),
                           "filename": attachment.filename}},
        attachments=[attachment])


def _release(project: Project, notice_ids: list[int]) -> None:
    """Claimed, then not sent (a quota ran out): back in the queue as they were."""
    with Session(project.engine) as session:
        for notice_id in notice_ids:
            session.execute(update(Notice).where(
                col(Notice.id) == notice_id, col(Notice.state) == DeliveryState.SENDING)
                .values(state=DeliveryState.QUEUED, attempts=col(Notice.attempts) - 1))
        session.commit()


def _record(project: Project, notice_id: int, outcome: Outcome,
            message_id: str | None) -> str:
    with Session(project.engine) as session:
        notice = session.get(Notice, notice_id)
        assert notice is not None
        notice.last_reply = outcome.reply[:500]
        notice.message_id = message_id
        state = outcome.kind
        if state == DeliveryState.DEFERRED:
            if notice.attempts >= MAX_ATTEMPTS:
                state = DeliveryState.FAILED
            else:
                notice.next_attempt_at = utcnow() + RETRY_AFTER * 2 ** (notice.attempts - 1)
        notice.state = state
        if state != DeliveryState.DEFERRED:
            notice.next_attempt_at = None
        if state == DeliveryState.SENT:
            notice.sent_at = utcnow()
        session.add(notice)
        session.commit()
        return state


async def send_notices(project: Project, transport: Transport, limiter: RateLimiter,
                       stopped: Callable[[], bool] = lambda: False) -> NoticeReport:
    """Send every due notice, one claim at a time, until `stopped()` says so (a signal
    that stops `mailer run`: the notice in flight is finished first); returns what
    happened."""
    report = NoticeReport()
    while not stopped():  # the database work in a thread: the web app's loop serves meanwhile
        claimed = await asyncio.to_thread(_claim, project)
        if claimed is None:
            return report
        notice_id, message = claimed
        if isinstance(message, str):
            await asyncio.to_thread(_record, project, notice_id,
                                    Outcome("skipped", message), None)
            report.skipped += 1
            continue
        domain = message.recipient.rpartition("@")[2].lower()

        async def pace(domain: str = domain) -> None:
            await limiter.acquire(domain)

        try:
            outcome = await transport.send(message, before=pace)
        except QuotaExhausted:
            await asyncio.to_thread(_release, project, [notice_id])
            return report
        state = await asyncio.to_thread(_record, project, notice_id, outcome,
                                        message.message_id)
        if state == DeliveryState.SENT:
            report.sent += 1
        elif state == DeliveryState.DEFERRED:
            report.deferred += 1
        else:
            report.failed += 1
    return report
