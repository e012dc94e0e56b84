"""Lists as files: lists/<slug>.toml is the truth, `mailer lists sync` copies it in.

Example (lists/nieuwsbrief.toml):

    name = "Nieuwsbrief"
    description = "Ons maandelijks nieuws"
    language = "nl"
    optin = "double"
    from_name = "Voorbeeld vzw"
    from_address = "nieuws@example.be"
    reply_to = "info@example.be"
    public = true
    timezone = "Europe/Brussels"   # for send windows of sequence steps (the default)

    [[sequence]]                   # drip sequences: docs/sequences.md
    name = "welkom"
    steps = [
      { after = "0m", template = "templates/welcome.html.j2", subject = "Welkom" },
      { after = "3d", template = "templates/tips-1.md.j2", subject = "Drie tips",
        window = "09:00-17:00", weekdays = "mon-fri" },
    ]
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import func
from sqlmodel import Session, select

from mailer.audience.addresses import InvalidAddress, normalise_address
from mailer.errors import InvalidInput, NotFound
from mailer.models import (
    AuditLog,
    MailingList,
    Subscription,
    SubscriptionStatus,
    current_actor,
    utcnow,
)

__all__ = ["ListDefinition", "ListTexts", "SequenceDefinition", "StepDefinition",
           "SyncResult", "get_list", "list_counts", "load_definitions", "sync_lists"]

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ListTexts(BaseModel):
    """A list's texts in one language: `[en]` (or `[nl]`) in its file, for the pages a
    subscriber sees in the language that is not the list's (one language per page)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    consent_text: str = ""


_DURATION = re.compile(r"^(?:\d+[wdhm])+$")
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_weekdays(text: str) -> frozenset[int]:
    """"mon-fri", "sat,sun", "mon,wed-fri" -> weekday numbers (Monday 0); ValueError."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{text!r}: weekdays are mon, tue, wed, thu, fri, sat, sun, "
                             "as a range (mon-fri) or a list (mon,wed,fri)")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if b < a:
            raise ValueError(f"{text!r}: a range goes forward (mon-fri, not fri-mon)")
        days.update(range(a, b + 1))
    return frozenset(days)


class StepDefinition(BaseModel):
    """One step of a sequence: `after` the start (confirmation, or an import with
    --start-sequences), in a send window and on weekdays of the subscriber's zone."""

    model_config = ConfigDict(extra="forbid")

    after: str
    template: str
    subject: str
    id: str | None = None  # the step's identity; without one, its template path
    window: str | None = None  # "09:00-17:00"
    weekdays: str | None = None  # "mon-fri"

    @property
    def key(self) -> str:
        return self.id or self.template

    @property
    def seconds(self) -> int:
        return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhm])", self.after))

    @field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        value = value.strip().lower().replace(" ", "")
        if not _DURATION.match(value):
            raise ValueError(f"{value!r}: a time after the start is a number and a unit, "
                             'w, d, h or m: "0m", "3d", "1d12h"')
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _WINDOW.match(value.strip())
        if not found or (found[3], found[4]) <= (found[1], found[2]) \
                or (found[3] == "24" and found[4] != "00"):
            raise ValueError(f"{value!r}: a window is HH:MM-HH:MM, ending after it starts "
                             'on the same day ("09:00-17:00")')
        return value.strip()

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: str | None) -> str | None:
        if value is not None:
            parse_weekdays(value)
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n") or not value.strip():
            raise ValueError("must be one non-empty line")
        return value


