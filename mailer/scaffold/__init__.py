"""`mailer init`: a new project folder with config, secrets, lists, templates and a database.

The example lists and templates a new project starts from are package data, beside this
file (mailer/scaffold/lists/ and mailer/scaffold/templates/), so an installed wheel has them.
They exist once: the repository's top-level `lists/` and `templates/` are symbolic links to
these folders.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

from mailer.config import CONFIG_NAME, load_settings
from mailer.db import make_engine, upgrade
from mailer.errors import InvalidInput, MailerError

__all__ = ["EXAMPLE_DOMAIN", "EXAMPLE_ORGANISATION", "SHIPPED", "check_identity",
           "create_project"]

SHIPPED = Path(__file__).resolve().parent  # holds lists/ and templates/
# The identity the example project is made with, unless `mailer init` is given one.
EXAMPLE_ORGANISATION = "Voorbeeld vzw"
EXAMPLE_DOMAIN = "example.be"

CONFIG_TEMPLATE = """\
# mailer project configuration. Every key can be overridden by an environment variable:
# MAILER_DATABASE_URL, MAILER_ORGANISATION__NAME (double underscore for a [table] key).
# Secrets (secret_key, hash_key, smtp_password) live in {secrets} (mode 0600) or in
# MAILER_SECRET_KEY / MAILER_HASH_KEY / MAILER_SMTP_PASSWORD, never in this file.

project = "{name}"

# The embedded default: a SQLite file beside this one. For several workers use PostgreSQL:
# database_url = "postgresql+psycopg://mailer@db.example.be/mailer"
database_url = "sqlite:///mailer.db"

# Where subscribers reach the sign-up, confirm and unsubscribe pages.
public_url = "http://127.0.0.1:8080"

lists_dir = "lists"
templates_dir = "templates"
secrets_file = "{secrets}"

[organisation]
# Used by the house style: signature, disclaimer, pages.
name = "Voorbeeld vzw"
address = "Voorbeeldstraat 1, 9000 Gent"
website = "https://www.example.be"
email = "info@example.be"
logo_url = ""
primary_colour = "#1f5f8b"
accent_colour = "#f2a900"

[sending]
# domain = "example.be"            # Message-ID, List-Id, DKIM d= (default: the From domain)
# bounce_domain = "bounce.example.be"   # envelope sender bounces+TOKEN@… (default: domain)
# helo_name = "mailer.example.be"   # said in EHLO (default: this machine's FQDN, else domain)
# DKIM: `mailer dkim keygen --domain example.be --selector mail2026 --configure` adds a key
# here; again with `--algorithm ed25519 --selector mail2026e` to sign with both (RFC 8463).
# dkim_keys = [{{ key = "dkim/mail2026.example.be.rsa.pem", selector = "mail2026" }}]

[delivery]
# A new project delivers into a local folder: nobody real gets mail until you set a relay:
# transport = "smtp://user@relay.example.be:587"      (password: smtp_password secret)
transport = "maildir:outbox"
rate = 10                  # messages per second
# burst = 12               # most messages in any 1-second window (default: rate + 10 %)
# hourly = 10000           # sliding quotas (default: none)
# daily = 50000
# per_domain = {{ "gmail.com" = [20, 22] }}   # rate and burst per recipient domain
connections = 4
# test_addresses = ["me@example.be"]   # `mailer campaign test` sends here by default

[web]
# `mailer serve`: behind your reverse proxy, which is at one of these addresses
trusted_proxies = ["127.0.0.1", "::1"]
# confirm_days = 7          # how long a confirmation link works
# signups_per_ip = 20       # sign-ups an hour from one client address
# signups_per_address = 3   # sign-ups a day for one e-mail address

[import]
default_language = "nl"
"""

SECRETS_TEMPLATE = """\
# Secrets of this mailer project. Keep this file private (mode 0600) and out of git.
# secret_key signs links and tokens; hash_key keys the suppression list's hashes
# (changing it would forget who is suppressed).
secret_key = "{secret_key}"
hash_key = "{hash_key}"
# When rotating secret_key, move the old one here so links already sent keep working:
# previous_secret_keys = ["..."]
# smtp_password = ""
"""


_DOMAIN = re.compile(r"(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                     r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})")


def check_identity(organisation: str, domain: str) -> tuple[str, str]:
    """The organisation's name and the sending domain as `mailer init` takes them, or
    InvalidInput saying what is wrong."""
    organisation, domain = organisation.strip(), domain.strip().lower().rstrip(".")
    if not organisation or len(organisation) > 100 or not organisation.isprintable() \
            or any(c in organisation for c in '"\\<>'):
        raise InvalidInput(f"The organisation name {organisation!r} is not usable: 1 to "
                           "100 characters, without quotes, backslashes or < >.")
    domain = domain.removeprefix("www.")
    if "@" in domain or not _DOMAIN.fullmatch(domain):
        raise InvalidInput(f"{domain!r} is not a domain name.",
                           hint="The part after @ in your From address, e.g. groenbuurt.nl.")
    return organisation, domain


def _identity(text: str, organisation: str, domain: str) -> str:
    """The example's text with the organisation and domain put in, TOML-escaped."""
    escaped = json.dumps(organisation, ensure_ascii=False)[1:-1]
    return text.replace(EXAMPLE_ORGANISATION, escaped).replace(EXAMPLE_DOMAIN, domain)


def create_project(folder: Path, *, name: str | None = None,
                   organisation: str = EXAMPLE_ORGANISATION,
                   domain: str = EXAMPLE_DOMAIN) -> Path:
    """Create a project in `folder` (new or empty); returns the path of mailer.toml.
    `organisation` and `domain` are written everywhere the identity belongs: the
    [organisation] settings, [sending] domain, and the example list's From, Reply-To and
    consent text. (The example subscribers keep example.be addresses: nobody real.)"""
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"{folder} already exists and is not empty.",
                           hint="Pick a new folder name.")
    name = name or folder.resolve().name
    if not re.fullmatch(r"[\w .-]{1,100}", name):
        raise InvalidInput("A project name may hold letters, digits, spaces, . - and _.")
    organisation, domain = check_identity(organisation, domain)
    example = (organisation, domain) == (EXAMPLE_ORGANISATION, EXAMPLE_DOMAIN)
    source_lists, source_templates = SHIPPED / "lists", SHIPPED / "templates"
    if not source_lists.is_dir() or not source_templates.is_dir():
        raise MailerError(f"The example lists and templates are missing from {SHIPPED}.",
                          hint="Reinstall mailer: this installation is incomplete.")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_lists, folder / "lists")
    shutil.copytree(source_templates, folder / "templates")
    config = CONFIG_TEMPLATE.format(name=name, secrets="secrets.toml")
    if not example:
        config = _identity(config, organisation, domain).replace(
            f'# domain = "{domain}"  ', f'domain = "{domain}"    ')
        for path in (folder / "lists").glob("*.toml"):
            path.write_text(_identity(path.read_text(encoding="utf-8"), organisation,
                                      domain), encoding="utf-8")
    (folder / CONFIG_NAME).write_text(config, encoding="utf-8")
    fd = os.open(folder / "secrets.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(SECRETS_TEMPLATE.format(secret_key=secrets.token_urlsafe(32),
                                         hash_key=secrets.token_urlsafe(32)))
    (folder / ".gitignore").write_text("secrets.toml\nmailer.db*\n*.rejects.csv\noutbox/\n",
                                       encoding="utf-8")
    settings = load_settings(folder / CONFIG_NAME)
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return folder / CONFIG_NAME
