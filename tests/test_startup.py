"""Start-up (issue 17, point 5): `mailer --help` and `--version` import no command and none
of the heavy libraries; every command is still listed and reachable. The time itself is
measured in bench/startup_bench.py (docs/performance.md), never asserted here."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailer.cli import COMMANDS, LazyCommands, cli

# What a command may pull in, and `--help`/`--version` must not.
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "jinja2", "premailer", "aiosmtplib", "lxml",
         "rich", "pydantic", "mailer.project", "mailer.db", "mailer.models", "mailer.config")

PROBE = """
import atexit, json, sys
def loaded():
    names = [m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r}
             or m.startswith("mailer.cli.")]
    print("LOADED " + json.dumps(sorted(names)), file=sys.stderr)
atexit.register(loaded)
sys.argv = ["mailer", *{args!r}]
from mailer.cli import cli, main
if {load_all!r}:
    for name in cli.commands:
        cli.commands[name]
main()
"""


def run_mailer(args: list[str], cwd: Path, load_all: bool = False) -> tuple[str, list[str]]:
    """`mailer ARGS` in a fresh interpreter: its output, and the watched modules it loaded."""
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"} | {"COLUMNS": "80"}
    code = PROBE.format(heavy=HEAVY, args=args, load_all=load_all)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED ")][-1]
    return proc.stdout, json.loads(line.removeprefix("LOADED "))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"]])
def test_help_and_version_import_nothing_heavy(args, tmp_path):
    output, loaded = run_mailer(args, tmp_path)
    assert output
    assert loaded == []


def test_a_command_imports_its_own_module_only(tmp_path):
    """The probe sees imports: `mailer dkim --help` loads the dkim module, not the others."""
    _, loaded = run_mailer(["dkim", "--help"], tmp_path)
    commands = [m for m in loaded if m.startswith("mailer.cli.") and m.endswith("cmd")]
    assert commands == ["mailer.cli.dkimcmd"]


def test_help_lists_what_the_commands_themselves_say(tmp_path):
    """The table's lines give the same `mailer --help` as the imported commands."""
    lazy, _ = run_mailer(["--help"], tmp_path)
    loaded, _ = run_mailer(["--help"], tmp_path, load_all=True)
    assert lazy == loaded
    for name in COMMANDS:
        assert f"\n  {name} " in lazy


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_reachable_and_its_table_line_is_true(name):
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    assert command.name == name
    table = LazyCommands(COMMANDS)
    for limit in (20, 45, 63, 83, 200):
        assert table.short_help(name, limit) == command.get_short_help_str(limit)
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="mailer")
    assert result.exit_code == 0, result.output
    assert f"Usage: mailer {name}" in result.output


