"""The audit trail (art. 5(2)): who did what, when, with counts; never an address or a
name (a subscriber is named by id)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.dbtypes import utcnow
from mailer.errors import ConfigError

if TYPE_CHECKING:
    from mailer.config import Settings

__all__ = ["config_fingerprint", "list_audit", "record", "record_config_change"]

# The last configuration fingerprint, read without the models (every command that used
# the database asks, `mailer run` with nothing due included: issue 17, point 5).
_LAST_CONFIG = sa.select(sa.column("detail", sa.JSON())).select_from(
    sa.table("audit_log", sa.column("id"), sa.column("action"))).where(
    sa.column("action") == sa.bindparam("action")).order_by(
    sa.column("id").desc()).limit(1)


def _table() -> sa.Table:
    """The audit_log table (importing the models: only where an entry is listed or
    written)."""
    from mailer.models import AuditLog

    return AuditLog.__table__  # type: ignore[attr-defined,no-any-return]


def list_audit(engine: Engine, *, since: datetime | None = None, action: str | None = None,
               limit: int | None = None, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Entries newest first, streamed."""
    A = _table()  # noqa: N806 - the table, named as elsewhere
    query = sa.select(A)
    if since is not None:
        query = query.where(A.c.at >= sa.literal(since, A.c.at.type))
    if action:
        query = query.where(A.c.action.startswith(action, autoescape=True))
    with engine.connect() as conn:
        last: int | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            page = query if last is None else query.where(A.c.id < last)
            rows = conn.execute(page.order_by(A.c.id.desc()).limit(size)).all()
            if not rows:
                return
            for row in rows:
                yield {"at": row.at.replace(microsecond=0).isoformat(), "actor": row.actor,
                       "action": row.action, "detail": row.detail}
            last = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)


def record(engine: Engine, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    """One entry in its own transaction. `detail` names subscribers by id only."""
    with engine.begin() as conn:
        conn.execute(_table().insert().values(at=utcnow(), actor=actor[:100], action=action,
                                       detail=detail))


# -- configuration and key changes ------------------------------------------------------------

CONFIG_ACTION = "config.change"


def _digest(value: Any, key: bytes = b"") -> str:
    data = value if isinstance(value, bytes) else json.dumps(
        value, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.blake2b(data, key=key[:64], digest_size=12).hexdigest()


def config_fingerprint(settings: Settings) -> dict[str, str]:
    """A digest per setting of mailer.toml as the file has it (`delivery.rate`), per
    secret (`secrets.smtp_password`, from the secrets file or the environment) and per
    DKIM key file (`key:dkim/mail2026.example.be.rsa.pem`): what changed is told by name,
    never by value. Secrets and key files are digested with the hash key, so a weak
    password cannot be guessed back from the trail; the hash key itself is random."""
    prints: dict[str, str] = {}
    if settings.config_path is not None and settings.config_path.exists():
        with settings.config_path.open("rb") as fh:
            data = tomllib.load(fh)
        for name, value in data.items():
            if isinstance(value, dict):
                for key, item in value.items():
                    prints[f"{name}.{key}"] = _digest(item)
            else:
                prints[name] = _digest(value)
    secrets = settings.secrets
    hash_key = secrets.hash_key.get_secret_value().encode() if secrets.hash_key else b""
    if hash_key:
        prints["secrets.hash_key"] = _digest(hash_key)
        for name in type(secrets).model_fields:
            value = getattr(secrets, name)
            if name in ("hash_key", "sources") or not value:
                continue
            values = value if isinstance(value, list) else [value]
            prints[f"secrets.{name}"] = _digest(
                b"\0".join(v.get_secret_value().encode() for v in values), hash_key)
        try:
            keys = settings.sending.signing_keys()
        except ConfigError:
            keys = []
        for entry in keys:
            try:
                body = settings.path(entry.key).read_bytes()
            except OSError:
                body = b""  # missing: `mailer doctor` says so; here only that it changed
            prints[f"key:{entry.key}"] = _digest(body, hash_key)
    return prints


def record_config_change(engine: Engine, settings: Settings, *, actor: str,
                         command: str) -> list[str] | None:
    """Compare the configuration with the one the trail last recorded, and record a
    `config.change` entry when it differs (the first time: the configuration as found).
    Returns the names that changed, or None when nothing did. Called as a command that
    used the database ends, so an edit of mailer.toml, a rotated secret or a replaced
    key file is recorded by the first command after it."""
    prints = config_fingerprint(settings)
    with engine.begin() as conn:
        last = conn.execute(_LAST_CONFIG, {"action": CONFIG_ACTION}).scalar_one_or_none()
        before: dict[str, str] | None = last.get("fingerprint") if last else None
        if before == prints:
            return None
        detail: dict[str, Any] = {"command": command}
        changed = sorted(k for k in set(before or {}) | set(prints)
                         if (before or {}).get(k) != prints.get(k))
        if before is None:  # the configuration as found, not a change: no list of names
            detail["first"], changed = True, []
        elif before.get("secrets.hash_key") != prints.get("secrets.hash_key"):
            # the other secrets and the key files are digested with it: not comparable
            changed = ["secrets.hash_key", *(k for k in changed
                                             if not k.startswith(("secrets.", "key:")))]
        if settings.config_path is not None and settings.config_path.exists():
            detail["modified"] = datetime.fromtimestamp(
                settings.config_path.stat().st_mtime, UTC).replace(microsecond=0).isoformat()
        detail["changed"] = changed
        detail["fingerprint"] = prints
        conn.execute(_table().insert().values(at=utcnow(), actor=actor[:100],
                                              action=CONFIG_ACTION,
                                       detail=detail))
    return changed
