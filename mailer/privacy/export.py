"""Everything held about one person (AVG/GDPR art. 15 and 20), as one JSON document with
a versioned schema (docs/privacy.md), or as readable text for a letter.

Written from the inventory (inventory.py): every table that holds a person's data is read
here, and the schema test fails when one is added without being listed there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.audience.hashing import address_hash
from mailer.delivery.notices import notice_kind
from mailer.errors import NotFound
from mailer.models import (
    Campaign,
    CampaignKind,
    ConsentEvent,
    Delivery,
    FeedbackEvent,
    MailingList,
    Sequence,
    SequenceProgress,
    Subscriber,
    Subscription,
    Suppression,
)

__all__ = ["SCHEMA", "export_person", "render_text"]

SCHEMA = "mailer.export/1"

P = Subscriber.__table__  # type: ignore[attr-defined]
S = Subscription.__table__  # type: ignore[attr-defined]
L = MailingList.__table__  # type: ignore[attr-defined]
CE = ConsentEvent.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
E = FeedbackEvent.__table__  # type: ignore[attr-defined]
X = Suppression.__table__  # type: ignore[attr-defined]
Q = Sequence.__table__  # type: ignore[attr-defined]
QP = SequenceProgress.__table__  # type: ignore[attr-defined]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).replace(microsecond=0).isoformat() if value else None


def export_person(engine: Engine, hash_key: bytes, email: str, *,
                  now: datetime | None = None) -> dict[str, Any]:
    """The export document for the subscriber with this (normalised) address."""
    with engine.connect() as conn:
        person = conn.execute(sa.select(P).where(P.c.email == email)).first()
        suppressed = conn.execute(sa.select(X.c.reason, X.c.created_at).where(
            X.c.email_hash == address_hash(hash_key, email))).first()
        if person is None:
            if suppressed is None:
                raise NotFound(f"No subscriber {email}.",
                               hint="The address is not held (nor suppressed).")
            return _document(now, None, suppressed=suppressed)
        lists = {row.id: row for row in conn.execute(sa.select(L.c.id, L.c.slug, L.c.name))}
        slug = {list_id: row.slug for list_id, row in lists.items()}
        memberships = conn.execute(sa.select(S).where(S.c.subscriber_id == person.id)
                                   .order_by(S.c.list_id)).all()
        consent = conn.execute(sa.select(CE).where(CE.c.subscriber_id == person.id)
                               .order_by(CE.c.id)).all()
        deliveries = conn.execute(
            sa.select(D, C.c.slug.label("campaign"), C.c.subject.label("subject"),
                      C.c.kind.label("kind"))
            .select_from(D.join(C, C.c.id == D.c.campaign_id))
            .where(D.c.subscriber_id == person.id).order_by(D.c.id)).all()
        feedback = conn.execute(
            sa.select(E, C.c.slug.label("campaign"))
            .select_from(E.outerjoin(C, C.c.id == E.c.campaign_id))
            .where(E.c.subscriber_id == person.id).order_by(E.c.id)).all()
        sequences = conn.execute(
            sa.select(QP, Q.c.name).select_from(QP.join(Q, Q.c.id == QP.c.sequence_id))
            .where(QP.c.subscriber_id == person.id).order_by(Q.c.name)).all()
    # confirmation, welcome and export mails are deliveries of notice campaigns
    notices = [d for d in deliveries if d.kind == CampaignKind.NOTICE]
    deliveries = [d for d in deliveries if d.kind != CampaignKind.NOTICE]
    document = _document(now, person, suppressed=suppressed)
    document["lists"] = [{
        "list": slug.get(m.list_id), "name": lists[m.list_id].name if m.list_id in lists
        else None, "status": m.status, "source": m.source, "since": _iso(m.created_at),
        "confirmed_at": _iso(m.confirmed_at), "unsubscribed_at": _iso(m.unsubscribed_at),
        "history": [{"at": _iso(e.at), "action": e.action, "source": e.source}
                    for e in consent if e.list_id == m.list_id],
    } for m in memberships]
    document["consent"] = [{
        "at": _iso(e.at), "action": e.action, "list": slug.get(e.list_id),
        "source": e.source, "consent_text": e.consent, "confirmed": e.confirmed,
        "ip": e.ip, "user_agent": e.user_agent} for e in consent]
    document["deliveries"] = [{
        "campaign": d.campaign, "subject": d.subject, "list": slug.get(d.list_id),
        "state": d.state, "queued_at": _iso(d.queued_at), "sent_at": _iso(d.sent_at),
        "attempts": d.attempts, "last_reply": d.last_reply, "message_id": d.message_id}
        for d in deliveries]
    document["notices"] = [{
        "kind": notice_kind(n.campaign), "list": slug.get(n.list_id), "state": n.state,
        "queued_at": _iso(n.queued_at), "sent_at": _iso(n.sent_at),
        "last_reply": n.last_reply} for n in notices]
    document["feedback"] = [{
        "at": _iso(e.at), "kind": e.kind, "reason": e.reason, "hard": e.hard,
        "status": e.status, "diagnostic": e.diagnostic, "campaign": e.campaign,
        "action": e.action} for e in feedback]
    document["sequences"] = [{
        "sequence": q.name, "list": slug.get(q.list_id), "started_at": _iso(q.started_at),
        "state": q.state, "next_at": _iso(q.next_at), "note": q.note} for q in sequences]
    return document


def _document(now: datetime | None, person: Any, *, suppressed: Any) -> dict[str, Any]:
    profile = None
    if person is not None:
        profile = {"email": person.email, "first_name": person.first_name,
                   "infix": person.infix, "last_name": person.last_name,
                   "language": person.language,
                   "attributes": person.attributes, "status": person.status,
                   "created_at": _iso(person.created_at),
                   "updated_at": _iso(person.updated_at)}
    return {
        "schema": SCHEMA,
        "exported_at": _iso(now or datetime.now(UTC)),
        "subscriber": profile,
        "suppressed": {"reason": suppressed.reason, "since": _iso(suppressed.created_at)}
        if suppressed else None,
        "lists": [], "consent": [], "deliveries": [], "notices": [], "feedback": [],
        "sequences": [],
    }


_TITLES = {
    "en": {"title": "What we hold about you", "profile": "Your details",
           "lists": "Your lists", "consent": "Consent given and withdrawn",
           "deliveries": "Mails sent to you",
           "notices": "Confirmation, welcome and export mails",
           "feedback": "What came back (bounces, replies, complaints)",
           "sequences": "Series of mails you are in",
           "suppressed": "Blocked from all mail", "none": "Nothing."},
    "nl": {"title": "Wat we over je bewaren", "profile": "Je gegevens",
           "lists": "Je lijsten", "consent": "Gegeven en ingetrokken toestemming",
           "deliveries": "Mails die we je stuurden",
           "notices": "Bevestigings-, welkomst- en exportmails",
           "feedback": "Wat terugkwam (bounces, antwoorden, klachten)",
           "sequences": "Reeksen mails waarin je zit",
           "suppressed": "Geblokkeerd voor alle mail", "none": "Niets."},
}


def render_text(document: dict[str, Any], language: str = "nl") -> str:
    """The export as plain text, one section per kind of data."""
    t = _TITLES.get(language, _TITLES["en"])
    lines = [t["title"], "=" * len(t["title"]), f"({document['exported_at']}, "
             f"{document['schema']})", ""]

    def section(title: str, rows: list[str]) -> None:
        lines.extend([title, "-" * len(title), *(rows or [t["none"]]), ""])

    profile = document["subscriber"] or {}
    section(t["profile"], [f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v}"
                           for k, v in profile.items() if v not in (None, {}, "")])
    section(t["lists"], [f"{m['list']} ({m['name']}): {m['status']}, {m['source']}, "
                         f"{m['since']}" for m in document["lists"]])
    section(t["consent"], [f"{e['at']} {e['action']} {e['list'] or ''} ({e['source']})"
                           + (f": \"{e['consent_text']}\"" if e["consent_text"] else "")
                           + (f" ip {e['ip']}" if e["ip"] else "")
                           for e in document["consent"]])
    section(t["deliveries"], [f"{d['sent_at'] or d['queued_at']} {d['campaign']} "
                              f"\"{d['subject']}\": {d['state']}"
                              for d in document["deliveries"]])
    section(t["notices"], [f"{n['queued_at']} {n['kind']} ({n['list']}): {n['state']}"
                           for n in document["notices"]])
    section(t["feedback"], [f"{e['at']} {e['kind']} {e['reason'] or ''} {e['action']}"
                            for e in document["feedback"]])
    section(t["sequences"], [f"{q['started_at']} {q['sequence']} ({q['list']}): {q['state']}"
                             + (f", next {q['next_at']}" if q["next_at"] else "")
                             for q in document.get("sequences", [])])
    if document["suppressed"]:
        section(t["suppressed"], [f"{document['suppressed']['since']}: "
                                  f"{document['suppressed']['reason']}"])
    return "\n".join(lines)
