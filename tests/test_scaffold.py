"""`mailer init`: a complete, private, migrated project that mails nobody real."""

from __future__ import annotations

import os
import shlex
import stat
import tomllib
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from mailer.scaffold import SHIPPED

ROOT = Path(__file__).resolve().parent.parent


def test_init_creates_a_private_migrated_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILER_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "my-news")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "my-news"
    config = tomllib.loads((folder / "mailer.toml").read_text())
    assert config["project"] == "my-news"
    assert config["database_url"] == "sqlite:///mailer.db"
    secrets = folder / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    values = tomllib.loads(secrets.read_text())
    assert len(values["secret_key"]) >= 40 and values["secret_key"] != values["hash_key"]
    assert (folder / "lists" / "nieuwsbrief.toml").is_file()
    assert (folder / "templates").is_dir()
    assert stat.S_IMODE((folder / "mailer.db").stat().st_mode) == 0o600
    assert "secrets.toml" in (folder / ".gitignore").read_text()
    # Every example address is on a reserved example domain: a new project mails nobody.
    sample = (folder / "lists" / "nieuwsbrief.example.csv").read_text(encoding="utf-8-sig")
    for line in sample.splitlines()[1:]:
        address = line.split(";")[0]
        assert "@" not in address or address.lower().split("@")[1].startswith("example.")
    monkeypatch.chdir(folder)
    assert CliRunner().invoke(cli, ["db", "status"]).exit_code == 0
    # The import init suggests is no dead end on its double opt-in list: people are asked.
    [line] = [ln for ln in result.stderr.splitlines() if "subscribers import" in ln]
    assert CliRunner().invoke(cli, ["lists", "sync"]).exit_code == 0
    imported = CliRunner().invoke(cli, shlex.split(line)[1:], catch_exceptions=False)
    assert imported.exit_code == 0, imported.stderr
    assert "confirmation mails queued" in imported.stderr
    assert "nobody has asked them" not in imported.stderr


def test_init_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "x")], catch_exceptions=False)
    assert result.exit_code == 1 and "not empty" in result.stderr
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep.txt"]


def test_the_examples_exist_once_in_the_package():
    # The wheel ships mailer/scaffold/; the repository's lists/ and templates/ (the
    # README's and `make demo`'s paths) are links to it, never a second copy that drifts.
    assert SHIPPED == ROOT / "mailer" / "scaffold"
    for name in ("lists", "templates"):
        assert (SHIPPED / name).is_dir() and not (SHIPPED / name).is_symlink()
        assert (ROOT / name).is_symlink(), f"{name}/ must be a link to mailer/scaffold/{name}"
        assert (ROOT / name).resolve() == (SHIPPED / name).resolve()


# -- the sending identity is one thing (issue 12, point 4) ----------------------------------

def _mailer(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_init_writes_the_real_identity_everywhere_it_belongs(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        monkeypatch.delenv(name)
    result = _mailer("init", str(tmp_path / "groen"), "--organisation", "Groenbuurt vzw",
                     "--domain", "groenbuurt.nl")
    assert result.exit_code == 0, result.output
    assert "Groenbuurt vzw, from nieuws@groenbuurt.nl" in result.stderr
    folder = tmp_path / "groen"
    config = tomllib.loads((folder / "mailer.toml").read_text())
    assert config["organisation"]["name"] == "Groenbuurt vzw"
    assert config["organisation"]["email"] == "info@groenbuurt.nl"
    assert config["sending"]["domain"] == "groenbuurt.nl"
    listed = tomllib.loads((folder / "lists" / "nieuwsbrief.toml").read_text())
    assert listed["from_name"] == "Groenbuurt vzw"
    assert listed["from_address"] == "nieuws@groenbuurt.nl"
    assert listed["reply_to"] == "info@groenbuurt.nl"
    assert "Groenbuurt vzw" in listed["consent_text"]
    for path in (folder / "mailer.toml", folder / "lists" / "nieuwsbrief.toml"):
        assert "Voorbeeld vzw" not in path.read_text() and "example.be" not in \
            path.read_text(), path
    # the example subscribers stay on a reserved domain: nobody real gets mail
    assert "@groenbuurt.nl" not in (folder / "lists" / "nieuwsbrief.example.csv").read_text(
        encoding="utf-8-sig")
    monkeypatch.chdir(folder)
    assert _mailer("lists", "sync").exit_code == 0
    assert _mailer("subscribers", "add", "an@example.org", "--list", "nieuwsbrief",
                   "--consent", "test", "--confirmed").exit_code == 0
    assert _mailer("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                   "templates/newsletter.html.j2", "--subject", "Nieuws").exit_code == 0
    result = _mailer("campaign", "send", "dec", "--yes")
    assert result.exit_code == 0, result.output
    (sent,) = (folder / "outbox" / "new").iterdir()
    message = BytesParser(policy=policy.default).parsebytes(sent.read_bytes())
    assert message["From"] == "Groenbuurt vzw <nieuws@groenbuurt.nl>"
    assert message["Message-ID"].endswith("@groenbuurt.nl>")
    assert "Groenbuurt vzw" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("args, said", [
    (["--domain", "groenbuurt"], "'groenbuurt' is not a domain name"),
    (["--domain", "nieuws@groenbuurt.nl"], "is not a domain name"),
    (["--organisation", 'Groen "buurt"'], "is not usable"),
])
def test_init_refuses_a_bad_identity_in_one_line_and_writes_nothing(tmp_path, args, said):
    result = _mailer("init", str(tmp_path / "x"), "--organisation", "Groenbuurt vzw",
                     "--domain", "groenbuurt.nl", *args)
    assert result.exit_code == 1 and said in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


def test_a_new_organisation_name_with_the_examples_list_is_refused_at_send(run, project,
                                                                           monkeypatch):
    assert run("subscribers", "add", "an@example.org", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/newsletter.html.j2", "--subject", "Nieuws").exit_code == 0
    monkeypatch.setenv("MAILER_ORGANISATION__NAME", "Groenbuurt vzw")
    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "still names the example's Voorbeeld vzw (from_name, consent_text) while " \
           "[organisation] name is Groenbuurt vzw" in result.output
    assert "lists/nieuwsbrief.toml" in result.output
    new = project / "outbox" / "new"
    assert not new.exists() or not any(new.iterdir())