def test_an_unknown_command_is_one_line_with_a_suggestion():
    result = CliRunner().invoke(cli, ["campaing"], prog_name="mailer")
    assert result.exit_code == 2
    assert "No such command 'campaing'. Did you mean 'campaign'?" in result.output


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    return subprocess.run([sys.executable, "-m", "mailer", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_database_errors_are_still_one_line_without_sqlalchemy_imported_up_front(tmp_path):
    """The root recognises SQLAlchemy's errors through the modules a command loaded: an
    OperationalError as its reason alone, another SQLAlchemyError with its class."""
    from mailer.scaffold import create_project

    config = create_project(tmp_path / "news")
    (tmp_path / "news" / "mailer.db").write_bytes(b"not a database " * 1000)
    proc = run_cli(["--config", str(config), "lists", "ls"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: Database error: DatabaseError: ")
    assert "file is not a database" in proc.stderr and "Traceback" not in proc.stderr

    create_project(tmp_path / "other")  # a migrated database, then one table dropped
    (tmp_path / "news" / "mailer.db").write_bytes((tmp_path / "other" / "mailer.db").read_bytes())
    with closing(sqlite3.connect(tmp_path / "news" / "mailer.db")) as database:
        database.execute("DROP TABLE mailing_list")
        database.commit()
    proc = run_cli(["--config", str(config), "lists", "ls"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "Error: Database error: no such table: mailing_list\n"


def test_an_idle_run_imports_neither_the_sending_side_nor_alembic(tmp_path):
    """`mailer run` with nothing due (cron, most minutes) answers from a few queries
    (delivery/due.py): no templates, SMTP, HTML inlining, Alembic or rich; its --json is
    the empty RunSummary that run_due would give."""
    from dataclasses import fields

    from mailer.delivery.due import IDLE_SUMMARY
    from mailer.delivery.runner import RunSummary
    from mailer.scaffold import create_project

    config = str(create_project(tmp_path / "news"))
    first, loaded = run_mailer(["--config", config, "run", "--json"], tmp_path)
    assert "aiosmtplib" in loaded  # the first run is not idle: the daily purge is due
    assert json.loads(first)["purged"] != {}
    output, loaded = run_mailer(["--config", config, "run", "--json"], tmp_path)
    assert json.loads(output) == IDLE_SUMMARY
    assert list(IDLE_SUMMARY) == [f.name for f in fields(RunSummary)]
    assert not {"jinja2", "aiosmtplib", "premailer", "lxml", "alembic", "rich", "sqlmodel",
                "mailer.models"} & set(loaded)
    assert "mailer.cli.campaigncmd" not in loaded
    lines, _ = run_mailer(["--config", config, "run"], tmp_path)
    assert lines == ""  # "Nothing to do." goes to stderr, as a run with work does


def test_a_scripted_send_imports_no_progress_bar(tmp_path):
    """`campaign send --yes --json` (cron, scripts) draws no bar: rich is not imported;
    the send itself is whole (the default transport: the project's maildir)."""
    from mailer.scaffold import create_project

    config = str(create_project(tmp_path / "news"))
    (tmp_path / "people.csv").write_text("email,first_name\nan@example.be,An\n"
                                         "bo@example.be,Bo\n")
    for args in (["lists", "sync"],
                 ["subscribers", "import", str(tmp_path / "people.csv"), "--list",
                  "nieuwsbrief", "--consent", "test", "--confirmed"],
                 ["campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                  "templates/newsletter.html.j2", "--subject", "Ons nieuws"]):
        result = CliRunner().invoke(cli, ["--config", config, *args], prog_name="mailer")
        assert result.exit_code == 0, result.output
    output, loaded = run_mailer(["--config", config, "campaign", "send", "dec", "--yes",
                                 "--json"], tmp_path)
    assert json.loads(output)["sent"] == 2
    assert "rich" not in loaded
    assert "mailer.cli.campaigncmd" in loaded


def test_the_schema_check_finds_the_head_without_alembic_as_alembic_does():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mailer.db import MIGRATIONS, _shipped_head

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert _shipped_head() == ScriptDirectory.from_config(config).get_current_head()


# -- an idle `mailer run` from the run cache (mailer/runcache.py) ------------------------------


def idle_project(tmp_path: Path) -> tuple[str, Path]:
    """A project after its first run (the purge done, the cache written): idle."""
    from mailer.scaffold import create_project

    config = create_project(tmp_path / "news")
    run_mailer(["--config", str(config), "run"], tmp_path)
    return str(config), tmp_path / "news" / "mailer.db"


def test_an_idle_run_answers_from_the_cache_without_sqlalchemy_or_pydantic(tmp_path):
    from mailer.delivery.due import IDLE_SUMMARY
    from mailer.runcache import CACHE_NAME

    config, _ = idle_project(tmp_path)
    cache = tmp_path / "news" / CACHE_NAME
    assert cache.stat().st_mode & 0o777 == 0o600  # it names the database file
    output, loaded = run_mailer(["--config", config, "run", "--json"], tmp_path)
    assert json.loads(output) == IDLE_SUMMARY
    assert not {"sqlalchemy", "pydantic", "mailer.config", "mailer.project"} & set(loaded)
    _, loaded = run_mailer(["--config", config, "run", "--quiet"], tmp_path)
    assert "sqlalchemy" not in loaded

    cache.write_text("{")  # unreadable: the full path, which writes it again
    _, loaded = run_mailer(["--config", config, "run"], tmp_path)
    assert "sqlalchemy" in loaded
    assert json.loads(cache.read_text())["database"] == str(tmp_path / "news" / "mailer.db")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_after_an_edit_an_idle_run_says_what_load_settings_says(tmp_path):
    """The cache is trusted only for the inputs it was written from: a wrong setting in
    mailer.toml or the environment, a secrets file others can read, a database behind
    are the same one-line errors as without it."""
    config, database = idle_project(tmp_path)
    toml = Path(config)
    edit(toml, "[delivery]", "[delivery]\nspeed = 3")
    proc = run_cli(["--config", config, "run"], tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "Error: Unknown setting 'delivery.speed' "
                                                 "in mailer.toml\n")
    edit(toml, "[delivery]\nspeed = 3", "[delivery]")

    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "mailer", "--config", config, "run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=env | {"MAILER_DELIVERY__RATE": "fast"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: Setting 'delivery.rate' in the environment "
                                  "variable MAILER_DELIVERY__RATE: ")

    secrets = toml.parent / "secrets.toml"
    secrets.chmod(0o644)
    proc = run_cli(["--config", config, "run"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: The secrets file {secrets} can be read by others")
    secrets.chmod(0o600)

    with closing(sqlite3.connect(database)) as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
        db.commit()
    proc = run_cli(["--config", config, "run"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: The database is behind")


def config_changes(database: Path) -> int:
    with closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT count(*) FROM audit_log "
                          "WHERE action = 'config.change'").fetchone()[0]


def test_an_idle_run_still_records_a_configuration_change(tmp_path):
    """The audit trail gets a changed setting or secret from the first command after
    it, an idle `mailer run` included; then the runs are answered from the cache again."""
    config, database = idle_project(tmp_path)
    recorded = config_changes(database)
    edit(Path(config), "connections = 4", "connections = 3")
    _, loaded = run_mailer(["--config", config, "run"], tmp_path)
    assert "sqlalchemy" in loaded
    assert config_changes(database) == recorded + 1
    _, loaded = run_mailer(["--config", config, "run"], tmp_path)
    assert "sqlalchemy" not in loaded

    secrets = Path(config).parent / "secrets.toml"
    secrets.write_text(secrets.read_text() + 'smtp_password = "changed"\n')
    run_mailer(["--config", config, "run"], tmp_path)
    assert config_changes(database) == recorded + 2

    # another command in another environment records its configuration (and leaves the
    # cache as it was): the next run, the cache's inputs unchanged, records its own again
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    subprocess.run([sys.executable, "-m", "mailer", "--config", config, "lists", "ls"],
                   check=True,
                   capture_output=True, cwd=tmp_path, timeout=300,
                   env=env | {"MAILER_SMTP_PASSWORD": "other"})
    assert config_changes(database) == recorded + 3
    run_mailer(["--config", config, "run"], tmp_path)
    assert config_changes(database) == recorded + 4


def test_an_idle_run_from_the_cache_reports_a_busy_run_like_the_full_one(tmp_path):
    import fcntl

    config, database = idle_project(tmp_path)
    with open(str(database) + ".run-lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run_cli(["--config", config, "run"], tmp_path)
        code = PROBE.format(heavy=HEAVY, args=["--config", config, "run"], load_all=False)
        probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               cwd=tmp_path, timeout=300)
    assert proc.returncode == 0
    assert proc.stderr.startswith("Another mailer process (pid ")
    assert '"sqlalchemy"' not in probe.stderr.splitlines()[-1]


def at(moment: datetime) -> str:
    return moment.isoformat()


# Each kind of work due.py looks for, as rows: (what, SQL making it due at NOW, SQL making
# it due one microsecond after NOW, or None when it does not wait for a time). Every
# condition due.py's list holds needs a line here.
NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
_MICROS = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
_CAMPAIGN = ("INSERT INTO campaign (slug, title, template, subject, list_ids, segment, state,"
             " scheduled_at, created_at, updated_at, kind) VALUES ('c', 't', 'x', 's', '[]',"
             " '{{}}', '{state}', {at}, 0, 0, 'campaign')")
_RECURRING = ("INSERT INTO recurring_campaign (slug, title, template, subject, list_ids, "
              "segment, cron, timezone, state, next_at, created_at, updated_at) VALUES "
              "('r', 't', 'x', 's', '[]', '{{}}', '0 9 * * 1', 'Europe/Brussels', '{state}', "
              "{at}, 0, 0)")
SCENARIOS = {
    "a campaign sending": (_CAMPAIGN.format(state="sending", at="NULL"), None),
    "a scheduled campaign due": (_CAMPAIGN.format(state="scheduled", at=_MICROS),
                                 _CAMPAIGN.format(state="scheduled", at=_MICROS + 1)),
    "a recurring occurrence due": (_RECURRING.format(state="active", at=_MICROS),
                                   _RECURRING.format(state="active", at=_MICROS + 1)),
    "the daily purge": ("UPDATE audit_log SET at = {day_ago} WHERE action = 'gdpr.purge'",
                        "UPDATE audit_log SET at = {day_ago} + 1 "
                        "WHERE action = 'gdpr.purge'"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_kind_of_work_makes_a_run_from_the_cache_and_without_it(scenario, tmp_path,
                                                                     monkeypatch):
    """Both ways of asking (the cached SQL on the driver, SQLAlchemy with the settings)
    see each kind of work at the microsecond it is due, and not one before."""
    from mailer.delivery.due import nothing_due
    from mailer.project import Project
    from mailer.runcache import idle

    config, database = idle_project(tmp_path)
    monkeypatch.setenv("TEST_MAILER_NOW", at(NOW))
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    day_ago = _MICROS - 24 * 3600 * 1_000_000
    with closing(sqlite3.connect(database)) as db:  # the purge: done an hour before NOW
        db.execute("UPDATE audit_log SET at = ? WHERE action = 'gdpr.purge'",
                   (_MICROS - 3600 * 1_000_000,))
        db.commit()
    project = Project.load(config)

    def answers() -> tuple[bool, bool]:
        return (idle(config) is not None,
                nothing_due(project.engine, feedback_sources=False, now=NOW))

    try:
        assert answers() == (True, True)
        due, not_yet = SCENARIOS[scenario]
        for sql, expected in ((not_yet, (True, True)), (due, (False, False))):
            if sql is None:
                continue
            with closing(sqlite3.connect(database)) as db:
                db.execute("DELETE FROM campaign")
                db.execute("DELETE FROM recurring_campaign")
                db.execute(sql.replace("{day_ago}", str(day_ago)))
                db.commit()
            assert answers() == expected, sql
    finally:
        project.close()


def test_the_cached_queries_are_due_py_s_own(tmp_path):
    """The cache holds due.py's list compiled, one query per condition, and the audit
    trail's last-configuration query bound to its action."""
    from mailer.delivery.due import idle_queries
    from mailer.runcache import CACHE_NAME

    idle_project(tmp_path)
    cached = json.loads((tmp_path / "news" / CACHE_NAME).read_text())["queries"]
    _, work = idle_queries()
    assert len(cached["work"]) == len(work)
    assert "config.change" in cached["last_config"][1]
    assert "gdpr.purge" in cached["purged"][1]
