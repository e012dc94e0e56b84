"""Where messages go, named by URL in `[delivery] transport`.

    smtp://user@relay.example.be:587    STARTTLS required, certificate verified
    smtps://relay.example.be:465        TLS from the first byte
    smtp://relay.example.be:25?tls=none plain SMTP: only when the URL says so
    …?cafile=/etc/ssl/our-ca.pem        trust this CA for the relay's certificate
    maildir:outbox                      a Maildir folder (new/ tmp/ cur/): look, don't send
    file:outbox                         one .eml file per message

Several relays (a list in mailer.toml) are tried in order: when the first cannot be
reached, the next takes over, and the first is tried again after a minute. The password
is never in the URL: it is the secret `smtp_password`.

The EHLO name is `[sending] helo_name`, else this machine's name when it is fully
qualified (socket.getfqdn(), often just "localhost" in a container), else the sending
domain: never localhost, which receivers count against the mail.

`send()` never raises for what a relay says or does, nor for a fault of ours in one
message (that message fails, its connection is dropped); it returns an `Outcome` whose kind is
the delivery's next state: sent (250), deferred (4xx, 421, a dropped or refused
connection, a timeout), bounced (5xx at RCPT or DATA: the address does not take mail) or
failed (5xx for anything else, e.g. the relay refusing our sender: retrying won't help),
or unknown (the connection was lost, or the relay fell silent, after the end of the
message was sent: it may have been taken, RFC 1047; not resent unless asked).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from itertools import count
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from mailer.config import helo_problem
from mailer.content.mailing import Message
from mailer.delivery.smtpsession import ReplyLost, Session, Unsendable
from mailer.errors import ConfigError
from mailer.privacy.private import private_dir, write_private

__all__ = ["FileTransport", "MaildirTransport", "Outcome", "Relay", "SmtpTransport",
           "Transport", "default_helo_name", "make_transport", "parse_relay"]

# Names a machine may carry that are fully qualified in form only: not for EHLO.
_PRIVATE_SUFFIXES = ("localdomain", "local", "internal", "lan", "home", "arpa")


@dataclass(frozen=True)
class Outcome:
    kind: str  # sent | deferred | bounced | failed | unknown (a DeliveryState value)
    reply: str  # what the relay said, e.g. "250 2.0.0 Ok: queued as 4Xy"

    @property
    def ok(self) -> bool:
        return self.kind == "sent"


Before = Callable[[], Awaitable[None]] | None


class Transport(Protocol):
    async def send(self, message: Message, *, before: Before = None) -> Outcome:
        """Deliver `message`. `before` is awaited once the transport is ready to start
        the transaction (a connection open): the sender paces there, so connection
        set-up never bunches messages up at the receiver. If it raises, nothing is
        sent and the exception propagates."""
        ...

    async def close(self) -> None: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    user: str | None
    implicit_tls: bool
    starttls: bool  # False only with ?tls=none
    cafile: str | None

    def describe(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        who = f"{self.user}@" if self.user else ""
        return f"{scheme}://{who}{self.host}:{self.port}" + ("" if self.starttls or
                                                            self.implicit_tls else
                                                            " (no TLS)")


def parse_relay(url: str) -> Relay:
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError("The SMTP password does not belong in the transport URL.",
                          hint="Set it as the secret smtp_password (secrets.toml or "
                               "MAILER_SMTP_PASSWORD).")
    if not parts.hostname:
        raise ConfigError(f"The transport {url!r} names no host.")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"tls", "cafile"}
    if unknown:
        raise ConfigError(f"Unknown option in the transport URL: {', '.join(sorted(unknown))}"
                          " (known: tls=none, cafile=PATH).")
    implicit = parts.scheme == "smtps"
    tls = options.get("tls", "")
    if tls not in ("", "none"):
        raise ConfigError("The transport option tls can only be tls=none (plain SMTP).")
    if implicit and tls == "none":
        raise ConfigError("smtps:// is TLS by definition: drop tls=none or use smtp://.")
    return Relay(host=parts.hostname, port=parts.port or (465 if implicit else 587),
                 user=unquote(parts.username) if parts.username else None,
                 implicit_tls=implicit, starttls=not implicit and tls != "none",
                 cafile=options.get("cafile"))


@cache
def _machine_name() -> str:
    return socket.getfqdn()


def default_helo_name(domain: str = "") -> str | None:
    """The EHLO name when none is configured: this machine's fully qualified name, else
    `domain` (the sending domain); None: the envelope sender's domain, per connection."""
    name = _machine_name().removesuffix(".")
    if helo_problem(name) is None and not name.startswith("[") \
            and name.rpartition(".")[2].lower() not in _PRIVATE_SUFFIXES:
        return name
    return domain or None


