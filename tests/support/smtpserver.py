"""A real SMTP server on loopback for the delivery tests, with fault injection.

`SmtpServer` runs aiosmtpd on its own event loop in a background thread, listens on
127.0.0.1 (a free port unless one is given) and records every message it accepts. Faults
(refused recipients, refused or stalled DATA, dropped connections, busy greetings, a limit
of messages per connection) can be switched on and off while it runs, from any thread.

    from tests.support.smtpserver import SmtpServer

    with SmtpServer(starttls=True, auth=("user", "secret")) as server:
        server.reply_to_rcpt("gone@example.be", 550, "5.1.1 No such user")
        server.reply_to_data(451, "4.7.1 Try later", times=1)  # the first DATA only
        send_campaign(host=server.host, port=server.port, cafile=server.cafile, ...)
        assert server.recipients() == ["an@example.be"]  # once, after one retry
        assert server.wait_idle()  # the engine closed its connections

What a client sees and what is recorded:

* A message is in `received` (one `Received` per accepted DATA, with only the recipients
  accepted at RCPT) *before* the server sends its 250, so once a client has seen the 250 the
  message can be inspected without waiting. A message refused at DATA, or whose connection
  is dropped or closed before the end of its data, is not recorded; `drop_after_data` records
  the message and then hangs up without the 250 (the reply a client can lose, RFC 1047).
* `session` numbers connections 1, 2, ... in the order they were opened (a connection keeps
  its number across STARTTLS); `sessions` is how many were opened, `active_sessions` how many
  are open now and `max_concurrent_sessions` the most that were open at once;
  `wait_idle()` waits for every connection to be closed.
* `starttls=True` offers STARTTLS with a self-signed certificate for localhost/127.0.0.1/::1
  (`cafile` is its PEM; `client_context()` gives an `ssl.SSLContext` that trusts it);
  `implicit_tls=True` speaks TLS from the first byte, like port 465; `require_starttls`
  implies `starttls`. A certificate is made at every `start()`, TLS or not, so `cafile` is
  a real file while the server runs (`stop()` removes it).
* `auth=(user, password)` offers AUTH PLAIN and LOGIN and answers MAIL with 530 until the
  client has authenticated. When STARTTLS is offered, AUTH is only offered (and accepted)
  after STARTTLS, like a real submission server; without TLS, or with implicit TLS, it is
  offered at once. Without `auth`, AUTH is not advertised.
* PIPELINING (RFC 2920) is advertised, like Postfix does, unless `pipelining=False`:
  aiosmtpd answers pipelined commands in order.
* `hold_data()` leaves every end of DATA unanswered, the message not yet recorded, until
  `release_data(n)` lets n of them go on (`release_data()`: all, and stops holding); `held`
  is how many wait now and `wait_held(n)` waits until that many do. A test uses it to
  catch a sender with deliveries in flight, at a moment it chooses instead of one it
  guesses with a sleep.
* Faults with `times` fire for that many matching events and then expire (`times=None`:
  until `clear_faults()`). When several faults of one kind match, the oldest one fires.
  `match` is an address or "@domain" (that domain only, not its subdomains), compared
  case-insensitively. `drop_after` and `max_messages_per_session` count the messages
  accepted on the connection so far.
* As RFC 5321 allows, it refuses (500, after the data) a message with a line over 999
  octets as sent (998 plus a stuffed dot); messages may be up to 64 MiB. SMTPUTF8 and
  8BITMIME are advertised, unless `smtputf8=False`: then, like a strict relay without
  RFC 6531, it refuses a MAIL with the SMTPUTF8 parameter (501) and any command with a
  byte outside ASCII (500). The null sender `MAIL FROM:<>` is recorded as "<>".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Received", "SmtpServer"]

log = logging.getLogger(__name__)

DATA_SIZE_LIMIT = 64 * 1024 * 1024
SERVER_NAME = "localhost"

_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>")


@dataclass(frozen=True)
class Received:
    """One accepted message."""

    envelope_from: str
    recipients: tuple[str, ...]  # the RCPT TO addresses accepted for this message
    data: bytes  # as received, CRLF line ends, dot-stuffing undone
    at: float  # time.monotonic() when the DATA was accepted
    session: int  # the number of the connection it came in on (1, 2, ...)


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    code: int = 0
    text: str = ""
    match: str | None = None
    seconds: float = 0.0
    messages: int = 0

    @property
    def reply(self) -> str:
        return _reply(self.code, self.text)


def _reply(code: int, text: str) -> str:
    if not text:
        text = {2: "OK", 4: "Temporary failure, try again later"}.get(code // 100,
                                                                      "Permanent failure")
    return f"{code} {text}"


def _check_code(code: int, low: int = 200) -> None:
    if not low <= code <= 599:
        raise ValueError(f"not an SMTP reply code here: {code}")


def _check_times(times: int | None) -> None:
    if times is not None and times < 0:
        raise ValueError("times must be None (forever) or a count >= 0")


def _pattern(match: str) -> str:
    """A full address, or "@domain" for every address at that domain (case-insensitive)."""
    if "@" not in match or (not match.startswith("@") and match.endswith("@")):
        raise ValueError(f"match must be an address or '@domain', not {match!r}")
    return match.casefold()


def _matches(pattern: str, address: str) -> bool:
    address = address.casefold()
    if pattern.startswith("@"):
        return address.rpartition("@")[2] == pattern[1:]
    return address == pattern


def _make_certificate(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailer test SMTP server")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


async def _hang_up(conn: _Connection) -> None:
    """Close the connection abruptly, without a reply, and wait to be cancelled.

    Aborting the transport makes asyncio call `connection_lost`, in which aiosmtpd cancels
    the task running this handler; waiting for that keeps aiosmtpd from writing a reply to
    the dead transport (and from leaving a "Task exception was never retrieved")."""
    if conn.transport is not None:
        conn.transport.abort()
    await asyncio.get_running_loop().create_future()


async def _reply_and_close(conn: _Connection, reply: str) -> None:
    """Send `reply`, close the connection (gracefully), and wait to be cancelled."""
    with contextlib.suppress(ConnectionError):
        await conn.push(reply)
    if conn.transport is not None:
        conn.transport.close()
    await asyncio.get_running_loop().create_future()


class _Session(Session):
    # A plain attribute: aiosmtpd's property logs a deprecation warning at every AUTH.
    login_data: Any = None


class _Connection(SMTP):
    """aiosmtpd's protocol for one connection, plus its number and its message count.

    (aiosmtpd makes a new `Session` after STARTTLS, so per-connection state lives here.
    Attribute names must not start with `smtp_` or `auth_`: aiosmtpd treats those as
    commands and AUTH mechanisms.)"""

    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        self.owner = owner
        self.number = 0
        self.delivered = 0
        self._gone = False
        super().__init__(owner._handler, **kwargs)

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd runs every path through the email header parser (~25 µs an address):
        # take the plain <local@domain> ones directly, leave the rest to it.
        match = _PLAIN_PATH.match(arg)
        if match is None or self.local_part_limit:
            return super()._getaddr(arg)
        return match.group(1), arg[match.end():]

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        # aiosmtpd's DATA reads the message a line at a time in Python (about a thousand
        # 30 kB newsletters a second here). This reads up to each ".<CRLF>" instead, 3-4
        # times faster, and keeps its replies: 552 over the size limit, 500 for a line
        # over 999 octets as sent, and the same dot-unstuffing.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if self.owner._take("drop_during_data") is not None:
            await _hang_up(self)  # before the 354: the client has sent no data yet
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        line_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = DATA_SIZE_LIMIT + 65536  # type: ignore[attr-defined]
        data = bytearray()
        size, too_much, tail = 0, False, b"\r\n"  # DATA's CRLF precedes the first line
        try:
            while not tail.endswith(b"\r\n.\r\n"):
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as error:
                    chunk = await reader.read(error.consumed)
                    too_much = True
                except asyncio.IncompleteReadError:
                    await _hang_up(self)
                size += len(chunk)
                too_much = too_much or size - 3 > (self.data_size_limit or size)
                if too_much:
                    data.clear()
                else:
                    data += chunk
                tail = (tail[-2:] + chunk)[-5:]
        finally:
            reader._limit = line_limit  # type: ignore[attr-defined]
        if too_much:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        del data[-3:]
        if data and max(map(len, data.split(b"\r\n"))) > self.line_length_limit - 2:
            self._set_post_data_state()
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        content = data.replace(b"\r\n.", b"\r\n")
        if content.startswith(b"."):
            del content[0]
        self.envelope.content = self.envelope.original_content = bytes(content)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call, after STARTTLS
            self.number = self.owner._opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._gone:
            self._gone = True
            self.owner._lost(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # aiosmtpd has no hook for the greeting: a greet_with fault answers instead.
        greeting = self.owner._take("greet")
        if greeting is None:
            await super()._handle_client()
        else:
            await _reply_and_close(self, greeting.reply)


class _Handler:
    """The aiosmtpd handler: every `handle_*` attribute is taken as a hook."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(self, conn: _Connection, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to the hook when there is one
        with self.owner._lock:
            self.owner.ehlo_names.append(hostname)
        if self.owner._auth is None:
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        if self.owner.pipelining:  # aiosmtpd reads commands in order: it can (RFC 2920)
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, conn: _Connection, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        owner = self.owner
        if owner._auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if owner._take("drop_after", lambda f: conn.delivered >= f.messages) is not None:
            await _hang_up(conn)
        limit = owner._per_session
        if limit is not None and conn.delivered >= limit:
            await _reply_and_close(conn, "421 4.7.0 Too many messages")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, conn: _Connection, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        fault = self.owner._take("rcpt", lambda f: _matches(f.match or "", address))
        if fault is not None and not 200 <= fault.code < 300:
            return fault.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK" if fault is None else fault.reply

    async def handle_DATA(self, conn: _Connection, session: Session,
                          envelope: Envelope) -> str:
        owner = self.owner
        await owner._wait_until_released()
        stall = owner._take("stall")
        if stall is not None:
            await asyncio.sleep(stall.seconds)
        fault = owner._take("data", lambda f: f.match is None or any(
            _matches(f.match, r) for r in envelope.rcpt_tos))
        if fault is not None and not 200 <= fault.code < 300:
            return fault.reply
        owner._record(conn, envelope)
        if owner._take("drop_after_data", lambda f: f.match is None or any(
                _matches(f.match, r) for r in envelope.rcpt_tos)) is not None:
            await _hang_up(conn)  # taken and recorded, but the 250 never leaves
        return "250 OK" if fault is None else fault.reply

    async def handle_exception(self, error: Exception) -> str:
        # A client that refuses the certificate during STARTTLS is expected in the tests;
        # anything else is a bug here and should be loud.
        if isinstance(error, TLSSetupException):
            log.info("TLS handshake after STARTTLS failed: %r", error.__cause__)
        else:
            log.exception("SmtpServer: error while handling a command")
        return f"500 Error: ({type(error).__name__}) {error}"

    def authenticate(self, conn: _Connection, session: Session, envelope: Envelope,
                     mechanism: str, data: Any) -> AuthResult:
        auth = self.owner._auth
        ok = (auth is not None and isinstance(data, LoginPassword)
              and (data.login, data.password) == (auth[0].encode(), auth[1].encode()))
        # handled=False makes aiosmtpd send the 535 itself (handled=True, the default,
        # would send nothing and leave the client waiting).
        return AuthResult(success=ok, handled=False)


