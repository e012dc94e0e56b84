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
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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

__all__ = ["ListDefinition", "ListTexts", "SyncResult", "get_list", "list_counts",
           "load_definitions", "sync_lists"]

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ListTexts(BaseModel):
    """A list's texts in one language: `[en]` (or `[nl]`) in its file, for the pages a
    subscriber sees in the language that is not the list's (one language per page)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    consent_text: str = ""


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

    def stored(self) -> dict[str, object]:
        """The fields the mailing_list table keeps (the consent text lives in the file)."""
        return self.model_dump(exclude={"consent_text", "consent_version", "nl", "en"})

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
