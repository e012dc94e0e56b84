"""Confirmation, welcome and data-export mails ("notices"): deliveries of the outbox like
every other mail, queued with the sign-up (or the request), sent soon after.

Each (notice kind, list) is a campaign of kind "notice" (`campaign.kind`), made when its
first notice is queued, always "sending", never listed by `campaign ls` nor started or
finished by the start rules; its slug, `notice:KIND:LIST_ID`, has a colon, which no
campaign name a person gives can have (campaigns.py `_SLUG`). A notice is a `delivery`
row of that campaign, so it has the outbox's promises: marked "sending" (committed)
before its SMTP transaction, never sent twice whatever happens to the sender (after a
crash it is "unknown", as a campaign's delivery would be), deferred and retried with
the delivery backoff, checked again at send time, paced by the same rate limiter.

A sign-up writes its notice in the same transaction as the membership, so a
confirmation mail cannot be lost between the two; the web app's background sender sends
it within moments (runner.send_notices), and `mailer run` sends whatever is left before
any campaign, and between the rounds of a campaign's send (sender.py, "urgent").

One person, one row per notice campaign (the outbox's UNIQUE(campaign, subscriber)): a
notice asked for again (a second sign-up after an unsubscribe, a second export request)
puts the existing row back in the queue when its earlier mail is done with (`queue`,
`again=True`): sent, failed, bounced or skipped. A row still queued or deferred goes out
once, for both requests; one "sending" or "unknown" (in flight, or in flight when a
sender died: it may have arrived) is left as it is, so nothing can go twice. An import
with `--send-confirmation` asks nobody twice: it requeues only a confirmation that never
reached the person (failed, bounced, skipped). The row keeps only the latest mail's
state, reply and Message-ID.

The confirmation link is a CONFIRM token (subscriber, list, minute issued); it expires
after `[web] confirm_days`. An export mail (asked for on the preferences page) carries
what `mailer gdpr export` writes, made when it is sent, not when asked: the readable text
in the body, the JSON document attached. It goes to the person's own address, whatever
their lists' states and the suppression list say (they asked for it, just now); not to a
blocklisted one (the send-time rules per kind are in outbox.py, `send_check`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection

from mailer.dbtypes import Timestamp
from mailer.models import (
    Campaign,
    CampaignKind,
    CampaignState,
    Delivery,
    DeliveryState,
    NoticeKind,
    utcnow,
)

if TYPE_CHECKING:  # the sending side is imported where it is used: sign-ups import this
    from mailer.content.mailing import Mailing, Message
    from mailer.delivery.rendering import Due, Rendered
    from mailer.project import Project

__all__ = ["SUBJECTS", "TEMPLATES", "SystemRenderer", "confirm_url", "notice_campaign",
           "notice_kind", "notice_slug", "queue", "queued_since", "system_renderer"]

SUBJECTS = {NoticeKind.CONFIRM: "{{ t.confirm_subject | replace('{list}', list.name) }}",
            NoticeKind.WELCOME: "{{ t.welcome_subject | replace('{list}', list.name) }}",
            NoticeKind.EXPORT: "{{ t.export_subject | replace('{org}', org.name) }}"}
TEMPLATES = {NoticeKind.CONFIRM: "confirm.html.j2", NoticeKind.WELCOME: "welcome.html.j2",
             NoticeKind.EXPORT: "export.html.j2"}
EXPORT_FILES = {"nl": "gegevens.json", "en": "my-data.json"}
# A notice asked for again: the states from which its row is queued once more.
DONE = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.BOUNCED,
        DeliveryState.SKIPPED)
NOT_RECEIVED = (DeliveryState.FAILED, DeliveryState.BOUNCED, DeliveryState.SKIPPED)
C = Campaign.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
CHUNK = 5000


def notice_slug(kind: str, list_id: int) -> str:
    return f"notice:{kind}:{list_id}"


def notice_kind(slug: str) -> str | None:
    """The notice kind in a notice campaign's slug (confirm, welcome, export)."""
    parts = slug.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "notice" else None


