"""`mailer init`: a complete, private, migrated project that mails nobody real."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from click.testing import CliRunner

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