class SequenceDefinition(BaseModel):
    """`[[sequence]]` in a list's file: a name and its steps, in order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    steps: list[StepDefinition]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,39}$", value):
            raise ValueError(f"{value!r}: a sequence name is lower-case letters, digits, - "
                             "or _, at most 40")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[StepDefinition]) -> list[StepDefinition]:
        if not steps:
            raise ValueError("a sequence needs at least one step")
        keys = [s.key for s in steps]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"two steps are {twice[0]!r}: give each step an id "
                             '(id = "tips-2")')
        for before, step in zip(steps, steps[1:], strict=False):
            if step.seconds <= before.seconds:
                raise ValueError(f"step {step.key!r} (after {step.after}) must come later "
                                 f"than the step before it ({before.after}): steps go in "
                                 "order of time")
        return steps


class ListDefinition(BaseModel):
    """One lists/<slug>.toml, validated."""

    model_config = ConfigDict(extra="forbid")

    slug: str
    name: str
    description: str = ""
    language: Literal["nl", "en"] = "nl"
    optin: Literal["single", "double"] = "double"
    from_name: str
    from_address: str
    reply_to: str | None = None
    public: bool = False
    # What the sign-up form asks people to agree to, and its version: both are stored
    # with their consent. Empty: the built-in text of the list's language.
    consent_text: str = ""
    consent_version: str = "1"
    nl: ListTexts | None = None  # the texts in the language that is not `language`
    en: ListTexts | None = None
    # The zone a sequence step's send window is read in, for a subscriber without a
    # `timezone` attribute of their own.
    timezone: str = "Europe/Brussels"
    sequence: list[SequenceDefinition] = []

    def stored(self) -> dict[str, object]:
        """The fields the mailing_list table keeps (the consent text lives in the file,
        the sequences in their own tables)."""
        return self.model_dump(exclude={"consent_text", "consent_version", "nl", "en",
                                        "timezone", "sequence"})

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Brussels, "
                             "Europe/Amsterdam, UTC)") from None
        return value

    def texts(self, language: str) -> ListTexts:
        """Description and consent text in `language` (empty where the file has none)."""
        if language == self.language:
            return ListTexts(description=self.description, consent_text=self.consent_text)
        return getattr(self, language, None) or ListTexts()

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_address(value)
        except InvalidAddress as exc:
            raise ValueError(f"{value!r}: {exc}") from None

    @field_validator("name", "from_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # These end up in headers (From, List-Id): a line break would inject a header.
        if any(ch in value for ch in "\r\n") or not value.strip():
            raise ValueError("must be one non-empty line")
        return value.strip()


def load_definitions(folder: Path) -> list[ListDefinition]:
    """Read every lists/*.toml; InvalidInput names the file and the problem."""
    if not folder.is_dir():
        raise NotFound(f"The lists folder {folder} does not exist.")
    out = []
    for path in sorted(folder.glob("*.toml")):
        slug = path.stem
        if not SLUG.match(slug):
            raise InvalidInput(f"{path.name}: a list file name must be lower-case letters, "
                               "digits, - or _ (it becomes the list's slug)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path.name} is not valid TOML: {exc}") from None
        try:
            out.append(ListDefinition(slug=slug, **data))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise InvalidInput(f"{path.name}: {where}: {msg}") from None
    return out


@dataclass
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    missing: list[str]  # in the database but no longer in lists/ (kept, never deleted)


FIELDS = ("name", "description", "language", "optin", "from_name", "from_address",
          "reply_to", "public")


def sync_lists(session: Session, definitions: list[ListDefinition]) -> SyncResult:
    """Create or update lists from definitions. Idempotent; never deletes a list."""
    existing = {ml.slug: ml for ml in session.exec(select(MailingList))}
    result = SyncResult([], [], [], [])
    for d in definitions:
        row = existing.pop(d.slug, None)
        if row is None:
            session.add(MailingList(**d.stored()))
            result.created.append(d.slug)
            continue
        changed = False
        for field in FIELDS:
            if getattr(row, field) != getattr(d, field):
                setattr(row, field, getattr(d, field))
                changed = True
        if changed:
            row.updated_at = utcnow()
            result.updated.append(d.slug)
        else:
            result.unchanged.append(d.slug)
    result.missing = sorted(existing)
    if result.created or result.updated:
        session.add(AuditLog(actor=current_actor(), action="lists.sync", detail={
            "created": result.created, "updated": result.updated}))
    session.flush()
    return result


def get_list(session: Session, slug: str) -> MailingList:
    row = session.exec(select(MailingList).where(MailingList.slug == slug)).first()
    if row is None:
        known = ", ".join(session.exec(select(MailingList.slug)).all()) or "none yet"
        raise NotFound(f"No list called {slug!r} (known: {known}).",
                       hint="Add lists/<slug>.toml and run `mailer lists sync`.")
    return row


def list_counts(session: Session) -> list[dict[str, object]]:
    """Every list with its number of members per status."""
    counts: dict[int, dict[str, int]] = {}
    query = select(Subscription.list_id, Subscription.status, func.count()).group_by(
        Subscription.list_id, Subscription.status)
    for list_id, status, n in session.exec(query):
        counts.setdefault(list_id, {})[status] = n
    out = []
    for ml in session.exec(select(MailingList).order_by(MailingList.slug)):
        per = counts.get(ml.id or 0, {})
        out.append({
            "slug": ml.slug, "name": ml.name, "language": ml.language, "optin": ml.optin,
            "from": f"{ml.from_name} <{ml.from_address}>", "reply_to": ml.reply_to,
            **{s.value: per.get(s.value, 0) for s in SubscriptionStatus},
        })
    return out
