"""Shared fixtures: a project on a real SQLite file and on a real PostgreSQL server.

Every test that takes `project` (or `db_url`) runs twice: once on SQLite, once on a
PostgreSQL 15 server this setup starts (as an unprivileged user: postgres refuses root).
Both start from a database migrated once per session and copied per test (SQLite: a file
copy; PostgreSQL: CREATE DATABASE … TEMPLATE), so each test has its own clean database.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from mailer.db import make_engine, upgrade
from mailer.scaffold import create_project
from tests.support.pgserver import PgServer, start_postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    name = "mailer_template"
    engine = make_engine(pg_server.create_database(name))
    upgrade(engine)
    engine.dispose()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mailer.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "db" / "mailer.db"
        path.parent.mkdir()
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_template")
    name = "t_" + uuid.uuid4().hex[:16]
    yield server.create_database(name, template=template)
    server.drop_database(name)


@pytest.fixture
def project(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project made by `mailer init`, using `db_url`; the current folder is the project."""
    folder = tmp_path / "project"
    create_project(folder)
    for name in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_HASH_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILER_DATABASE_URL", db_url)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def run(project: Path):  # noqa: ANN201
    """Run the CLI in the project: run("lists", "sync") -> click Result."""

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    run("lists", "sync")
    return run
