"""Shared fixtures: a project on a real SQLite file and on a real PostgreSQL server.

Every test that takes `project` (or `db_url`) runs twice: once on SQLite, once on a
PostgreSQL 15 server this setup starts (as an unprivileged user: postgres refuses root).
Both start from a database migrated once per session and copied per test (SQLite: a file
copy; PostgreSQL: CREATE DATABASE … TEMPLATE), so each test has its own clean database.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from playwright.sync_api import Browser, Page

from mailer.cli import cli
from mailer.db import make_engine, upgrade
from mailer.scaffold import create_project
from tests.support.browser import SharedBrowser
from tests.support.mailserver import MailServer, find_dovecot, start_mailserver
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
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project made by `mailer init` with its own SQLite file and no MAILER_* variables,
    as the current folder: for tests of the settings, not of the database."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    create_project(tmp_path / "news")
    monkeypatch.chdir(tmp_path / "news")
    return tmp_path / "news"


@pytest.fixture
def run(project: Path):  # noqa: ANN201
    """Run the CLI in the project: run("lists", "sync") -> click Result."""

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    run("lists", "sync")
    return run


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    """Debian's dovecot as the real IMAP and POP3 server, unprivileged on loopback ports
    (tests/support/mailserver.py); one per session, an account per test."""
    if find_dovecot() is None:
        pytest.fail("dovecot is not installed: apt-get install dovecot-imapd dovecot-pop3d "
                    "(make test does this when run as root)")
    server = start_mailserver()
    yield server
    server.stop()


# Browser tests: Debian's Chromium, headless, driven by Playwright (tests/support/browser.py).


@pytest.fixture(scope="session")
def chromium() -> Iterator[SharedBrowser]:
    """One Chromium for the whole session, started by the first test that needs it."""
    shared = SharedBrowser()
    yield shared
    shared.close()


@pytest.fixture
def browser(chromium: SharedBrowser) -> Iterator[Browser]:
    """The session's Chromium, lent to this test: between tests it is kept out of the way
    of the tests that run asyncio (see `SharedBrowser`)."""
    with chromium.lend() as lent:
        yield lent


@pytest.fixture
def page_locale() -> str:
    """The locale of `page` (navigator.language, Accept-Language); a test picks another
    with @pytest.mark.parametrize("page_locale", ["nl-BE"])."""
    return "en-US"


@pytest.fixture
def page(browser: Browser, page_locale: str) -> Iterator[Page]:
    """A page in a fresh context: no cookies or storage from other tests, and no service
    workers (a cached worker would answer instead of the server under test)."""
    context = browser.new_context(locale=page_locale, service_workers="block")
    context.set_default_timeout(10_000)  # a stuck test fails in 10 s, not Playwright's 30
    yield context.new_page()
    context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """An empty folder for this test's screenshots (see `shot`)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