class SmtpServer:
    """A recording SMTP server with fault injection; see the module docstring."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, starttls: bool = False,
                 require_starttls: bool = False, implicit_tls: bool = False,
                 auth: tuple[str, str] | None = None, pipelining: bool = True,
                 smtputf8: bool = True) -> None:
        if implicit_tls and (starttls or require_starttls):
            raise ValueError("implicit_tls and STARTTLS exclude each other")
        self.host = host
        self.port = port
        self.starttls = starttls or require_starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self._auth = auth
        self.pipelining = pipelining  # advertised in the EHLO reply
        self.smtputf8 = smtputf8  # SMTPUTF8 advertised and UTF-8 commands taken
        self.cafile = ""
        self.received: list[Received] = []
        self.ehlo_names: list[str] = []  # what each EHLO said, in order
        self.sessions = 0
        self.max_concurrent_sessions = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[_Fault] = []
        self._per_session: int | None = None
        self._holding = False  # hold_data(): ends of DATA wait for release_data()
        self._permits = 0  # held messages release_data() let go that have not gone yet
        self._held = 0  # ends of DATA waiting now
        self._live: set[_Connection] = set()
        self._handler = _Handler(self)
        self._tls: ssl.SSLContext | None = None
        self._tmp: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # -- running ------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        if self._thread is not None:
            raise RuntimeError("the SMTP server is already running")
        self._tmp = tempfile.mkdtemp(prefix="mailer-smtp-")
        self.cafile, keyfile = _make_certificate(Path(self._tmp))
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(self.cafile, keyfile)
        self._loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,),
                                        name=f"SmtpServer-{self.host}", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = self._loop = self._server = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            self._connection, self.host, self.port,
            ssl=self._tls if self.implicit_tls else None, backlog=512)
        ports = {sock.getsockname()[1] for sock in self._server.sockets}
        if len(ports) > 1:  # a name like "localhost" with port=0: one free port per address
            self._server.close()
            raise ValueError(f"give an IP address as host, not {self.host!r}, or a port")
        self.port = ports.pop()

    def _connection(self) -> _Connection:
        return _Connection(
            self, hostname=SERVER_NAME, data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=self.smtputf8, loop=self._loop,
            tls_context=self._tls if self.starttls else None,
            require_starttls=self.require_starttls,
            # aiosmtpd only counts STARTTLS as TLS: with implicit TLS it must not insist.
            auth_require_tls=self.starttls,
            authenticator=self._handler.authenticate)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        with self._lock:
            live = list(self._live)
        for conn in live:
            if conn.transport is not None:
                conn.transport.abort()
        for _ in range(10):  # let connection_lost run (two hops for TLS)
            await asyncio.sleep(0)
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with self._changed:
            self._live.clear()
            self._changed.notify_all()

    def client_context(self) -> ssl.SSLContext:
        """A client `ssl.SSLContext` that verifies this server's certificate."""
        return ssl.create_default_context(cafile=self.cafile)

    # -- what arrived ---------------------------------------------------------------------

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def recipients(self) -> list[str]:
        with self._lock:
            return [r for m in self.received for r in m.recipients]

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._live)

    @property
    def held(self) -> int:
        """How many ends of DATA wait for `release_data` now."""
        with self._lock:
            return self._held

    def wait_held(self, n: int, timeout: float = 60.0) -> bool:
        """Wait until at least `n` ends of DATA are held; False if not after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._held >= n, timeout)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no connection is open; False if some still are after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._live, timeout)

    def _opened(self, conn: _Connection) -> int:
        with self._lock:
            self.sessions += 1
            self._live.add(conn)
            self.max_concurrent_sessions = max(self.max_concurrent_sessions, len(self._live))
            return self.sessions

    def _lost(self, conn: _Connection) -> None:
        with self._changed:
            self._live.discard(conn)
            self._changed.notify_all()

    def _record(self, conn: _Connection, envelope: Envelope) -> None:
        assert envelope.mail_from is not None and envelope.original_content is not None
        message = Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                           envelope.original_content, time.monotonic(), conn.number)
        with self._lock:
            self.received.append(message)
            conn.delivered += 1

    async def _wait_until_released(self) -> None:
        """While holding: wait (counted in `held`) until a release lets this one go."""
        with self._changed:
            if not self._holding:
                return
            self._held += 1
            self._changed.notify_all()
        try:
            while True:
                with self._lock:
                    if not self._holding:
                        return
                    if self._permits:
                        self._permits -= 1
                        return
                await asyncio.sleep(0.005)
        finally:
            with self._changed:
                self._held -= 1
                self._changed.notify_all()

    # -- faults ---------------------------------------------------------------------------

    def _add(self, fault: _Fault) -> None:
        _check_times(fault.remaining)
        if fault.remaining == 0:
            return
        with self._lock:
            self._faults.append(fault)

    def _take(self, kind: str, test: Callable[[_Fault], bool] | None = None) -> _Fault | None:
        """The oldest live fault of `kind` that passes `test`, counted as used."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.kind == kind and (test is None or test(fault)):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            del self._faults[i]
                    return fault
        return None

    def reply_to_rcpt(self, match: str, code: int, text: str = "",
                      times: int | None = None) -> None:
        """Answer RCPT TO for `match` ("a@b.example" or "@b.example") with `code text`."""
        _check_code(code)
        self._add(_Fault("rcpt", times, code, text, match=_pattern(match)))

    def reply_to_data(self, code: int, text: str = "", times: int | None = None,
                      match: str | None = None) -> None:
        """Answer the end of DATA with `code text` (only if a recipient matches `match`)."""
        _check_code(code)
        self._add(_Fault("data", times, code, text,
                         match=None if match is None else _pattern(match)))

    def drop_after(self, messages: int, times: int | None = 1) -> None:
        """Once a connection has delivered `messages`, hang up at its next MAIL FROM."""
        if messages < 0:
            raise ValueError("messages must be >= 0")
        self._add(_Fault("drop_after", times, messages=messages))

    def drop_during_data(self, times: int | None = 1) -> None:
        """Hang up at DATA, before the 354: the client never sent the message's data (so
        it knows it was not taken); nothing is recorded."""
        self._add(_Fault("drop_during_data", times))

    def drop_after_data(self, times: int | None = 1, match: str | None = None) -> None:
        """Take a message (it is recorded), then hang up before the 250 goes out (only if
        a recipient matches `match`): the client cannot know that it arrived."""
        self._add(_Fault("drop_after_data", times,
                         match=None if match is None else _pattern(match)))

    def greet_with(self, code: int, text: str = "", times: int | None = 1) -> None:
        """Greet the next connections with `code text` (e.g. 421), then close them."""
        _check_code(code, low=400)
        self._add(_Fault("greet", times, code, text))

    def stall(self, seconds: float, times: int | None = 1) -> None:
        """Wait `seconds` before answering the end of DATA."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._add(_Fault("stall", times, seconds=seconds))

    def max_messages_per_session(self, n: int | None) -> None:
        """After `n` delivered messages, answer MAIL FROM with 421 and close (None: no limit)."""
        if n is not None and n < 0:
            raise ValueError("n must be None or >= 0")
        with self._lock:
            self._per_session = n

    def hold_data(self) -> None:
        """From now on, leave every end of DATA unanswered (and the message unrecorded)
        until `release_data` lets it go."""
        with self._lock:
            self._holding, self._permits = True, 0

    def release_data(self, n: int | None = None) -> None:
        """Let `n` held messages go on (those held now first, then later ones, while
        holding); None: every one, and stop holding."""
        if n is not None and n < 0:
            raise ValueError("n must be None or >= 0")
        with self._lock:
            if n is None:
                self._holding, self._permits = False, 0
            else:
                self._permits += n

    def clear_faults(self) -> None:
        """Every fault off, the limit per connection too; held messages go on."""
        with self._lock:
            self._faults.clear()
            self._per_session = None
            self._holding, self._permits = False, 0
