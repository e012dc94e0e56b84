"""Settings: `mailer.toml`, overridden by `MAILER_*` environment variables, plus secrets.

Where the file is found, in order: `--config PATH`, `$MAILER_CONFIG`, `./mailer.toml`.
Every key can be overridden from the environment: `MAILER_DATABASE_URL` for a top-level
key, `MAILER_ORGANISATION__NAME` (double underscore) for a key in a table.

Secrets (the token secret, the suppression hash key, the SMTP password) never live in
mailer.toml. They come from `MAILER_SECRET_KEY` / `MAILER_HASH_KEY` / `MAILER_SMTP_PASSWORD`
or from the secrets file (default `secrets.toml` beside mailer.toml), which must be readable
by its owner only (0600), like an SSH key. They are held as `SecretStr`, so printing the
settings shows `**********`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mailer.configfile import CONFIG_NAME, ENV_PREFIX, find_config
from mailer.content.compose import ascii_domain
from mailer.errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "Delivery",
    "DkimKey",
    "SECRET_NAMES",
    "Organisation",
    "Secrets",
    "Sending",
    "Settings",
    "find_config",
    "load_settings",
]

SECRET_NAMES = ("secret_key", "previous_secret_keys", "hash_key", "smtp_password",
                "feedback_password", "postmark_webhook_password")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Organisation(_Section):
    """Who sends: used by the house style (signature, disclaimer) and the web pages."""

    name: str = "Our organisation"
    address: str = ""
    website: str = ""
    email: str = ""
    logo_url: str = ""
    primary_colour: str = "#1f5f8b"
    accent_colour: str = "#f2a900"


class DkimKey(_Section):
    """One DKIM signing key: its private key file and the selector it is published under."""

    key: str = Field(min_length=1)  # the private key file, relative to mailer.toml
    selector: str = Field(min_length=1)  # published as SELECTOR._domainkey.DOMAIN


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def helo_problem(name: str) -> str | None:
    """Why `name` cannot be given in EHLO, or None: it must be a fully qualified domain
    name (RFC 5321 4.1.1.1) or an address literal like [192.0.2.1], and not localhost
    (SpamAssassin scores HELO localhost 5 points on direct delivery)."""
    if name.startswith("[") and name.endswith("]"):
        try:
            ipaddress.ip_address(name[1:-1].removeprefix("IPv6:"))
        except ValueError:
            return f"{name!r} is not an address literal like [192.0.2.1]."
        return None
    labels = name.removesuffix(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels) or len(name) > 253:
        return f"{name!r} is not a host name."
    if "localhost" in (labels[0].lower(), labels[-1].lower()):
        return f"{name!r} is localhost: receivers count that against the mail."
    if len(labels) < 2:
        return f"{name!r} is not fully qualified: give the name with its domain."
    if labels[-1].isdigit():
        return f"{name!r} looks like an IP address: write it as [{name}]."
    return None


class Sending(_Section):
    """How messages are addressed and signed. Empty values fall back as noted."""

    domain: str = ""  # Message-ID, List-Id, DKIM d=; default: the list's From domain
    bounce_domain: str = ""  # envelope sender bounces+TOKEN@…; default: `domain`
    # The signing keys (`mailer dkim keygen --configure` adds one): every message gets one
    # DKIM-Signature per key, e.g. an RSA-2048 and an ed25519 one (RFC 8463). None: unsigned.
    # dkim_keys = [{ key = "dkim/mail2026.example.be.rsa.pem", selector = "mail2026" }, …]
    dkim_keys: list[DkimKey] = Field(default_factory=list)
    dkim_key: str = ""  # one key the older way (signs beside dkim_keys); empty: none
    dkim_selector: str = ""  # the selector dkim_key is published under (DNS)
    feedback_id: str = ""  # the sender part of Feedback-ID; default: the project name
    # The name mailer gives in EHLO; default: this machine's name when it is a fully
    # qualified one, else `domain`, else the envelope sender's domain. Never localhost.
    helo_name: str = ""

    @field_validator("domain", "bounce_domain")
    @classmethod
    def _ascii_domain(cls, value: str) -> str:
        """An international name as its A-labels (xn--), the form DNS, DKIM and an
        envelope without SMTPUTF8 need; an invalid one is refused here, not at send."""
        return ascii_domain(value.strip().rstrip(".").lower())

    @field_validator("helo_name")
    @classmethod
    def _helo_name(cls, value: str) -> str:
        value = ascii_domain(value.strip())
        problem = helo_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("dkim_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, value: Any) -> Any:
        """MAILER_SENDING__DKIM_KEYS: `selector:keyfile`, several separated by commas."""
        if not isinstance(value, str):
            return value
        keys = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            selector, colon, key = item.partition(":")
            if not colon or not selector.strip() or not key.strip():
                raise ValueError(f"{item!r} is not selector:keyfile")
            keys.append({"selector": selector.strip(), "key": key.strip()})
        return keys

    def signing_keys(self) -> list[DkimKey]:
        """Every configured key: `dkim_key` first (when set), then `dkim_keys`; a
        ConfigError when a selector is missing or used twice."""
        keys = list(self.dkim_keys)
        if self.dkim_key:
            if not self.dkim_selector:
                raise ConfigError("[sending] dkim_key is set but dkim_selector is not.",
                                  hint="Use the selector the key was published under.")
            keys.insert(0, DkimKey(key=self.dkim_key, selector=self.dkim_selector))
        seen: set[str] = set()
        for entry in keys:
            if entry.selector.lower() in seen:
                raise ConfigError(f"[sending] DKIM selector {entry.selector!r} is configured "
                                  "twice.", hint="Each key is published under its own "
                                  "selector.")
            seen.add(entry.selector.lower())
        return keys


class Delivery(_Section):
    """How mail leaves: the transport, its pace and the retry policy."""

    # Where messages go. The default is a local folder, so a new project cannot mail real
    # people by accident. smtp://user@relay.example.be:587 (STARTTLS, certificate
    # verified), smtps://relay.example.be:465, maildir:PATH, file:PATH. Several relays
    # (failover, in order) as a list. The SMTP password is the secret `smtp_password`.
    transport: str | list[str] = "maildir:outbox"
    rate: float = 10.0  # messages per second
    burst: int = 0  # most messages in any 1-second window; 0: the rate + 10 %
    hourly: int = 0  # sliding-window quotas; 0: none
    daily: int = 0
    per_domain: dict[str, list[float]] = Field(default_factory=dict)  # {"gmail.com": [20, 20]}
    connections: int = 4  # SMTP connections at once (messages in flight: sender.worker_count)
    messages_per_connection: int = 100  # then the connection is closed and a new one opened
    timeout: float = 60.0  # seconds per SMTP command
    max_attempts: int = 5  # deferrals before a delivery fails
    retry_after: float = 300.0  # seconds before the first retry; doubles each time, max 6 h
    pause_failure_rate: float = 0.2  # pause a campaign when this share of the last 200 fail
    test_addresses: list[str] = Field(default_factory=list)  # default for `campaign test`
    # Helper processes that render and sign while the sender talks SMTP: -1 automatic
    # (for sends of 2,000 messages or more: the cores but one, all of them with an RSA
    # DKIM key), 0 none.
    render_processes: int = -1
    # A recurring campaign's occurrence that `mailer run` finds more than an hour late
    # (the machine was down): "send-late" sends it once, late, with a warning (only the
    # latest, when several were missed); "skip" skips it, with a warning.
    missed: Literal["send-late", "skip"] = "send-late"
    # PostgreSQL, several senders (docs/scale-out.md): a sender's claim on the deliveries
    # it took lasts this long unless it renews it (every third of it, while it lives).
    # When a sender dies, its unsent deliveries go to the others after at most this long.
    lease_seconds: float = Field(default=60.0, ge=1.0)


class Web(_Section):
    """`mailer serve`: the subscribers' pages and endpoints."""

    # Forwarded headers (X-Forwarded-For/-Proto) are believed from these addresses only.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    confirm_days: int = Field(default=7, ge=1)  # how long a confirmation link works
    max_body: int = Field(default=65536, ge=1024)  # bytes; larger requests get 413
    signups_per_ip: int = Field(default=20, ge=1)  # per hour, from one address
    signups_per_address: int = Field(default=3, ge=1)  # per day, for one e-mail address
    # More requests than this with a forged or altered link (/u, /p, /c) within
    # forged_tokens_minutes, from all clients together, and the engine records an incident
    # in the breach register (once an hour at most) and logs a warning.
    forged_tokens_alert: int = Field(default=50, ge=1)
    forged_tokens_minutes: int = Field(default=10, ge=1)


