"""`mailer db backup` and `mailer db restore` on both databases: a consistent copy while a
send runs, private and verified; restored into a new place (never over a live one without
--force), a send resumed from the restored copy doubles and skips nobody."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.db import make_engine, upgrade
from mailer.scaffold import create_project
from tests.test_delivery import create, people


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def delivered(outbox: Path) -> Counter[str]:
    """Recipients of the messages in a maildir outbox (its Delivered-To lines)."""
    parser = BytesHeaderParser()
    folder = outbox / "new"
    if not folder.is_dir():
        return Counter()
    return Counter(parser.parsebytes(p.read_bytes())["Delivered-To"] for p in folder.iterdir())


def delivery_states(url: str) -> dict[str, str]:
    """Each recipient's delivery state, straight from a database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql(
                "SELECT s.email, d.state FROM delivery d JOIN subscriber s "
                "ON s.id = d.subscriber_id").all())
    finally:
        engine.dispose()


@pytest.fixture
def new_place(db_url: str, request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """Where a restore may go: a new folder (SQLite) or a new, empty database."""
    made: list[str] = []

    def place(name: str = "restored") -> str:
        if db_url.startswith("sqlite"):
            return str(tmp_path / name)
        made.append(f"r_{uuid.uuid4().hex[:16]}")
        return request.getfixturevalue("pg_server").create_database(made[-1])

    yield place
    for name in made:
        request.getfixturevalue("pg_server").drop_database(name)


def test_a_backup_in_the_middle_of_a_send_resumes_with_nobody_doubled_or_skipped(
        run, project, db_url, new_place, tmp_path, monkeypatch):
    """Backed up while `campaign send` runs (some sent, some queued, a few in flight): the
    original send finishes; the backup, restored elsewhere and resumed into a fresh outbox,
    sends exactly those that were queued at the backup. Those that were in flight become
    'unknown' and are reported, not sent again; those sent are not sent again."""
    addresses = people(run, project, 40)
    create(run)
    monkeypatch.setenv("MAILER_DELIVERY__RATE", "5")  # 40 take 8 s: time to back up midway
    monkeypatch.setenv("MAILER_DELIVERY__CONNECTIONS", "4")
    sender = subprocess.Popen([sys.executable, "-m", "mailer", "campaign", "send", "dec",
                               "--yes", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while True:
        now = Counter(delivery_states(db_url).values())
        if now["sent"] >= 5 and now["queued"] >= 15:
            break
        assert sender.poll() is None, sender.communicate()
        assert time.monotonic() < deadline, f"the send did not get going: {now}"
        time.sleep(0.05)
    backup = tmp_path / "backups" / "mid-send.backup"
    result = run("db", "backup", str(backup), "--json")
    assert result.exit_code == 0, result.output
    before = delivered(project / "outbox")  # what the original outbox held by then
    taken = json.loads(result.stdout)
    assert taken["tables"]["delivery"] == 40 and taken["tables"]["subscriber"] == 40

    out, err = sender.communicate(timeout=300)
    assert sender.returncode == 0, err.decode()
    assert json.loads(out)["sent"] == 40
    original = delivered(project / "outbox")
    assert sorted(original) == sorted(addresses) and set(original.values()) == {1}

    restored = run("db", "restore", str(backup), "--to", new_place(), "--json")
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.stdout)
    assert report["up_to_date"] and report["tables"]["delivery"] == 40
    url = report["url"]  # masked, and there is no password to mask here
    at_backup = delivery_states(url)
    sent = {a for a, s in at_backup.items() if s == "sent"}
    in_flight = {a for a, s in at_backup.items() if s == "sending"}
    queued = {a for a, s in at_backup.items() if s == "queued"}
    assert sent | in_flight | queued == set(addresses), at_backup
    assert len(sent) >= 5 and queued, at_backup
    assert all(before[a] == 1 for a in sent), "marked sent in the backup, not yet delivered"
    assert report["in_flight"] == len(in_flight)
    assert in_flight, "4 connections wait for the pace with a row each marked 'sending'"

    fresh = tmp_path / "outbox-restored"
    monkeypatch.setenv("MAILER_DATABASE_URL", url)
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"maildir:{fresh}")
    monkeypatch.setenv("MAILER_DELIVERY__RATE", "500")
    resumed = run("campaign", "send", "dec", "--json")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["unknown_found"] == len(in_flight) and summary["sent"] == len(queued)
    again = delivered(fresh)
    assert set(again) == queued and set(again.values()) == {1}  # nobody doubled
    final = delivery_states(url)
    assert {a for a, s in final.items() if s == "unknown"} == in_flight  # reported
    assert {a for a, s in final.items() if s == "sent"} == sent | queued
    # nobody skipped: before the backup in the original outbox, or in the new one, or
    # 'unknown' (and listed as such)
    for address in addresses:
        assert (address in sent) + (address in again) + (address in in_flight) == 1, address
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
    assert shown["counts"].get("unknown", 0) == len(in_flight)


def test_a_backup_is_private_verified_and_says_what_it_holds(run, project, db_url, tmp_path):
    people(run, project, 3)
    old = os.umask(0o022)  # what most systems have: new files 0644, new folders 0755
    try:
        result = run("db", "backup", f"{tmp_path}/new/backups/", "--json")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    path = Path(report["file"])
    assert path.parent == tmp_path / "new" / "backups"
    assert list(path.parent.iterdir()) == [path]  # no partial file, no -wal beside it
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(tmp_path / "new") == 0o700
    assert report["tables"]["subscriber"] == 3 and report["tables"]["subscription"] == 3
    assert report["up_to_date"] and report["revision"] == report["head"]
    if db_url.startswith("sqlite"):
        assert report["checks"] == ["integrity_check", "row counts"]
        with sqlite3.connect(path) as copy:  # the copy holds the data itself
            assert copy.execute("SELECT count(*) FROM subscriber").fetchone() == (3,)
            assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    else:
        assert report["checks"] == ["pg_restore --list", "row counts"]
        assert path.read_bytes()[:5] == b"PGDMP"

    refused = run("db", "backup", str(path))
    assert refused.exit_code == 1 and "exists" in refused.output
    assert "--force" in refused.output and "Traceback" not in refused.output
    shown = run("db", "backup", str(path), "--force")
    assert shown.exit_code == 0, shown.output
    for words in ("Backed up", "readable by you alone", "Verified", "subscriber",
                  "Schema revision", "up to date"):
        assert words in shown.output
    trail = json.loads(run("audit", "ls", "--action", "db.backup", "--json").stdout)
    assert len(trail) == 2 and trail[0]["detail"]["tables"]["subscriber"] == 3
    assert str(tmp_path) not in json.dumps(trail) and "example.be" not in json.dumps(trail)


def test_a_restore_goes_somewhere_new_and_never_over_a_live_database_without_force(
        run, project, db_url, new_place, tmp_path, monkeypatch):
    people(run, project, 2)
    backup = tmp_path / "two.backup"
    assert run("db", "backup", str(backup)).exit_code == 0
    target = new_place()
    first = run("db", "restore", str(backup), "--to", target, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["tables"]["subscriber"] == 2 and report["up_to_date"]
    assert report["in_flight"] == 0
    if db_url.startswith("sqlite"):
        restored = Path(report["file"])
        assert restored == Path(target) / "mailer.db"
        assert mode(restored) == 0o600 and mode(restored.parent) == 0o700

    again = run("db", "restore", str(backup), "--to", target)
    assert again.exit_code == 1 and "--force" in again.output
    assert "Traceback" not in again.output
    live = db_url if db_url.startswith("postgresql") else str(Path(db_url[10:]).parent)
    refused = run("db", "restore", str(backup), "--to", live)  # the project's own database
    assert refused.exit_code == 1 and "live" in refused.output

    # --force replaces what is there: a subscriber added to the restored copy is gone
    url = report["url"]
    monkeypatch.setenv("MAILER_DATABASE_URL", url)
    assert run("subscribers", "add", "later@example.be", "--list", "nieuwsbrief",
               "--consent", "test").exit_code == 0
    forced = run("db", "restore", str(backup), "--to", target, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["tables"]["subscriber"] == 2
    listed = json.loads(run("subscribers", "ls", "--json").stdout)
    assert sorted(row["email"] for row in listed) == ["p0@example.be", "p1@example.be"]
    trail = json.loads(run("audit", "ls", "--action", "db.restore", "--json").stdout)
    assert trail[0]["detail"]["force"] is True and trail[0]["detail"]["rows"] > 0


def test_what_cannot_be_restored_is_said_in_one_line(run, project, db_url, tmp_path,
                                                    new_place):
    assert run("db", "backup", str(tmp_path / "b.backup")).exit_code == 0
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    cases = [(not_a_backup, new_place(), "not a mailer backup")]
    if db_url.startswith("sqlite"):
        cases.append((tmp_path / "b.backup", "postgresql://u@127.0.0.1/x",
                      "restores into a folder"))
    else:
        cases.append((tmp_path / "b.backup", str(tmp_path / "folder"),
                      "restores into an empty PostgreSQL database"))
        gone = db_url.rsplit("/", 1)[0] + "/no_such_database"
        cases.append((tmp_path / "b.backup", gone, "Create the database first"))
    for path, to, words in cases:
        result = run("db", "restore", str(path), "--to", to)
        assert result.exit_code == 1 and words in result.output, result.output
        assert "Traceback" not in result.output
        assert result.output.startswith("Error: ") and len(result.output.splitlines()) <= 2


def test_the_postgresql_password_goes_through_the_environment_never_the_command_line(
        pg_server, pg_template, tmp_path, monkeypatch):
    """pg_dump and pg_restore get the password in PGPASSWORD: a command line is visible to
    every user of the machine (ps). The test server trusts loopback, so any password
    works; what is checked is where it travels."""
    import mailer.privacy.backup as backup_module

    password = "s3cret-pw"  # noqa: S105
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name, template=pg_template)
    with_password = url.replace("postgres@", f"postgres:{password}@")
    create_project(tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    monkeypatch.setenv("MAILER_DATABASE_URL", with_password)
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def spy_run(args, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append((list(args), kwargs.get("env") or {}))
        return real_run(args, **kwargs)

    def spy_popen(args, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append((list(args), kwargs.get("env") or {}))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(backup_module.subprocess, "run", spy_run)
    monkeypatch.setattr(backup_module.subprocess, "Popen", spy_popen)
    target = f"r_{uuid.uuid4().hex[:16]}"
    empty = pg_server.create_database(target).replace("postgres@", f"postgres:{password}@")
    try:
        invoke = CliRunner().invoke
        made = invoke(cli, ["db", "backup", str(tmp_path / "db.dump")])
        assert made.exit_code == 0, made.output
        back = invoke(cli, ["db", "restore", str(tmp_path / "db.dump"), "--to", empty])
        assert back.exit_code == 0, back.output
        assert password not in made.output + back.output
        assert "postgres:****@" in back.output
    finally:
        pg_server.drop_database(name)
        pg_server.drop_database(target)
    tools = [Path(args[0]).name for args, _ in calls]
    assert {"pg_dump", "pg_restore"} <= set(tools)
    for args, env in calls:
        assert not any(password in arg for arg in args), args
        if "--dbname" in " ".join(args):
            assert env.get("PGPASSWORD") == password


def test_a_database_from_an_older_release_is_backed_up_and_restored_as_behind(
        tmp_path, monkeypatch):
    """Back up first, then upgrade: a database behind the code backs up, and its restored
    copy says it needs `mailer db upgrade`."""
    create_project(tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    database = tmp_path / "old.db"
    upgrade(make_engine(f"sqlite:///{database}"), "0001")
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{database}")
    invoke = CliRunner().invoke
    made = invoke(cli, ["db", "backup", str(tmp_path / "old.backup"), "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["revision"] == "0001"
    back = invoke(cli, ["db", "restore", str(tmp_path / "old.backup"), "--to",
                        str(tmp_path / "restored")])
    assert back.exit_code == 0, back.output
    assert "mailer db upgrade" in back.output and "0001" in back.output
