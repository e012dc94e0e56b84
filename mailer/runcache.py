"""What the last full `mailer run` learnt, so that the next one with nothing due needs
neither pydantic nor SQLAlchemy (issue 17, point 5: cron starts `mailer run` every
minute, and most minutes nothing is due).

The settings are defined and checked in one place, config.load_settings, and the work a
run looks for in one place, delivery/due.py. A full run (one that loaded the settings)
writes `.mailer-run.cache` beside mailer.toml (0600) with what an idle check needs:

- the SQLite database file, and whether return sources are configured;
- the configuration fingerprint (privacy/audit.py) the audit trail should end with;
- due.py's queries, and the audit trail's last-fingerprint query, compiled for SQLite's
  driver, and the summary an idle run prints;
- a digest of everything those answers came from: the code that reads the settings and
  writes the queries, mailer.toml's path and bytes, every MAILER_* variable and HOME, the
  secrets file (path, mode and bytes) and the DKIM key files.

The next run recomputes the digest (files read, nothing parsed). When it is the same,
load_settings would give the same settings and the same errors (none), and the audit
trail the same fingerprint, so the cached answers are the answers; `idle` then asks the
database (at the schema head? the trail's last fingerprint this one? anything due?)
with the driver alone, under the run lock. Anything else (no cache, another digest,
PostgreSQL, return sources, a database behind, a changed configuration to record,
any driver error) returns None, and the run takes the full path, as before, which says
what is wrong exactly as it always did.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mailer.configfile import ENV_PREFIX, find_config

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

    from mailer.config import Settings

__all__ = ["CACHE_NAME", "idle", "remember"]

CACHE_NAME = ".mailer-run.cache"
FORMAT = 1
PACKAGE = Path(__file__).parent
# The code the cached answers come from: a change in any of it is a change of inputs.
CODE = ("__init__.py", "runcache.py", "configfile.py", "config.py", "content/compose.py",
        "privacy/audit.py", "delivery/due.py", "dbtypes.py", "clock.py")


def _read(path: Path | str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _inputs(config_path: Path, secrets_file: str, key_files: list[str],
            environ: Mapping[str, str]) -> str:
    """A digest of everything load_settings and config_fingerprint read."""
    digest = hashlib.blake2b(digest_size=24)

    def add(label: str, data: bytes | None) -> None:
        digest.update(label.encode() + (b"\1%d\0" % len(data) + data if data is not None
                                        else b"\2"))

    add("format", str(FORMAT).encode())
    for name in CODE:
        add(name, _read(PACKAGE / name))
    add("config", os.fsencode(config_path))
    add("config file", _read(config_path))
    add("environment", json.dumps(sorted(
        (k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX) or k == "HOME"
    )).encode())
    add("secrets", os.fsencode(secrets_file))
    try:
        mode = os.stat(secrets_file).st_mode
    except OSError:
        add("secrets file", None)
    else:
        add("secrets mode", str(stat.S_IMODE(mode) if stat.S_ISREG(mode) else -1).encode())
        add("secrets file", _read(secrets_file) if stat.S_ISREG(mode) else None)
    for key in key_files:
        add("key " + key, _read(key))
    return digest.hexdigest()


# -- the full path: write what was learnt ------------------------------------------------------


def remember(config: str | None, settings: Settings, dialect: Dialect) -> None:
    """Write the cache after a run loaded `settings` (so they were valid) with `dialect`.
    Best effort and exact: nothing is written when the inputs moved while it read them,
    or the folder is not writable."""
    from mailer.config import load_settings

    if (settings.config_path is None or settings.secrets_path is None
            or dialect.name != "sqlite"):  # PostgreSQL: the full path (for now)
        return
    environ = dict(os.environ)
    try:
        first = _learn(settings, dialect, environ)
        again = _learn(load_settings(config, environ=environ), dialect, environ)
    except Exception:  # noqa: BLE001 - a cache is never worth failing a run
        return
    if first != again:  # the files changed under us: the next run writes it
        return
    target = settings.config_path.parent / CACHE_NAME
    text = json.dumps(first, sort_keys=True)
    if _read(target) == text.encode():
        return
    temporary = target.with_name(f"{CACHE_NAME}.{os.getpid()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)


def _learn(settings: Settings, dialect: Dialect, environ: dict[str, str]) -> dict[str, Any]:
    from mailer.delivery.due import IDLE_SUMMARY, idle_queries
    from mailer.privacy.audit import _LAST_CONFIG, CONFIG_ACTION, config_fingerprint

    assert settings.config_path is not None and settings.secrets_path is not None
    fingerprint = config_fingerprint(settings)
    # the key files the fingerprint read (only when there is a hash key to digest them)
    keys = [str(settings.path(name.removeprefix("key:"))) for name in fingerprint
            if name.startswith("key:")]
    purged, work = idle_queries()
    database = _sqlite_file(settings.resolved_database_url)
    return {
        "format": FORMAT,
        "inputs": _inputs(settings.config_path, str(settings.secrets_path), keys, environ),
        "secrets_file": str(settings.secrets_path),
        "key_files": keys,
        "database": database,
        "returns": bool(settings.feedback.sources),
        "fingerprint": fingerprint,
        "queries": {
            "last_config": _compile(_LAST_CONFIG.params(action=CONFIG_ACTION), dialect,
                                    set()),
            "purged": _compile(purged, dialect, {"day_ago"}),
            "work": [_compile(query, dialect, {"now"}) for query in work],
        },
        "idle": IDLE_SUMMARY,
    }


def _sqlite_file(url: str) -> str | None:
    """The database file, when `url` names a plain SQLite file (make_engine's and the
    run lock's reading of it); None for anything else."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if (parsed.get_backend_name() != "sqlite" or parsed.get_driver_name() != "pysqlite"
            or parsed.query or not os.path.isabs(name) or name.startswith("file:")):
        return None
    return name