class Feedback(_Section):
    """The return path: where bounces, complaints and mail unsubscribes arrive, and what
    is done about them (docs/feedback.md)."""

    # maildir:PATH, mbox:PATH, imaps://user@host/INBOX, pop3s://user@host; the password is
    # the secret `feedback_password`. `mailer run` reads them all each time it runs.
    sources: list[str] = Field(default_factory=list)

    @field_validator("sources", "ses_topics", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """One value, or several separated by commas (MAILER_FEEDBACK__SOURCES,
        MAILER_FEEDBACK__SES_TOPICS)."""
        return [u.strip() for u in value.split(",") if u.strip()] \
            if isinstance(value, str) else value

    after: Literal["move", "delete"] = "move"  # what happens to a processed message
    processed_folder: str = "processed"  # where processed messages go (after = "move")
    failed_folder: str = "failed"  # where unreadable messages go
    cafile: str = ""  # a CA file for a mail server with a private certificate
    soft_bounce_limit: int = Field(default=3, ge=1)  # this many soft bounces …
    soft_bounce_days: int = Field(default=30, ge=1)  # … within this many days suppress
    max_seconds: float = Field(default=120.0, gt=0)  # `mailer run`'s budget for reading them
    postmark_webhook_user: str = ""  # basic auth user of the Postmark webhook
    # SNS topics whose SES notifications are accepted (arn:aws:sns:…); none: the webhook
    # is off
    ses_topics: list[str] = Field(default_factory=list)


class Privacy(_Section):
    """How long personal data is kept (docs/privacy.md); `mailer gdpr purge` and, once a
    day, `mailer run` apply it."""

    pending_days: int = Field(default=30, ge=1)  # sign-ups never confirmed
    delivery_months: int = Field(default=24, ge=1)  # who got which mail, with the replies
    returns_days: int = Field(default=90, ge=1)  # the text of bounces and replies
    audit_years: int = Field(default=5, ge=1)  # the audit trail


class Tracking(_Section):
    """What is counted of how a mail is read (docs/delivery.md, "Clicks"). Never per person,
    and never an open: there is no tracking pixel."""

    # "aggregate": the links written in a campaign's template go through `mailer serve`,
    # which counts the clicks per campaign and link (the same URL for everyone) and
    # redirects; "off": links are left as they are.
    clicks: Literal["off", "aggregate"] = "off"


class ImportSettings(_Section):
    """Defaults for CSV imports."""

    default_language: Literal["nl", "en"] = "nl"


class Secrets(BaseModel):
    """Secret values; `repr` and `str` mask them."""

    secret_key: SecretStr | None = None
    # Keys that signed links before the last rotation: still accepted, never used to sign.
    previous_secret_keys: list[SecretStr] = Field(default_factory=list)
    hash_key: SecretStr | None = None
    smtp_password: SecretStr | None = None
    feedback_password: SecretStr | None = None  # the return mailbox (IMAP/POP3)
    postmark_webhook_password: SecretStr | None = None
    sources: dict[str, str] = Field(default_factory=dict)  # name -> "env" | "file PATH"

    def signer_keys(self) -> tuple[bytes, list[bytes]]:
        """The current signing key and the previous ones, for tokens.Signer."""
        return self.require("secret_key"), [
            k.get_secret_value().encode() for k in self.previous_secret_keys]

    def require(self, name: str) -> bytes:
        """The secret as bytes, or a ConfigError that says where to put it."""
        value: SecretStr | None = getattr(self, name)
        if value is None or not value.get_secret_value():
            raise ConfigError(
                f"The secret {name!r} is not set.",
                hint=f"Set {ENV_PREFIX}{name.upper()} or add it to the secrets file "
                "(mailer init creates one).",
            )
        return value.get_secret_value().encode()


class Settings(_Section):
    """The whole configuration of one project."""

    project: str = "mailer"
    database_url: str = "sqlite:///mailer.db"
    public_url: str = "http://127.0.0.1:8080"
    lists_dir: str = "lists"
    templates_dir: str = "templates"
    secrets_file: str = "secrets.toml"
    organisation: Organisation = Field(default_factory=Organisation)
    sending: Sending = Field(default_factory=Sending)
    delivery: Delivery = Field(default_factory=Delivery)
    web: Web = Field(default_factory=Web)
    feedback: Feedback = Field(default_factory=Feedback)
    privacy: Privacy = Field(default_factory=Privacy)
    tracking: Tracking = Field(default_factory=Tracking)
    imports: ImportSettings = Field(default_factory=ImportSettings, alias="import")

    # Not from the file: where it was found, and the secrets.
    root: Path = Field(default=Path("."), exclude=True)
    config_path: Path | None = Field(default=None, exclude=True)
    secrets_path: Path | None = Field(default=None, exclude=True)  # read or not
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def path(self, value: str) -> Path:
        """A path from the config, relative to the folder of mailer.toml."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def lists_path(self) -> Path:
        return self.path(self.lists_dir)

    @property
    def templates_path(self) -> Path:
        return self.path(self.templates_dir)

    @property
    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute against the project."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:" and not rest.startswith("file:"):
                return prefix + str(self.path(rest))
        return url


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """MAILER_KEY=… and MAILER_TABLE__KEY=… as a nested dict (lower-cased keys)."""
    # Not settings: where the files are, the secrets, and DEBUG (the CLI's tracebacks).
    skip = {"CONFIG", "SECRETS_FILE", "DEBUG"} | {n.upper() for n in SECRET_NAMES}
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in skip or not key:
            continue
        parts = [p.lower() for p in key.split("__")]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name} conflicts with another MAILER_ variable")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_secrets(path: Path, environ: dict[str, str]) -> Secrets:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"The secrets file {path} can be read by others (mode {mode:o}).",
                hint=f"Run: chmod 600 {path}",
            )
        data = _read_toml(path)
        unknown = set(data) - set(SECRET_NAMES)
        if unknown:
            raise ConfigError(f"Unknown key in {path.name}: {', '.join(sorted(unknown))}")
        for name in SECRET_NAMES:
            if name in data:
                value = data[name]
                values[name] = [str(v) for v in value] if isinstance(value, list) \
                    else str(value)
                sources[name] = f"file {path}"
    for name in SECRET_NAMES:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value:
            values[name] = env_value
            sources[name] = "environment"
    previous = values.get("previous_secret_keys")
    if isinstance(previous, str):  # from the environment: comma-separated
        values["previous_secret_keys"] = [k.strip() for k in previous.split(",") if k.strip()]
    return Secrets(**values, sources=sources)


def _describe(error: ValidationError, origin: str, environ: dict[str, str]) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    # A value from MAILER_SECTION__KEY is reported as coming from that variable.
    keys = [str(p) for p in first["loc"] if not isinstance(p, int)]
    for depth in range(len(keys), 0, -1):
        variable = ENV_PREFIX + "__".join(keys[:depth]).upper()
        if variable in environ:
            origin = f"the environment variable {variable}"
            break
    if kind == "extra_forbidden":
        return f"Unknown setting {where!r} in {origin}"
    return f"Setting {where!r} in {origin}: {first['msg']}"


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    required: bool = True,
) -> Settings:
    """Read the project's settings; ConfigError (one line) when anything is wrong."""
    environ = dict(os.environ if environ is None else environ)
    path = find_config(config)
    if path is None and required:
        raise ConfigError(
            f"No {CONFIG_NAME} in this folder.",
            hint="Run `mailer init NAME` to create a project, or pass --config PATH.",
        )
    data = _read_toml(path) if path else {}
    tables = [data, *(v for v in data.values() if isinstance(v, dict))]
    for name in SECRET_NAMES:
        if any(name in table for table in tables):
            raise ConfigError(
                f"{name!r} is a secret and does not belong in {CONFIG_NAME}.",
                hint=f"Move it to the secrets file or to {ENV_PREFIX}{name.upper()}.",
            )
    data = _merge(data, _env_overrides(environ))
    origin = path.name if path else "the environment"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin, environ)) from None
    settings.root = path.parent if path else Path.cwd()
    settings.config_path = path
    secrets_path = Path(environ.get(ENV_PREFIX + "SECRETS_FILE") or settings.secrets_file)
    settings.secrets_path = settings.path(str(secrets_path))
    settings.secrets = _load_secrets(settings.secrets_path, environ)
    return settings
