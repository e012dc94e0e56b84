"""The breach register (AVG/GDPR art. 33(5)): every personal-data breach is documented,
whether it was reported to the authority or not. Entries are made by people
(`mailer incidents add`) and by the engine when it sees what looks like one; nothing in
an entry may name a person, so a text holding an e-mail address is refused.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.errors import InvalidInput, NotFound
from mailer.models import (
    AuditLog,
    Campaign,
    Delivery,
    DeliveryState,
    Incident,
    MailingList,
    utcnow,
)

__all__ = ["IncidentText", "add_incident", "check_campaign_lists", "exposed_export",
           "get_incident", "list_incidents", "readable_by_others"]

log = logging.getLogger("mailer.privacy")
I = Incident.__table__  # type: ignore[attr-defined]  # noqa: E741
A = AuditLog.__table__  # type: ignore[attr-defined]
_ADDRESS = re.compile(r"[^\s@<>()]+@[^\s@<>()]+\.[^\s@<>()]+")


@dataclass(frozen=True)
class IncidentText:
    title: str
    facts: str = ""
    effects: str = ""
    remedy: str = ""


def add_incident(engine: Engine, text: IncidentText, *, actor: str, source: str = "manual",
                 people: int | None = None, occurred_at: datetime | None = None,
                 reported_at: datetime | None = None,
                 ref: dict[str, Any] | None = None) -> int:
    """Record an incident; returns its number. `ref` goes into its audit entry (what the
    engine found it on: a campaign id, never a person)."""
    if not text.title.strip():
        raise InvalidInput("An incident needs a title.")
    for name, value in vars(text).items():
        if _ADDRESS.search(value):
            raise InvalidInput(f"The {name} names an e-mail address: the register must not "
                               "name a person.", hint="Describe the people by number or "
                               "group, e.g. '120 members of nieuwsbrief'.")
    if people is not None and people < 0:
        raise InvalidInput("The number of people affected cannot be negative.")
    now = utcnow()
    with engine.begin() as conn:
        number = conn.execute(I.insert().values(
            at=now, occurred_at=occurred_at, title=text.title.strip()[:200],
            facts=text.facts, effects=text.effects, remedy=text.remedy, people=people,
            reported_at=reported_at, source=source, actor=actor[:100]).returning(I.c.id)
        ).scalar_one()
        conn.execute(A.insert().values(at=now, actor=actor[:100], action="incident.add",
                                       detail={"incident": number, "source": source,
                                               **(ref or {})}))
    if source != "manual":
        log.warning("Recorded incident %s in the breach register: %s", number, text.title)
    return int(number)


def _row(row: Any) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.replace(microsecond=0).isoformat() if value else None

    return {"number": row.id, "at": iso(row.at), "occurred_at": iso(row.occurred_at),
            "title": row.title, "facts": row.facts, "effects": row.effects,
            "remedy": row.remedy, "people": row.people, "reported_at": iso(row.reported_at),
            "source": row.source, "actor": row.actor}


def list_incidents(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(sa.select(I).order_by(I.c.id.desc()))]


def get_incident(engine: Engine, number: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(I).where(I.c.id == number)).first()
    if row is None:
        raise NotFound(f"No incident {number}.", hint="See `mailer incidents ls`.")
    return _row(row)


# -- what the engine notices by itself ----------------------------------------------------------

def _already(conn: Any, kind: str, campaign_id: int) -> bool:
    """Whether the engine recorded this kind of incident for the campaign before."""
    rows = conn.execute(sa.select(A.c.detail).where(A.c.action == "incident.add"))
    return any(d.get("kind") == kind and d.get("campaign") == campaign_id
               for d in rows.scalars())


def check_campaign_lists(engine: Engine, slug: str, *, actor: str) -> str | None:
    """A campaign went to members of a list other than the ones confirmed when it started
    (the `campaign.start` entry of the audit trail): recorded in the register, once per
    campaign. Returns the warning to show, or None. Run when a campaign finishes."""
    C, D = Campaign.__table__, Delivery.__table__  # type: ignore[attr-defined]  # noqa: N806
    with engine.begin() as conn:
        campaign_id = conn.execute(sa.select(C.c.id).where(C.c.slug == slug)).scalar()
        starts = conn.execute(sa.select(A.c.detail).where(A.c.action == "campaign.start")
                              .order_by(A.c.id.desc())).scalars()
        confirmed = next((d.get("lists") for d in starts
                          if d.get("campaign") == campaign_id), None)
        if campaign_id is None or confirmed is None:
            return None
        reached = conn.execute(
            sa.select(D.c.list_id, sa.func.count(sa.distinct(D.c.subscriber_id)))
            .where(D.c.campaign_id == campaign_id,
                   D.c.state.in_([DeliveryState.SENT, DeliveryState.BOUNCED,
                                  DeliveryState.UNKNOWN]),
                   D.c.list_id.not_in(confirmed)).group_by(D.c.list_id)).all()
        if not reached or _already(conn, "campaign_lists", campaign_id):
            return None
    lists = _slugs(engine, [int(lid) for lid, _ in reached if lid is not None])
    people = sum(int(n) for _, n in reached)
    asked = ", ".join(_slugs(engine, [int(x) for x in confirmed]).values())
    other = ", ".join(lists.get(int(lid), "(a deleted list)") if lid is not None
                      else "(no list)" for lid, _ in reached)
    number = add_incident(engine, IncidentText(
        title=f"Campaign {slug} went to a list that was not confirmed",
        facts=f"Sending {slug} was confirmed for {asked}; {people:,} messages went to "
              f"members of {other}.",
        effects="People received a mail meant for another list: their address and name "
                "were used without their consent for it.",
        remedy="Find out how the deliveries got another list (`mailer campaign "
               f"deliveries {slug}`); decide whether to notify the authority (72 hours)."),
        actor=actor, source="engine", people=people,
        ref={"kind": "campaign_lists", "campaign": campaign_id})
    return (f"Campaign {slug} went to {people:,} members of {other}, not only of the "
            f"confirmed {asked}: recorded as incident {number} in the breach register "
            f"(`mailer incidents show {number}`).")


def _slugs(engine: Engine, ids: list[int]) -> dict[int, str]:
    L = MailingList.__table__  # type: ignore[attr-defined]  # noqa: N806
    with engine.connect() as conn:
        return {int(i): s for i, s in conn.execute(
            sa.select(L.c.id, L.c.slug).where(L.c.id.in_(ids)).order_by(L.c.id))}


def readable_by_others(fd_or_path: int | Path) -> int | None:
    """The mode of a regular file that others than its owner can read, else None (a
    terminal or a pipe has no such reader)."""
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o044:
        return stat.S_IMODE(st.st_mode)
    return None


def exposed_export(engine: Engine, mode: int, *, stdout: bool, actor: str) -> int:
    """An export landed in a file others can read (standard output sent to a file made
    with the umask's mode, or a file system that ignores modes): one person's data
    exposed to every user of the machine. Recorded; the caller names the file on the
    screen, the register does not (its name may hold the address)."""
    how = ("standard output, sent to a file" if stdout
           else "a file whose mode could not be set to 0600 (a file system without modes)")
    return add_incident(engine, IncidentText(
        title="An export of personal data can be read by others",
        facts=f"`mailer gdpr export` wrote one person's data to {how}, mode {mode:o}.",
        effects="The person's details, lists, consent and mail history can be read by "
                "other users of the computer until the file is removed.",
        remedy="Remove the file (or chmod 600 it), and check whether anyone read it; "
               "write exports with --out FILE, which makes them 0600."),
        actor=actor, source="engine", people=1, ref={"kind": "export_readable"})
