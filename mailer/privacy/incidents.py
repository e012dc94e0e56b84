"""The breach register (AVG/GDPR art. 33(5)): every personal-data breach is documented,
whether it was reported to the authority or not. Entries are made by people
(`mailer incidents add`) and by the engine when it sees what looks like one; nothing in
an entry may name a person, so a text holding an e-mail address is refused.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.errors import InvalidInput, NotFound
from mailer.models import AuditLog, Incident, utcnow

__all__ = ["IncidentText", "add_incident", "get_incident", "list_incidents"]

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
                 reported_at: datetime | None = None) -> int:
    """Record an incident; returns its number."""
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
                                       detail={"incident": number, "source": source}))
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