def make_transport(spec: str | list[str], *, root: Path, password: str | None = None,
                   connections: int = 4, per_connection: int = 100,
                   timeout: float = 60.0, helo_name: str | None = None) -> Transport:
    """The transport for `[delivery] transport`. `helo_name`: what SMTP connections say in
    EHLO; None: the domain of the envelope sender of the connection's first message."""
    urls = [spec] if isinstance(spec, str) else list(spec)
    if not urls:
        raise ConfigError("[delivery] transport is empty.")
    first = urls[0]
    for prefix, cls in (("maildir:", MaildirTransport), ("file:", FileTransport)):
        if first.startswith(prefix):
            if len(urls) > 1:
                raise ConfigError("Only SMTP relays can be listed for failover.")
            path = Path(first[len(prefix):]).expanduser()
            return cls(path if path.is_absolute() else root / path)
    relays = []
    for url in urls:
        if not url.startswith(("smtp://", "smtps://")):
            raise ConfigError(f"Unknown transport {url!r}.",
                              hint="Use smtp://user@host:587, smtps://host:465, "
                                   "maildir:PATH or file:PATH.")
        relays.append(parse_relay(url))
    if any(r.user for r in relays) and not password:
        raise ConfigError("The relay needs a password: set the secret smtp_password.",
                          hint="In secrets.toml, or MAILER_SMTP_PASSWORD.")
    return SmtpTransport(relays, password=password, connections=connections,
                         per_connection=per_connection, timeout=timeout, helo_name=helo_name)


# -- local transports ----------------------------------------------------------------------

_unique = count()


def _local_copy(message: Message) -> bytes:
    """What a local delivery agent stores: the envelope as Return-Path and Delivered-To."""
    return (f"Return-Path: <{message.envelope_from}>\r\nDelivered-To: {message.recipient}\r\n"
            .encode() + message.data)


class MaildirTransport:
    """Each message becomes a file in PATH/new (written in tmp/, then renamed), as a
    local delivery agent would: open the folder in a mail client to look. Messages hold
    personal data: files 0600, the folders made for them 0700."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            private_dir(path / sub)
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    async def send(self, message: Message, *, before: Before = None) -> Outcome:
        if before is not None:
            await before()
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(_unique)}.{self._host}"
        tmp = self.path / "tmp" / name
        try:
            write_private(tmp, _local_copy(message), exclusive=True)
            tmp.rename(self.path / "new" / name)
        except OSError as exc:
            return Outcome("deferred", f"maildir: {exc.strerror or exc}")
        return Outcome("sent", f"250 delivered to maildir {self.path}")

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"maildir:{self.path}"


class FileTransport:
    """Each message becomes PATH/<message-id>.eml (0600, in a folder made 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path)

    async def send(self, message: Message, *, before: Before = None) -> Outcome:
        if before is not None:
            await before()
        target = self.path / f"{message.message_id.replace('/', '_')}.eml"
        try:
            write_private(target, _local_copy(message))
        except OSError as exc:
            return Outcome("deferred", f"file: {exc.strerror or exc}")
        return Outcome("sent", f"250 written to {target}")

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"file:{self.path}"


# -- SMTP ----------------------------------------------------------------------------------

def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(str(text).split())}".strip()


class _Connection:
    """A place in the pool: a session, or none yet (opened at its first message)."""

    def __init__(self) -> None:
        self.session: Session | None = None