def _compile(query: Any, dialect: Dialect, given: set[str]) -> list[Any]:
    """[SQL, parameters]: each parameter its value as the driver takes it, or {"param":
    name} for one of `given`, bound when the query runs."""
    compiled = query.compile(dialect=dialect)
    state = compiled.construct_expanded_state(dict.fromkeys(given))  # IN (…) written out
    values = state.parameters
    processors = {**compiled._bind_processors, **state.processors}
    params: list[Any] = []
    for name in state.positiontup or []:
        if name in given:
            params.append({"param": name})
            continue
        value = values[name]
        if name in processors:
            value = processors[name](value)
        if not isinstance(value, str | int | float | None):
            raise TypeError(f"{name}: {value!r} is not a plain value")
        params.append(value)
    return [state.statement, params]


# -- the idle path: use it ---------------------------------------------------------------------


def idle(config: str | None) -> dict[str, Any] | None:
    """What `mailer run --json` prints when nothing is due, when the cache and the
    database say nothing is; None when they cannot tell (then the full path). Raises
    what the full path raises at the same point: ConfigError for a --config file that
    is not there, LockBusy while another run holds the lock."""
    path = find_config(config)
    if path is None:
        return None
    cache = _load(path.parent / CACHE_NAME)
    if (cache is None or cache["returns"] or not cache["database"]
            or _inputs(path, cache["secrets_file"], cache["key_files"], os.environ)
            != cache["inputs"]):
        return None
    import sqlite3

    from mailer.clock import micros, utcnow
    from mailer.db import BUSY_TIMEOUT_MS, VERSION_QUERY, at_head
    from mailer.delivery.lock import sqlite_lock

    queries = cache["queries"]

    def found(query: list[Any], **given: Any) -> Any:
        sql, params = query
        return conn.execute(sql, [given[p["param"]] if isinstance(p, dict) else p
                                  for p in params]).fetchone()

    database = cache["database"]
    try:
        conn = sqlite3.connect(f"file:{quote(database)}?mode=rw", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return None
    with closing(conn):
        try:
            if not at_head([row[0] for row in conn.execute(VERSION_QUERY)]):
                return None
            last = found(queries["last_config"])
            if last is None or (json.loads(last[0]) or {}).get("fingerprint") \
                    != cache["fingerprint"]:
                return None  # a configuration to record: the full path records it
        except (sqlite3.Error, ValueError, AttributeError):
            return None
        with sqlite_lock(database):
            now = utcnow()
            try:
                if found(queries["purged"], day_ago=micros(now - timedelta(days=1))) is None:
                    return None
                if any(found(query, now=micros(now)) for query in queries["work"]):
                    return None
            except sqlite3.Error:
                return None
    summary: dict[str, Any] = cache["idle"]
    return summary


def _load(path: Path) -> dict[str, Any] | None:
    data = _read(path)
    if data is None:
        return None
    try:
        cache = json.loads(data)
    except ValueError:
        return None
    return cache if isinstance(cache, dict) and cache.get("format") == FORMAT else None
