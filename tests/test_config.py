"""Config: discovery, MAILER_* overrides, secrets from env or a 0600 file, masking."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.config import load_settings
from mailer.errors import ConfigError


def test_found_in_current_folder_then_env_then_explicit(folder, tmp_path, monkeypatch):
    assert load_settings().config_path == folder / "mailer.toml"
    other = tmp_path / "other.toml"
    other.write_text('project = "other"\n')
    monkeypatch.setenv("MAILER_CONFIG", str(other))
    assert load_settings().project == "other"
    assert load_settings(folder / "mailer.toml").project == "news"


def test_environment_overrides_top_level_and_table_keys(folder, monkeypatch):
    monkeypatch.setenv("MAILER_PUBLIC_URL", "https://nieuws.example.be")
    monkeypatch.setenv("MAILER_ORGANISATION__NAME", "Andere vzw")
    monkeypatch.setenv("MAILER_IMPORT__DEFAULT_LANGUAGE", "en")
    settings = load_settings()
    assert settings.public_url == "https://nieuws.example.be"
    assert settings.organisation.name == "Andere vzw"
    assert settings.imports.default_language == "en"


def test_mailer_debug_is_not_a_setting(folder, monkeypatch):
    """The CLI's own help says MAILER_DEBUG=1 shows a traceback: it must not be refused."""
    monkeypatch.setenv("MAILER_DEBUG", "1")
    assert load_settings().project == "news"


def test_relative_sqlite_path_is_relative_to_the_config_file(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(folder / "mailer.toml")
    assert settings.resolved_database_url == f"sqlite:///{folder / 'mailer.db'}"


def test_secrets_come_from_file_and_env_wins(folder, monkeypatch):
    assert load_settings().secrets.sources["secret_key"].startswith("file ")
    monkeypatch.setenv("MAILER_SECRET_KEY", "from-env-123")
    settings = load_settings()
    assert settings.secrets.require("secret_key") == b"from-env-123"
    assert "from-env-123" not in repr(settings) and "from-env-123" not in str(settings.secrets)


def test_readable_secrets_file_is_refused(folder):
    (folder / "secrets.toml").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        try:
            load_settings()
        except ConfigError as exc:
            raise ConfigError(f"{exc} {exc.hint}") from None


def test_secret_in_mailer_toml_is_refused(folder):
    with (folder / "mailer.toml").open("a") as fh:
        fh.write('\nsecret_key = "oops"\n')
    with pytest.raises(ConfigError, match="does not belong"):
        load_settings()


@pytest.mark.parametrize("text, message", [
    ('databse_url = "x"\n', "Unknown setting 'databse_url'"),
    ("project = [\n", "not valid TOML"),
    ('[organisation]\nname = 3\n', "organisation.name"),
])
def test_bad_config_is_one_clear_line(folder, text, message):
    (folder / "mailer.toml").write_text(text)
    result = CliRunner().invoke(cli, ["config", "show"], catch_exceptions=False)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_every_secret(folder, monkeypatch):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "hunter2-smtp")
    secret = load_settings().secrets.require("secret_key").decode()
    hash_key = load_settings().secrets.require("hash_key").decode()
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0
        for value in (secret, hash_key, "hunter2-smtp"):
            assert value not in result.output
        assert "smtp_password" in result.output and "********" in result.output


def test_config_show_masks_a_password_written_into_a_url(folder, monkeypatch):
    """A password typed into database_url or a transport URL (the latter is refused when
    sending, but shown here first) is masked like the secrets."""
    monkeypatch.setenv("MAILER_DATABASE_URL", "postgresql://news:db-pass-123@db.example.be/news")
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", "smtp://mailer:relay-pass-456@relay:587")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "db-pass-123" not in result.output and "relay-pass-456" not in result.output
        assert "postgresql://news:****@db.example.be/news" in result.output
        assert "smtp://mailer:****@relay:587" in result.output


def test_a_setting_that_was_removed_is_named(folder):
    """`[import] check_deliverability` was never read, and is gone: a file that still
    has it is told so in one line."""
    config = folder / "mailer.toml"
    config.write_text(config.read_text().replace("[import]\n",
                                                 "[import]\ncheck_deliverability = false\n"))
    result = CliRunner().invoke(cli, ["config", "show"], catch_exceptions=False)
    assert result.exit_code == 1 and "check_deliverability" in result.stderr
    assert "Traceback" not in result.stderr


def test_previous_secret_keys_from_file_or_environment(folder, monkeypatch):
    from mailer.project import Project
    from mailer.tokens import Purpose, Signer

    old = "an-old-secret-key-that-signed-links"
    token = Signer(old.encode()).make(Purpose.UNSUBSCRIBE, 3, 1)
    monkeypatch.setenv("MAILER_PREVIOUS_SECRET_KEYS", f"{old}, another-old-one-0123456789")
    project = Project.load()
    assert project.signer.read(token, Purpose.UNSUBSCRIBE).subscriber_id == 3
    result = CliRunner().invoke(cli, ["config", "show"], catch_exceptions=False)
    assert old not in result.output
    monkeypatch.delenv("MAILER_PREVIOUS_SECRET_KEYS")
    secrets = folder / "secrets.toml"
    secrets.write_text(secrets.read_text() + f'previous_secret_keys = ["{old}"]\n')
    assert Project.load().signer.read(token, Purpose.UNSUBSCRIBE).subscriber_id == 3


def test_a_wrong_value_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    from mailer.config import load_settings
    from mailer.errors import ConfigError

    (tmp_path / "mailer.toml").write_text("[delivery]\nrate = 5\n")
    with pytest.raises(ConfigError, match="the environment variable MAILER_DELIVERY__RATE"):
        load_settings(tmp_path / "mailer.toml", environ={"MAILER_DELIVERY__RATE": "fast"})
    with pytest.raises(ConfigError, match=r"in mailer\.toml"):
        (tmp_path / "mailer.toml").write_text("[delivery]\nrate = \"fast\"\n")
        load_settings(tmp_path / "mailer.toml", environ={})