class SmtpTransport:
    """A pool of reused SMTP connections to the first relay that answers."""

    RETRY_DOWN_RELAY = 60.0  # seconds before a relay that failed to connect is tried again

    def __init__(self, relays: list[Relay], *, password: str | None, connections: int,
                 per_connection: int, timeout: float, helo_name: str | None = None) -> None:
        self.relays = relays
        self.helo_name = helo_name
        self._password = password
        self._per_connection = max(1, per_connection)
        self._timeout = timeout
        self._pool: asyncio.Queue[_Connection] = asyncio.Queue()
        for _ in range(max(1, connections)):
            self._pool.put_nowait(_Connection())
        self._down_until = [0.0] * len(relays)
        self._contexts: dict[str | None, ssl.SSLContext] = {}

    def describe(self) -> str:
        return ", ".join(r.describe() for r in self.relays)

    def _context(self, cafile: str | None) -> ssl.SSLContext:
        if cafile not in self._contexts:
            try:
                self._contexts[cafile] = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"Cannot read the CA file {cafile}: {exc}") from None
        return self._contexts[cafile]

    async def _connect(self, message: Message) -> aiosmtplib.SMTP:
        errors = []
        helo = _ascii_host(self.helo_name or message.envelope_from.rpartition("@")[2])
        now = time.monotonic()
        order = sorted(range(len(self.relays)), key=lambda i: (self._down_until[i] > now, i))
        for index in order:
            relay = self.relays[index]
            client = aiosmtplib.SMTP(
                hostname=relay.host, port=relay.port, use_tls=relay.implicit_tls,
                start_tls=relay.starttls if not relay.implicit_tls else False,
                tls_context=self._context(relay.cafile)
                if relay.implicit_tls or relay.starttls else None,
                timeout=self._timeout, local_hostname=helo)
            try:
                await client.connect()
                if client.is_ehlo_or_helo_needed:  # now, not in the first (paced) send
                    await client.ehlo()
                if relay.user:
                    await client.login(relay.user, self._password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                client.close()
                raise _Fatal(f"{relay.describe()}: login refused: "
                             f"{_reply(exc.code, exc.message)}") from None
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                client.close()
                self._down_until[index] = time.monotonic() + self.RETRY_DOWN_RELAY
                errors.append(f"{relay.describe()}: {_describe(exc)}")
                continue
            self._down_until[index] = 0.0
            return client
        raise _Unreachable("; ".join(errors))

    async def send(self, message: Message, *, before: Before = None) -> Outcome:
        conn = await self._pool.get()
        try:
            return await self._send(conn, message, before)
        except asyncio.CancelledError:  # cut off anywhere in a transaction: not reused
            self._drop(conn)
            raise
        finally:
            # Back in the pool on the event loop's next turn, after the caller has seen
            # this outcome: put back now, the next sender waiting for it ran first, and
            # began its transaction before the outcome that pauses the campaign (the
            # 41st refusal) was counted: one refusal more than the pause allows.
            asyncio.get_running_loop().call_soon(self._pool.put_nowait, conn)

    async def _send(self, conn: _Connection, message: Message, before: Before) -> Outcome:
        if conn.session is not None and (conn.session.sent >= self._per_connection
                                         or not conn.session.connected):
            await conn.session.quit()
            conn.session = None
        if conn.session is None:
            try:
                conn.session = Session(await self._connect(message), self._timeout)
            except _Unreachable as exc:
                return Outcome("deferred", f"no relay reachable: {exc}")
            except _Fatal as exc:
                return Outcome("failed", str(exc))
        if before is not None:
            await before()
        session = conn.session
        try:
            reply = await session.send(message)
        except Unsendable as exc:  # nothing was written: the connection goes on
            return Outcome("failed", f"not sent: {exc}")
        except ReplyLost as exc:
            self._drop(conn)
            return Outcome("unknown", f"no reply after the end of the message ({exc}): "
                                      "it may have arrived, so it is not resent")
        except aiosmtplib.SMTPRecipientRefused as exc:
            return await self._refused(conn, exc.code, exc.message, stage="rcpt")
        except aiosmtplib.SMTPDataError as exc:
            return await self._refused(conn, exc.code, exc.message, stage="data")
        except aiosmtplib.SMTPSenderRefused as exc:
            return await self._refused(conn, exc.code, exc.message, stage="mail")
        except aiosmtplib.SMTPResponseException as exc:
            return await self._refused(conn, exc.code, exc.message, stage="other")
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self._drop(conn)
            return Outcome("deferred", f"connection lost: {_describe(exc)}")
        except Exception as exc:  # noqa: BLE001 - a fault of ours, in this message only
            # The transaction is in an unknown state: the connection is not reused (the
            # next message would meet "503 nested MAIL" or be taken as this one's data).
            self._drop(conn)
            what = f"{type(exc).__name__}: {_describe(exc)}"
            if session.data_sent:
                return Outcome("unknown", f"internal error after the end of the message "
                                          f"({what}): it may have arrived")
            return Outcome("failed", f"not sent: internal error ({what})")
        session.sent += 1
        return Outcome("sent", _reply(reply.code, reply.message))

    async def _refused(self, conn: _Connection, code: int, text: str,
                       stage: str) -> Outcome:
        reply = _reply(code, text)
        if code == 421 or code < 400:  # 421: the server is closing the connection
            self._drop(conn)
            return Outcome("deferred", reply)
        try:  # the connection stays usable after a refusal: reset the transaction
            assert conn.session is not None
            await conn.session.reset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError, AssertionError):
            self._drop(conn)
        if code < 500:
            return Outcome("deferred", reply)
        if stage == "data" and code <= 504:  # a syntax error ("500 Line too long"): our
            return Outcome("failed", reply)   # message is at fault, not the address
        return Outcome("bounced" if stage in ("rcpt", "data") else "failed", reply)

    def _drop(self, conn: _Connection) -> None:
        if conn.session is not None:
            conn.session.close()
        conn.session = None

    async def close(self) -> None:
        while not self._pool.empty():
            conn = self._pool.get_nowait()
            if conn.session is not None:
                await conn.session.quit()
                conn.session = None


class _Unreachable(Exception):
    pass


class _Fatal(Exception):
    pass


def _ascii_host(name: str) -> str:
    """EHLO is ASCII: an internationalised domain as its A-labels (xn--…)."""
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc.code, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({exc.verify_message})"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