def notice_campaign(conn: Connection, kind: str, list_id: int) -> int:
    """The id of the campaign of `kind` notices of a list, made the first time (by
    whoever comes first: two sign-ups at once make one)."""
    slug = notice_slug(kind, list_id)
    found = conn.execute(sa.select(C.c.id).where(C.c.slug == slug)).scalar()
    if found is not None:
        return int(found)
    now = utcnow()
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(C).values(
        slug=slug, title=kind, template=TEMPLATES[NoticeKind(kind)],
        subject=SUBJECTS[NoticeKind(kind)], list_ids=[list_id], segment=[],
        state=CampaignState.SENDING.value, kind=CampaignKind.NOTICE.value,
        started_at=now, created_at=now, updated_at=now,
    ).on_conflict_do_nothing(index_elements=["slug"]))
    return int(conn.execute(sa.select(C.c.id).where(C.c.slug == slug)).scalar_one())


def queue(conn: Connection, kind: str, list_id: int, subscriber_ids: Iterable[int], *,
          again: bool) -> tuple[list[int], list[int]]:
    """Queue a `kind` notice of the list for each person, in the caller's transaction.
    A person with a row already: with `again`, the row is queued once more when its mail
    is done with (sent, failed, bounced, skipped); without, only when it never reached
    them (failed, bounced, skipped). Returns (queued, not queued: already asked)."""
    ids = list(dict.fromkeys(subscriber_ids))
    if not ids:
        return [], []
    campaign_id = notice_campaign(conn, kind, list_id)
    now = utcnow()
    requeue_from = [s.value for s in (DONE if again else NOT_RECEIVED)]
    queued: list[int] = []
    already: list[int] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        existing = dict(conn.execute(sa.select(D.c.subscriber_id, D.c.state).where(
            D.c.campaign_id == campaign_id, D.c.subscriber_id.in_(chunk))).all())
        new = [i for i in chunk if i not in existing]
        again_ids = [i for i in chunk if existing.get(i) in requeue_from]
        if new:
            conn.execute(D.insert(), [
                {"campaign_id": campaign_id, "subscriber_id": i, "list_id": list_id,
                 "state": DeliveryState.QUEUED.value, "attempts": 0, "queued_at": now,
                 "updated_at": now} for i in new])
        if again_ids:
            conn.execute(D.update().where(
                D.c.campaign_id == campaign_id, D.c.subscriber_id.in_(again_ids),
                D.c.state.in_(requeue_from)).values(
                state=DeliveryState.QUEUED.value, attempts=0, next_attempt_at=None,
                last_reply=None, message_id=None, sent_at=None, queued_at=now,
                updated_at=now, list_id=list_id))
        queued += new + again_ids
        already += [i for i in chunk if i in existing and i not in again_ids]
    return queued, already


def queued_since(conn: Connection, kind: str, subscriber_id: int, since: datetime) -> bool:
    """Whether a `kind` notice (of any list) was queued for the person since `since`."""
    return conn.execute(sa.select(D.c.id).select_from(D.join(C, C.c.id == D.c.campaign_id))
                        .where(D.c.subscriber_id == subscriber_id,
                               C.c.kind == CampaignKind.NOTICE.value,
                               C.c.slug.like(f"notice:{kind}:%"),
                               D.c.queued_at >= sa.literal(since, Timestamp()))
                        .limit(1)).first() is not None


def confirm_url(project: Project, subscriber_id: int, list_id: int) -> str:
    from mailer.tokens import Purpose

    token = project.signer.make(Purpose.CONFIRM, subscriber_id, list_id)
    return f"{project.settings.public_url.rstrip('/')}/c/{token}"


# -- making the messages ----------------------------------------------------------------

