"""What the doctor checks against: the project's identities, keys, relays and names.

Everything here comes from mailer.toml and the database, nothing from the network:

* an identity per distinct (From domain, DKIM d=, envelope domain) of the lists: From is
  the list's `from_address`; d= is `[sending] domain`, else the From domain; the envelope
  (VERP) domain of bounces+TOKEN@ and unsub+TOKEN@ is `[sending] bounce_domain`, else d=,
  exactly as mailer/content/mailing.py addresses a message;
* the DKIM keys of `[sending]`, each with the TXT value that publishes it;
* the relays of `[delivery] transport` (none for maildir: and file:);
* the EHLO name the transport presents (`[sending] helo_name`, else the machine's fully
  qualified name, else the sending domain: mailer/delivery/transports.py's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import select

from mailer.config import Settings
from mailer.content.dkim import load_key, txt_record
from mailer.db import session_scope
from mailer.delivery.transports import Relay, default_helo_name, parse_relay
from mailer.errors import MailerError
from mailer.models import MailingList
from mailer.project import Project

__all__ = ["Identity", "Key", "Setup", "ascii_domain", "configured_keys", "gather"]


@dataclass(frozen=True)
class Identity:
    """The domains one or more lists' messages carry."""

    from_domain: str  # in From (what DMARC protects)
    dkim_domain: str  # DKIM d=
    bounce_domain: str  # the envelope sender's (SPF's) domain
    lists: tuple[str, ...] = ()  # the slugs of the lists with these domains

    @property
    def label(self) -> str:
        return ", ".join(self.lists) if self.lists else "[sending] domain"


@dataclass(frozen=True)
class Key:
    """A configured DKIM key and what publishes it."""

    selector: str
    path: str  # as configured (relative to mailer.toml)
    record: str | None  # the TXT value (v=DKIM1; k=…; p=…); None when unreadable
    algorithm: str = ""  # rsa | ed25519
    bits: int | None = None  # RSA modulus size
    problem: str | None = None  # why the key file cannot be used


@dataclass
class Setup:
    settings: Settings
    identities: list[Identity]
    keys: list[Key]
    relays: list[Relay]
    local_transport: str | None  # maildir:… or file:… when mail goes to a folder
    helo: str
    lists: list[MailingList] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # configuration that is wrong

    @property
    def from_domains(self) -> list[str]:
        return sorted({i.from_domain for i in self.identities})

    @property
    def dkim_domains(self) -> list[str]:
        return sorted({i.dkim_domain for i in self.identities})

    @property
    def bounce_domains(self) -> list[str]:
        return sorted({i.bounce_domain for i in self.identities})


def ascii_domain(domain: str) -> str:
    """The domain as DNS has it: lower case, an internationalised one as its A-labels."""
    domain = domain.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _identities(settings: Settings, rows: list[MailingList]) -> list[Identity]:
    sending = settings.sending
    grouped: dict[tuple[str, str, str], list[str]] = {}
    sources = [(row.from_address.rpartition("@")[2], row.slug) for row in rows]
    if not sources and sending.domain:
        sources = [(sending.domain, "")]
    for from_domain, slug in sources:
        from_domain = ascii_domain(from_domain)
        dkim = ascii_domain(sending.domain) if sending.domain else from_domain
        bounce = ascii_domain(sending.bounce_domain) if sending.bounce_domain else dkim
        grouped.setdefault((from_domain, dkim, bounce), [])
        if slug:
            grouped[(from_domain, dkim, bounce)].append(slug)
    return [Identity(*domains, lists=tuple(slugs)) for domains, slugs in grouped.items()]


def configured_keys(settings: Settings) -> list[tuple[str, str]]:
    """(key file as configured, selector) of every DKIM key in [sending] (`dkim_keys`
    and the older `dkim_key` + `dkim_selector`)."""
    return [(k.key, k.selector) for k in settings.sending.signing_keys()]


def _key(settings: Settings, path: str, selector: str) -> Key:
    try:
        key = load_key(settings.path(path))
    except MailerError as exc:
        hint = f" {exc.hint}" if exc.hint else ""
        return Key(selector, path, None, problem=f"{exc}{hint}")
    if isinstance(key, rsa.RSAPrivateKey):
        return Key(selector, path, txt_record(key), "rsa", key.key_size)
    return Key(selector, path, txt_record(key), "ed25519")


def gather(project: Project) -> Setup:
    """The setup of `project` (reads mailer.toml, the lists in the database and the key
    files)."""
    settings = project.settings
    problems: list[str] = []
    with session_scope(project.engine) as session:
        rows = list(session.exec(select(MailingList).order_by(MailingList.id)).all())
    keys: list[Key] = []
    try:
        keys = [_key(settings, path, selector) for path, selector in configured_keys(settings)]
    except MailerError as exc:
        problems.append(str(exc))
    spec = settings.delivery.transport
    urls = [spec] if isinstance(spec, str) else list(spec)
    relays: list[Relay] = []
    local = None
    for url in urls:
        if url.startswith(("maildir:", "file:")):
            local = url
        else:
            try:
                relays.append(parse_relay(url))
            except MailerError as exc:
                problems.append(str(exc))
    identities = _identities(settings, rows)
    fallback = identities[0].bounce_domain if identities else ""
    helo = settings.sending.helo_name or default_helo_name(settings.sending.domain) \
        or fallback
    return Setup(settings=settings, identities=identities, keys=keys, relays=relays,
                 local_transport=local, helo=helo.removesuffix("."), lists=rows,
                 problems=problems)

