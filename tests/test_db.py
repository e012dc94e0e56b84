"""Database: migrations on both backends, a database that is behind, SQLite tuning."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from alembic import command
from sqlalchemy import text

from mailer.db import _alembic_config, make_engine, schema_status, upgrade


def test_upgrade_status_and_behind_database(run, project, db_url):
    status = json.loads(run("db", "status", "--json").stdout)
    assert status["up_to_date"] is True and status["pending"] == []

    engine = make_engine(db_url)
    command.downgrade(_alembic_config(engine), "base")
    assert schema_status(engine).current is None
    engine.dispose()

    result = run("lists", "ls")
    assert result.exit_code == 1
    assert "no tables" in result.stderr and "mailer db upgrade" in result.stderr
    behind = run("db", "status", "--json")
    assert behind.exit_code == 1
    pending = json.loads(behind.stdout)["pending"]
    assert pending[0] == "0001" and pending[-1] == json.loads(behind.stdout)["head"]

    assert run("db", "upgrade").exit_code == 0
    assert run("lists", "sync").exit_code == 0
    assert "up to date" in run("db", "upgrade").stderr


def test_sqlite_is_wal_with_foreign_keys_and_busy_timeout(tmp_path: Path):
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    engine.dispose()
    # The file holds personal data: only its owner may read it.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_database_folder_is_a_clear_error(run, project, monkeypatch, tmp_path):
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{tmp_path}/nope/mailer.db")
    result = run("lists", "ls")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_postgres_and_sqlite_share_the_same_schema(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = {r[0] for r in conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type='table'"))}
        else:
            names = {r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname='public'"))}
    engine.dispose()
    assert {"mailing_list", "subscriber", "subscription", "consent_event", "suppression",
            "audit_log", "alembic_version"} <= names


def test_a_database_from_a_newer_mailer_is_one_line_for_every_command(run, project, db_url):
    """A revision this code does not ship (the database was migrated by a newer release):
    one line and the way out, never Alembic's traceback; the database is left alone."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    for args in (("lists", "ls"), ("db", "status"), ("db", "upgrade"), ("campaign", "ls")):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output and "CommandError" not in result.output
        assert "migrated by a newer mailer (revision 0999)" in result.stderr, result.output
    with make_engine(db_url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0999"
