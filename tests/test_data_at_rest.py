"""Personal data at rest: every file the engine writes with personal data in it is 0600
and every folder it makes for one 0700, whatever the umask; `config show` never shows a
password, not even one written into a URL."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.feedback.sources import _append_mbox
from mailer.scaffold import create_project
from tests.test_delivery import TEMPLATE, create, people


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():  # noqa: ANN201
    """What most systems have: without care, new files are 0644 and folders 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def private_tree(root: Path) -> list[str]:
    """What under `root` (made by the engine) is not private: [] when all is well."""
    wrong = [] if mode(root) == 0o700 else [f"{root} {mode(root):o}"]
    for path in root.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        if mode(path) != expected:
            wrong.append(f"{path} {mode(path):o}")
    return wrong


def test_files_with_personal_data_are_readable_by_their_owner_only(run, project, tmp_path,
                                                                   monkeypatch, umask_022):
    people(run, project, 3)

    # previews, into a folder made for them (with its parents)
    preview = tmp_path / "previews" / "an"
    result = run("preview", "--template", TEMPLATE, "--subscriber", "p0@example.be",
                 "--out", str(preview))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in preview.iterdir()) == ["message.eml", "message.html",
                                                         "message.txt"]
    assert private_tree(tmp_path / "previews") == []

    # import rejects, also when an older rejects file was readable by all
    csv = project / "more.csv"
    csv.write_text("email,first_name\nnot-an-address,X\np9@example.be,Y\n")
    rejects = project / "more.rejects.csv"
    rejects.write_text("old\n")
    rejects.chmod(0o644)
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
    assert "not-an-address" in rejects.read_text() and mode(rejects) == 0o600

    # the maildir transport (the default, maildir:outbox) ...
    create(run)
    assert run("campaign", "send", "dec", "--yes").exit_code == 0
    outbox = project / "outbox"
    assert len(list((outbox / "new").iterdir())) == 4
    assert private_tree(outbox) == []

    # ... and the file transport
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"file:{tmp_path}/eml/out")
    create(run, "jan")
    assert run("campaign", "send", "jan", "--yes").exit_code == 0
    assert len(list((tmp_path / "eml" / "out").iterdir())) == 4
    assert private_tree(tmp_path / "eml") == []

    # exports
    assert run("gdpr", "export", "p0@example.be", "--out", "p0.json").exit_code == 0
    assert mode(project / "p0.json") == 0o600

    # returned mail set aside in an mbox (processed/failed), new or older and readable
    aside = tmp_path / "returns.processed"
    _append_mbox(aside, iter([b"From: x@example.be\n\nbounced\n"]))
    assert mode(aside) == 0o600
    aside.chmod(0o644)
    _append_mbox(aside, iter([b"From: y@example.be\n\nbounced\n"]))
    assert mode(aside) == 0o600


def test_config_show_masks_a_password_written_into_a_url(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "news"
    create_project(folder)
    config = folder / "mailer.toml"
    config.write_text(config.read_text().replace(
        'transport = "maildir:outbox"',
        'transport = ["smtp://mailer:relay-pw-1@relay1.example.be:587", '
        '"smtps://mailer:relay-pw-2@relay2.example.be:465"]'))
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MAILER_DATABASE_URL",
                       "postgresql+psycopg://mailer:db-pw-3%40x@db.example.be:5432/news")
    monkeypatch.setenv("MAILER_FEEDBACK__SOURCES", "imaps://bounces:box-pw-4@imap.example.be")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        for password in ("relay-pw-1", "relay-pw-2", "db-pw-3", "box-pw-4"):
            assert password not in result.output
        for masked in ("postgresql+psycopg://mailer:****@db.example.be:5432/news",
                       "smtp://mailer:****@relay1.example.be:587",
                       "smtps://mailer:****@relay2.example.be:465",
                       "imaps://bounces:****@imap.example.be"):
            assert masked in result.output
    shown = json.loads(CliRunner().invoke(cli, ["config", "show", "--json"]).stdout)
    assert shown["database_url"] == "postgresql+psycopg://mailer:****@db.example.be:5432/news"
    assert shown["delivery"]["transport"][1] == "smtps://mailer:****@relay2.example.be:465"
    # an address in a URL without a password is left as it is
    assert shown["public_url"] == "http://127.0.0.1:8080"