class SystemRenderer:
    """Renders the deliveries of the engine's own campaigns (notices, sequence steps) in
    the sending process: their extras need the project (the confirmation link's token,
    the export's document read from the database), and they are few. A step's template
    is its campaign's frozen snapshot; a notice's is read from the project's files (the
    house style's, as shipped, for one the project does not have); each prepared once
    per process. The lists' sending identity is checked as a campaign's is
    (messages.check_identity: the From domain, the DKIM domain and key), and a failure
    stops the send with that line."""

    def __init__(self, project: Project) -> None:
        self._project = project
        self._mailings: dict[tuple[int, int], tuple[str | None, Mailing]] = {}
        self._lock = threading.Lock()  # one chunk at a time (in a thread)

    async def render(self, chunk: list[Due]) -> list[Rendered]:
        return await asyncio.to_thread(self._render, chunk)

    def close(self) -> None:
        return None

    def _render(self, chunk: list[Due]) -> list[Rendered]:
        from mailer.content.environment import TemplateProblem

        out: list[Rendered] = []
        with self._lock:
            for due in chunk:
                assert due.recipient is not None
                kind, mailing = self._mailing(due.campaign_id, due.list_id)
                try:
                    out.append((due, self._message(kind, mailing, due), None))
                except TemplateProblem as exc:
                    out.append((due, None, f"template: {exc}"))
        return out

    def _mailing(self, campaign_id: int, list_id: int) -> tuple[str | None, Mailing]:
        key = (campaign_id, list_id)
        if key not in self._mailings:
            from sqlmodel import Session

            from mailer.content.mailing import CampaignInfo
            from mailer.messages import check_identity, make_mailing
            from mailer.models import MailingList
            from mailer.scaffold import SHIPPED

            project = self._project
            with Session(project.engine) as session:
                campaign = session.get(Campaign, campaign_id)
                mailing_list = session.get(MailingList, list_id)
                assert campaign is not None and mailing_list is not None
                session.expunge_all()
            check_identity(project.settings, [mailing_list])
            kind = notice_kind(campaign.slug)
            if campaign.snapshot:  # a sequence step: its template as frozen at the sync
                from mailer.delivery.runner import recipe_for

                mailing = recipe_for(project, campaign).mailing_for()(list_id)
            else:
                template = campaign.template
                info = CampaignInfo(campaign_id, campaign.slug, campaign.title)
                if kind is not None:
                    # Feedback-ID and the templates see the kind, as before notices were
                    # campaigns
                    info = CampaignInfo(campaign_id, kind, kind)
                    if not (project.settings.templates_path / template).is_file():
                        # a project made before this mail existed: the house style's
                        template = str(SHIPPED / "templates" / template)
                mailing = make_mailing(project, template=template, subject=campaign.subject,
                                       mailing_list=mailing_list, campaign=info)
            self._mailings[key] = (kind, mailing)
        return self._mailings[key]

    def _message(self, kind: str | None, mailing: Mailing, due: Due) -> Message:
        assert due.recipient is not None
        if kind == NoticeKind.CONFIRM:
            return mailing.message(due.recipient, extra_urls={"confirm": confirm_url(
                self._project, due.recipient.subscriber_id, due.list_id)})
        if kind == NoticeKind.EXPORT:
            return self._export(mailing, due)
        return mailing.message(due.recipient)

    def _export(self, mailing: Mailing, due: Due) -> Message:
        """The export mail: everything held about the person as it is now, the readable
        text in the body (in the mail's language) and the JSON document attached."""
        from mailer.content.compose import Attachment
        from mailer.content.texts import LANGUAGES
        from mailer.privacy.export import export_person, render_text

        person = due.recipient
        assert person is not None
        document = export_person(self._project.engine, self._project.hash_key, person.email)
        language = person.language if person.language in LANGUAGES else mailing.list.language
        language = language if language in EXPORT_FILES else "nl"
        data = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        attachment = Attachment(EXPORT_FILES[language], "application/json", data)
        return mailing.message(
            person, values={"export": {"text": render_text(document, language),
                                       "filename": attachment.filename}},
            attachments=[attachment])


_RENDERERS: weakref.WeakKeyDictionary[Project, SystemRenderer] = weakref.WeakKeyDictionary()


def system_renderer(project: Project) -> SystemRenderer:
    """The project's renderer of notices and steps, one per process (premailer takes
    ~30 ms a template): a running web app picks up edited notice templates when it
    restarts."""
    if project not in _RENDERERS:
        _RENDERERS[project] = SystemRenderer(project)
    return _RENDERERS[project]
