"""Where returned mail is read from: Maildir, mbox, IMAP, POP3 or standard input, by URL.

    maildir:/var/mail/bounces        new/ and cur/; done -> the Maildir++ folder .processed
    mbox:returns.mbox                locked while read; done -> returns.mbox.processed
    imaps://bounces%40example.be@mail.example.be/INBOX    TLS from the first byte, verified
    imap://bounces%40example.be@mail.example.be/INBOX     STARTTLS (see "Plain text" below)
    pop3s://bounces%40example.be@mail.example.be          POP3 over TLS; pop3:// uses STLS
    -                                one message on standard input (an MTA's pipe)
    …?cafile=/etc/ssl/our-ca.pem     trust this CA for the server's certificate
    …?tls=none                       no TLS at all, even to another host: only when said so
    …?after=delete                   this source deletes what is done (overrides `after`)

`open_source()` connects, logs in and opens the folder at once, so every configuration or
network problem is a `MailerError` with one plain line and a hint before anything is read
(`SourceError.temporary` tells a server that may answer later from one that never will).
The password is never part of the URL (refused: it belongs in the secrets file) and never
part of a message. Shaped so because:

* Streaming. A return mailbox can hold 100,000 messages, so nothing is loaded whole: a
  Maildir is walked with os.scandir (mailbox.Maildir would first list every file), IMAP
  asks for the UIDs and sizes, then for the bodies in batches bounded by count and bytes,
  POP3 retrieves one message at a time, an mbox is read through the stdlib's table of
  offsets (a few numbers a message) one message at a time.
* Per-message completion. The caller calls `done()` right after it has recorded a
  message, so a crash leaves at most that one message to be read again; the caller
  counts it once (idempotency is its job). What cannot be completed at once is completed
  at `close()`: POP3 deletes at QUIT (RFC 1939), an mbox is rewritten once.
* One bad message never stops the others: one that cannot be fetched is logged and
  skipped (it stays where it is); `aside()` moves a malformed one into the failed folder.
* POP3 has no folders, so "move to processed" cannot be done: a POP3 source refuses
  after="move" (say ?after=delete, or --keep) rather than silently deleting mail the
  operator asked to keep. `aside()` on POP3 leaves the message and logs it.
* Plain text. imaps/pop3s verify the certificate (system CAs, or `cafile`); imap/pop3
  upgrade with STARTTLS/STLS whenever the server offers it, verified the same way. A
  server that offers no TLS is accepted only when it is this machine (the connection's
  peer address is loopback); for any other host, sending the password in clear needs
  `?tls=none` in the URL, spelled as for the SMTP transport. `verify_tls=False` only
  stops checking the certificate (the link stays encrypted); it never allows clear text.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import imaplib
import ipaddress
import logging
import mailbox
import os
import poplib
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from mailer.errors import ConfigError, MailerError

__all__ = ["Incoming", "Source", "SourceError", "open_source"]

log = logging.getLogger("mailer.feedback")

After = Literal["move", "delete"]
SCHEMES = "maildir:PATH, mbox:PATH, imap://, imaps://, pop3://, pop3s:// or - (standard input)"
DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
BATCH_MESSAGES = 100  # IMAP bodies fetched per command...
BATCH_BYTES = 8 << 20  # ...and at most this many bytes of them (a larger one goes alone)
SIZES_PER_COMMAND = 500  # UIDs whose sizes are asked at once
MAX_RECONNECTS = 10  # IMAP: a server that hangs up more often than this is in trouble
STALE_DOTLOCK = 1024  # seconds: an mbox dot-lock this old belongs to a reader that died


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as read: `id` is stable within its source and safe to log."""

    id: str  # maildir file name, UIDVALIDITY:UID, POP3 UIDL, mbox index:hash, "stdin"
    data: bytes  # the raw message


class Source(Protocol):
    name: str  # the URL without query or password: safe to print and log

    def __iter__(self) -> Iterator[Incoming]: ...
    def done(self, item: Incoming) -> None: ...
    def aside(self, item: Incoming, why: str) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Source: ...
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class SourceError(MailerError):
    """A return source cannot be opened or read. `temporary`: it may work later (the
    server is unreachable or busy), as opposed to a refused password or a missing folder."""

    def __init__(self, message: str, *, hint: str | None = None,
                 temporary: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.temporary = temporary


def open_source(url: str, *, password: str | None = None, keep: bool = False,
                after: After = "move", processed: str = "processed",
                failed: str = "failed", cafile: str | None = None, verify_tls: bool = True,
                timeout: float = 60.0, stdin: BinaryIO | None = None) -> Source:
    """Open the source named by `url` (see the module docstring). With `keep`, nothing
    is moved or deleted; otherwise `done()` moves to `processed` or deletes (`after`)
    and `aside()` moves to `failed`. `stdin` replaces sys.stdin.buffer for `-`."""
    if url.strip() == "-":
        return StdinSource(stdin)
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if after not in ("move", "delete"):
        raise ConfigError(f"after must be move or delete, not {after!r}.")
    if scheme in ("maildir", "mbox") and colon:
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ConfigError(f"The source {url!r} names no path.")
        cls = MaildirSource if scheme == "maildir" else MboxSource
        return cls(Path(path), name=f"{scheme}:{path}", keep=keep, after=after,
                   processed=processed, failed=failed)
    if scheme not in DEFAULT_PORTS or not colon:
        raise ConfigError(f"Unknown kind of source: {_redact(url)!r}.", hint=f"Use {SCHEMES}.")
    server = _parse_server(url, cafile=cafile, after=after)
    if password is None:
        raise ConfigError(f"No password for {server.name}.",
                          hint="Put the password of this mailbox in the secrets file.")
    context = _tls_context(server.cafile, verify_tls)
    if scheme.startswith("imap"):
        return ImapSource(server, password, context, keep=keep, processed=processed,
                          failed=failed, timeout=timeout)
    return Pop3Source(server, password, context, keep=keep, timeout=timeout)


# --- URLs and connections ---


@dataclass(frozen=True)
class _Server:
    name: str
    scheme: str
    host: str
    port: int
    user: str
    folder: str
    cafile: str | None
    plain: bool  # ?tls=none
    after: After


def _redact(url: str) -> str:
    """The URL with any password in it replaced by ***."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url)


def _parse_server(url: str, *, cafile: str | None, after: After) -> _Server:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"The source {_redact(url)!r} is not a valid URL.",
                          hint="Write it as imaps://USER@HOST:PORT/FOLDER.") from None
    if parts.password is not None:
        raise ConfigError("The mailbox password does not belong in the source URL.",
                          hint="Remove it from the URL and put it in the secrets file.")
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ConfigError(f"The source {url!r} names no host.")
    if not parts.username:
        raise ConfigError(f"The source {url!r} names no user.",
                          hint=f"Write it as {scheme}://USER@{parts.hostname}/… (an @ in "
                               "the user name is written %40).")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"cafile", "tls", "after"}
    if unknown:
        raise ConfigError(f"Unknown option in the source URL: {', '.join(sorted(unknown))}.",
                          hint="Known: cafile=PATH, tls=none, after=move|delete.")
    if options.get("tls", "none") != "none" or (scheme.endswith("s") and "tls" in options):
        raise ConfigError("The source option tls can only be tls=none, and only for "
                          "imap:// or pop3://.")
    chosen = options.get("after", after)
    if chosen not in ("move", "delete"):
        raise ConfigError("The source option after can only be after=move or after=delete.")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if scheme.startswith("pop3") and folder != "INBOX":
        raise ConfigError(f"POP3 has no folders: drop /{folder} from the source {url!r}.")
    name = f"{scheme}://{parts.netloc}" + (f"/{parts.path.lstrip('/')}"
                                            if scheme.startswith("imap") else "")
    return _Server(name=name, scheme=scheme, host=parts.hostname,
                   port=port or DEFAULT_PORTS[scheme], user=unquote(parts.username),
                   folder=folder, cafile=options.get("cafile", cafile),
                   plain="tls" in options, after=chosen)  # type: ignore[arg-type]


def _tls_context(cafile: str | None, verify: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Cannot read the CA file {cafile}: {_said(exc)}.") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _said(exc: BaseException | bytes | str) -> str:
    """What a server or the OS said, on one line (imaplib and poplib carry bytes)."""
    value = exc.args[0] if isinstance(exc, BaseException) and exc.args else exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        value = exc.verify_message or exc.reason or "verification failed"
    elif isinstance(exc, OSError) and exc.strerror:
        value = exc.strerror
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        value = ""
    text = re.sub(r"^(-ERR |command: \w+ => )", "", " ".join(str(value).split()))
    text = re.sub(r"\s*\(\d+\.\d+ \+ [\d.+ ]*secs\)", "", text).rstrip(".")  # dovecot's timing
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "no answer")


def _connect_error(server: _Server, exc: BaseException) -> SourceError:
    """The one-line error for a failure before login."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError(
            f"{server.name}: the server's certificate is not trusted ({_said(exc)}).",
            hint="If the server uses a private CA, give its certificate with "
                 "?cafile=PATH; check that the host name is the one in the certificate.")
    if isinstance(exc, ssl.SSLError):
        return SourceError(f"{server.name}: TLS failed ({_said(exc)}).",
                           hint="Check the port: imaps is usually 993, pop3s 995.")
    if isinstance(exc, OSError):
        return SourceError(f"Cannot reach {server.name}: {_said(exc)}.", temporary=True,
                           hint="Check the host name and port, and that this machine "
                                "may connect to it.")
    return SourceError(f"{server.name}: the server said: {_said(exc)}.")


def _login_error(server: _Server, exc: BaseException) -> SourceError:
    return SourceError(f"{server.name}: login refused ({_said(exc)}).",
                       hint="Check the user name in the URL and the password in the "
                            "secrets file.")


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def _clear_text_allowed(server: _Server, sock: socket.socket) -> None:
    """Raise unless a password may go in clear: to this machine, or with ?tls=none."""
    if server.plain:
        return
    if _is_loopback(sock.getpeername()[0]):
        return
    raise SourceError(
        f"{server.name}: the server offers no TLS, and the password would be sent in "
        "clear.", hint=f"Use {server.scheme}s://, enable TLS on the server, or add "
                       "?tls=none to the URL if the network between is trusted.")


class _Base:
    name: str

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _aside_log(self, item: Incoming, why: str, where: str) -> None:
        log.warning("%s: message %s set aside (%s): %s", self.name, item.id, why, where)


# --- Maildir ---


class MaildirSource(_Base):
    """A Maildir read from new/ and cur/; folders are Maildir++ subfolders (`.name`)."""

    def __init__(self, root: Path, *, name: str, keep: bool, after: After, processed: str,
                 failed: str) -> None:
        self.name, self.root, self.keep, self.after = name, root, keep, after
        self._folders = {"processed": processed, "failed": failed}
        self._read: dict[str, str] = {}  # messages read and not yet settled: their sub
        self._made: set[Path] = set()  # target folders known to exist
        if not ((root / "new").is_dir() and (root / "cur").is_dir()):
            raise SourceError(f"{name}: not a Maildir (no new/ and cur/ folders in {root}).",
                              hint="Give the folder that holds new/, cur/ and tmp/.")

    def __iter__(self) -> Iterator[Incoming]:
        for sub in ("new", "cur"):
            with os.scandir(self.root / sub) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        with open(entry.path, "rb") as file:
                            data = file.read()
                    except (FileNotFoundError, IsADirectoryError):
                        continue  # taken by another reader meanwhile
                    except OSError as exc:
                        log.warning("%s: message %s cannot be read (%s): skipped",
                                    self.name, entry.name, _said(exc))
                        continue
                    self._read[entry.name] = sub
                    yield Incoming(entry.name, data)

    def _path(self, item: Incoming) -> tuple[Path, str] | None:
        for sub in ("new", "cur"):
            path = self.root / sub / item.id
            if path.exists():
                return path, sub
        return None

    def _move(self, item: Incoming, folder: str) -> None:
        target = self.root / ("." + self._folders[folder].replace("/", "."))
        sub = self._read.pop(item.id, None)
        if sub is not None and target in self._made:
            # A message read, where it was read, to a folder made before: one rename (no
            # stat); if it moved meanwhile, it is looked for as below.
            try:
                os.replace(self.root / sub / item.id, target / sub / item.id)
                return
            except FileNotFoundError:
                pass
        found = self._path(item)
        if found is None:
            log.info("%s: message %s was already gone", self.name, item.id)
            return
        path, sub = found
        if not (target / sub).is_dir():
            for part in ("tmp", "new", "cur"):
                (target / part).mkdir(mode=0o700, parents=True, exist_ok=True)
            (target / "maildirfolder").touch()
        self._made.add(target)
        os.replace(path, target / sub / item.id)

    def done(self, item: Incoming) -> None:
        if self.keep:
            self._read.pop(item.id, None)
            return
        if self.after == "move":
            self._move(item, "processed")
        elif (found := self._path(item)) is not None:
            self._read.pop(item.id, None)
            found[0].unlink(missing_ok=True)

    def aside(self, item: Incoming, why: str) -> None:
        if self.keep:
            self._read.pop(item.id, None)
            self._aside_log(item, why, "left in place (keep)")
            return
        self._aside_log(item, why, f"moved to .{self._folders['failed']}")
        self._move(item, "failed")


# --- mbox ---


class MboxSource(_Base):
    """An mbox file, locked (fcntl and dot-lock, as mail delivery agents do) from open to
    close. Messages done or set aside are copied to `<mbox>.<folder>` and removed from
    the mbox at close, in one rewrite; a crash before that changes nothing."""

    def __init__(self, path: Path, *, name: str, keep: bool, after: After, processed: str,
                 failed: str) -> None:
        self.name, self.path, self.keep, self.after = name, path, keep, after
        self._folders = {"processed": processed, "failed": failed}
        self._going: dict[int, str | None] = {}  # key -> folder to copy to (None: delete)
        if not path.is_file():
            raise SourceError(f"{name}: there is no file {path}.")
        self._box: mailbox.mbox | None = mailbox.mbox(path, create=False)
        try:
            self._lock(self._box)
        except mailbox.ExternalClashError:
            self._box.close()
            raise SourceError(f"{name}: the file is locked by another program.",
                              temporary=True, hint="Try again in a moment.") from None
        except OSError as exc:
            self._box.close()
            raise SourceError(f"{name}: cannot lock the file ({_said(exc)}).",
                              hint="The folder must be writable for the lock file.") from None

    def _lock(self, box: mailbox.mbox) -> None:
        """mailbox's lock (fcntl, then a dot-lock). A dot-lock outlives a reader that
        died (an fcntl lock does not): when the fcntl lock was free, a dot-lock older
        than STALE_DOTLOCK seconds is removed, as procmail does."""
        try:
            box.lock()
        except mailbox.ExternalClashError as exc:
            if not str(exc).startswith("dot lock"):
                raise  # the fcntl lock: its holder is alive
            dotlock = Path(f"{self.path}.lock")
            try:
                age = time.time() - dotlock.stat().st_mtime
            except FileNotFoundError:
                raise mailbox.ExternalClashError("gone meanwhile") from None
            if age < STALE_DOTLOCK:
                raise
            log.warning("%s: removed a stale lock file (%s, %.0f s old)", self.name,
                        dotlock, age)
            dotlock.unlink(missing_ok=True)
            box.lock()

    def __iter__(self) -> Iterator[Incoming]:
        assert self._box is not None, "closed"
        for key in self._box.iterkeys():
            data = self._box.get_bytes(key)
            yield Incoming(f"{key}:{hashlib.sha1(data).hexdigest()[:12]}", data)

    def done(self, item: Incoming) -> None:
        if not self.keep:
            self._going[_mbox_key(item)] = "processed" if self.after == "move" else None

    def aside(self, item: Incoming, why: str) -> None:
        if self.keep:
            self._aside_log(item, why, "left in place (keep)")
            return
        self._aside_log(item, why, f"moved to {self.path}.{self._folders['failed']}")
        self._going[_mbox_key(item)] = "failed"

    def close(self) -> None:
        box, self._box = self._box, None
        if box is None:
            return
        try:
            for folder in ("processed", "failed"):
                keys = sorted(k for k, f in self._going.items() if f == folder)
                if keys:
                    target = Path(f"{self.path}.{self._folders[folder]}")
                    _append_mbox(target, (box.get_bytes(k) for k in keys))
            for key in self._going:
                box.remove(key)
            if self._going:
                box.flush()
        finally:
            box.unlock()
            box.close()


def _mbox_key(item: Incoming) -> int:
    return int(item.id.partition(":")[0])


def _append_mbox(path: Path, messages: Iterator[bytes]) -> None:
    """Append to an mbox file under an fcntl lock, in the stdlib's (mboxo) format, without
    reading what is there (mailbox.mbox would first index the whole file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "ab") as file:
        os.fchmod(fd, 0o600)  # returned mail holds personal data: its owner's eyes only
        fcntl.lockf(file, fcntl.LOCK_EX)
        try:
            for data in messages:
                stamp = time.asctime(time.gmtime()).encode()
                body = re.sub(rb"(?m)^From ", b">From ", data)
                file.write(b"From MAILER-DAEMON " + stamp + b"\n" + body
                           + (b"" if body.endswith(b"\n") else b"\n") + b"\n")
            file.flush()
        finally:
            fcntl.lockf(file, fcntl.LOCK_UN)


# --- standard input ---


class StdinSource(_Base):
    """One message handed over on standard input (a Postfix alias or pipe transport).
    done() and aside() change nothing: the caller's exit code tells the MTA."""

    name = "-"

    def __init__(self, stream: BinaryIO | None) -> None:
        self._stream = stream
        self._read = False

    def __iter__(self) -> Iterator[Incoming]:
        if self._read:
            return
        self._read = True
        data = (self._stream or sys.stdin.buffer).read()
        if data.strip():
            yield Incoming("stdin", data)
        else:
            log.warning("-: standard input was empty: no message")

    def done(self, item: Incoming) -> None:
        pass

    def aside(self, item: Incoming, why: str) -> None:
        self._aside_log(item, why, "the exit code tells the sender")


# --- IMAP ---


def _quote(folder: str) -> str:
    """An IMAP mailbox name: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out, pending = [], ""
    for ch in folder + "\0":
        if ch != "\0" and not 0x20 <= ord(ch) <= 0x7E:
            pending += ch
            continue
        if pending:
            packed = base64.b64encode(pending.encode("utf-16-be")).rstrip(b"=").decode()
            out.append("&" + packed.replace("/", ",") + "-")
            pending = ""
        if ch != "\0":
            out.append("&-" if ch == "&" else ch)
    name = "".join(out)
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: list[int]) -> str:
    """1,2,3,7 -> 1:3,7"""
    parts, start = [], None
    for i, uid in enumerate(uids):
        start = uid if start is None else start
        if i + 1 == len(uids) or uids[i + 1] != uid + 1:
            parts.append(str(uid) if start == uid else f"{start}:{uid}")
            start = None
    return ",".join(parts)


def personal_prefix(namespace: bytes | None) -> str:
    """The first personal namespace's prefix from a NAMESPACE reply: '(("INBOX." "."))
    NIL NIL' -> 'INBOX.' (Courier, Cyrus); '' where folders live at the top (dovecot)."""
    found = re.match(rb'\s*\(\("((?:[^"\\]|\\.)*)"', namespace or b"")
    return found.group(1).decode("utf-8", "replace") if found else ""


class _ImapLines:
    """imaplib refuses lines over 1 MB: the UIDs of a 150,000-message backlog are one."""

    max_line = 64 << 20

    def readline(self) -> bytes:
        line = self.file.readline(self.max_line + 1)  # type: ignore[attr-defined]
        if len(line) > self.max_line:
            raise imaplib.IMAP4.error(f"got more than {self.max_line} bytes")
        return line


class _IMAP4(_ImapLines, imaplib.IMAP4):
    pass


class _IMAP4_SSL(_ImapLines, imaplib.IMAP4_SSL):
    pass


class ImapSource(_Base):
    """An IMAP folder: read by UID with BODY.PEEK (flags untouched), done = UID MOVE (or
    COPY, \\Deleted and EXPUNGE) to the processed folder, created when missing."""

    def __init__(self, server: _Server, password: str, context: ssl.SSLContext, *,
                 keep: bool, processed: str, failed: str, timeout: float) -> None:
        self.name, self.server, self.keep, self.after = server.name, server, keep, server.after
        self._folders = {"processed": processed, "failed": failed}
        self._ready: set[str] = set()
        self._login = functools.partial(self._open, password, context, timeout)
        self._reconnects = 0
        self._select()
        if "NAMESPACE" in self._caps:
            prefix = personal_prefix(self._call(self.conn.namespace)[1][0])
            for key, folder in self._folders.items():
                if prefix and not folder.startswith(prefix) and folder.upper() != "INBOX":
                    self._folders[key] = prefix + folder

    def _select(self) -> None:
        """Connect, log in and open the folder (again, after the server hung up)."""
        self.conn = self._login()
        self._caps = set(self.conn.capabilities)
        typ, said = self._call(self.conn.select, _quote(self.server.folder), self.keep)
        if typ != "OK":
            self.close()
            raise SourceError(f"{self.name}: there is no folder {self.server.folder!r} "
                              f"({_said(said[-1] if said else b'')}).",
                              hint="Folder names are case-sensitive (except INBOX).")
        validity = self.conn.response("UIDVALIDITY")[1]
        self.uidvalidity = int(validity[-1]) if validity and validity[-1] else 0

    def _reconnect(self, exc: BaseException) -> None:
        self._reconnects += 1
        if self._reconnects > MAX_RECONNECTS:
            raise SourceError(f"{self.name}: the server closed the connection "
                              f"{self._reconnects} times ({_said(exc)}).", temporary=True)
        log.warning("%s: the server closed the connection (%s): connecting again",
                    self.name, _said(exc))
        _shut(self.conn)
        validity = self.uidvalidity
        self._select()
        if self.uidvalidity != validity:
            raise SourceError(f"{self.name}: the folder was renumbered meanwhile "
                              "(UIDVALIDITY changed).", temporary=True,
                              hint="Run again: it is read afresh.")

    def _open(self, password: str, context: ssl.SSLContext,
              timeout: float) -> imaplib.IMAP4:
        server = self.server
        conn: imaplib.IMAP4 | None = None
        try:
            if server.scheme == "imaps":
                conn = _IMAP4_SSL(server.host, server.port, ssl_context=context,
                                  timeout=timeout)
            else:
                conn = _IMAP4(server.host, server.port, timeout=timeout)
                if not server.plain and "STARTTLS" in conn.capabilities:
                    conn.starttls(ssl_context=context)
                else:
                    _clear_text_allowed(server, conn.sock)
        except SourceError:
            _shut(conn)
            raise
        except (OSError, imaplib.IMAP4.error) as exc:
            _shut(conn)
            raise _connect_error(server, exc) from None
        try:
            if "AUTH=PLAIN" in conn.capabilities:  # UTF-8 passwords; LOGIN is ASCII only
                secret = f"\0{server.user}\0{password}".encode()
                conn.authenticate("PLAIN", lambda _challenge: secret)
            else:
                conn.login(server.user, password)
        except (imaplib.IMAP4.error, UnicodeEncodeError) as exc:
            _shut(conn)
            raise _login_error(server, exc) from None
        except OSError as exc:
            _shut(conn)
            raise _connect_error(server, exc) from None
        return conn

    def _call(self, method: Callable[..., tuple[str, list]],
              *args: str | bool) -> tuple[str, list]:
        """One command; a lost connection is a SourceError (temporary)."""
        try:
            return method(*args)
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise SourceError(f"{self.name}: the connection was lost ({_said(exc)}).",
                              temporary=True) from None
        except imaplib.IMAP4.error as exc:
            return "NO", [str(exc).encode()]

    def __iter__(self) -> Iterator[Incoming]:
        typ, data = self._call(self.conn.uid, "SEARCH", "UNDELETED")
        if typ != "OK":
            raise SourceError(f"{self.name}: cannot list the messages ({_said(data[-1])}).")
        uids = [int(u) for u in (data[0] or b"").split()]
        for start in range(0, len(uids), SIZES_PER_COMMAND):
            chunk = uids[start:start + SIZES_PER_COMMAND]
            sizes = self._sizes(chunk)
            group: list[int] = []
            total = 0
            for uid in chunk:
                size = sizes.get(uid, BATCH_BYTES)  # unknown: fetched on its own
                if group and (len(group) >= BATCH_MESSAGES or total + size > BATCH_BYTES):
                    yield from self._fetch(group)
                    group, total = [], 0
                group.append(uid)
                total += size
            if group:
                yield from self._fetch(group)

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        typ, data = self._call(self.conn.uid, "FETCH", _uid_set(uids), "(RFC822.SIZE)")
        sizes = {}
        for line in data if typ == "OK" else []:
            text = line[0] if isinstance(line, tuple) else line
            uid, size = re.search(rb"UID (\d+)", text or b""), \
                re.search(rb"RFC822\.SIZE (\d+)", text or b"")
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def _fetch(self, uids: list[int]) -> Iterator[Incoming]:
        try:
            typ, data = self.conn.uid("FETCH", _uid_set(uids), "(BODY.PEEK[])")
        except (OSError, imaplib.IMAP4.abort) as exc:  # dovecot hangs up on an unreadable one
            typ, data = "BYE", [_said(exc)]
            self._reconnect(exc)
        except imaplib.IMAP4.error as exc:
            typ, data = "NO", [_said(exc)]
        if typ != "OK" and len(uids) > 1:  # one bad message fails the command: one by one
            for uid in uids:
                yield from self._fetch([uid])
            return
        bodies: dict[int, bytes] = {}
        for i, part in enumerate(data if typ == "OK" else []):
            if not isinstance(part, tuple):
                continue
            found = re.search(rb"UID (\d+)", part[0])
            if found is None and i + 1 < len(data) and isinstance(data[i + 1], bytes):
                found = re.search(rb"UID (\d+)", data[i + 1])  # UID after the literal
            if found is not None:
                bodies[int(found.group(1))] = part[1]
        self.conn.response("FETCH")  # drop unsolicited flag updates
        for uid in uids:
            if uid in bodies:
                yield Incoming(f"{self.uidvalidity}:{uid}", bodies.pop(uid))
            else:
                log.warning("%s: message %s:%s could not be fetched (%s): skipped, it stays"
                            " in %s", self.name, self.uidvalidity, uid,
                            _said(data[-1] if data and typ != "OK" else b"no body returned"),
                            self.server.folder)

    def _uid(self, item: Incoming) -> str:
        return item.id.rpartition(":")[2]

    def _move(self, item: Incoming, key: str) -> None:
        folder, uid = _quote(self._folders[key]), self._uid(item)
        move = "MOVE" in self._caps
        typ, said = self._call(self.conn.uid, "MOVE" if move else "COPY", uid, folder)
        if typ != "OK" and key not in self._ready and b"TRYCREATE" in b" ".join(
                s for s in said if isinstance(s, bytes)):
            typ, said = self._call(self.conn.create, folder)
            if typ != "OK":
                raise SourceError(f"{self.name}: cannot create the folder "
                                  f"{self._folders[key]!r} ({_said(said[-1])}).",
                                  hint="Create it in a mail client, or choose another name.")
            self._call(self.conn.subscribe, folder)
            typ, said = self._call(self.conn.uid, "MOVE" if move else "COPY", uid, folder)
        self._ready.add(key)
        if typ != "OK":
            log.warning("%s: message %s could not be moved to %s (%s): it stays",
                        self.name, item.id, self._folders[key], _said(said[-1]))
        elif not move:
            self._delete(uid)
        self.conn.response("EXPUNGE")  # the untagged replies would pile up over a long run

    def _delete(self, uid: str) -> None:
        self._call(self.conn.uid, "STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        if "UIDPLUS" in self._caps:
            self._call(self.conn.uid, "EXPUNGE", uid)
        else:  # also removes others' \Deleted messages: what EXPUNGE means
            self._call(self.conn.expunge)
        self.conn.response("EXPUNGE")

    def done(self, item: Incoming) -> None:
        if self.keep:
            return
        if self.after == "move":
            self._move(item, "processed")
        else:
            self._delete(self._uid(item))

    def aside(self, item: Incoming, why: str) -> None:
        if self.keep:
            self._aside_log(item, why, "left in place (keep)")
            return
        self._aside_log(item, why, f"moved to {self._folders['failed']}")
        self._move(item, "failed")

    def close(self) -> None:
        conn, self.conn = getattr(self, "conn", None), None  # type: ignore[assignment]
        if conn is not None:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                _shut(conn)


def _shut(conn: imaplib.IMAP4 | poplib.POP3 | None) -> None:
    """Drop a connection without a word (the server may be gone)."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


# --- POP3 ---


class _Pop3Lines:
    """poplib refuses lines over 2,048 bytes; returned mail has longer ones."""

    max_line = 1 << 20

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(self.max_line + 1)  # type: ignore[attr-defined]
        if len(line) > self.max_line:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        return line.rstrip(b"\r\n"), len(line)


class _POP3(_Pop3Lines, poplib.POP3):
    pass


class _POP3_SSL(_Pop3Lines, poplib.POP3_SSL):
    pass


class Pop3Source(_Base):
    """A POP3 mailbox: ids from UIDL, done = DELE (carried out at QUIT, in close())."""

    def __init__(self, server: _Server, password: str, context: ssl.SSLContext, *,
                 keep: bool, timeout: float) -> None:
        self.name, self.server, self.keep = server.name, server, keep
        if server.after == "move" and not keep:
            raise ConfigError(
                f"{server.name}: POP3 has no folders, so processed messages cannot be "
                "moved.", hint="Add ?after=delete to the URL to delete them once "
                               "processed, or keep them (--keep).")
        self._numbers: dict[str, int] = {}
        conn: poplib.POP3 | None = None
        try:
            if server.scheme == "pop3s":
                conn = _POP3_SSL(server.host, server.port, context=context, timeout=timeout)
            else:
                conn = _POP3(server.host, server.port, timeout=timeout)
                if not server.plain and "STLS" in _capa(conn):
                    conn.stls(context=context)
                else:
                    _clear_text_allowed(server, conn.sock)
        except SourceError:
            _shut(conn)
            raise
        except (OSError, poplib.error_proto) as exc:
            _shut(conn)
            raise _connect_error(server, exc) from None
        try:
            conn.user(server.user)
            conn.pass_(password)
        except poplib.error_proto as exc:
            _shut(conn)
            raise _login_error(server, exc) from None
        except OSError as exc:
            _shut(conn)
            raise _connect_error(server, exc) from None
        self.conn: poplib.POP3 | None = conn

    def __iter__(self) -> Iterator[Incoming]:
        assert self.conn is not None, "closed"
        try:
            listing = [line.split() for line in self.conn.uidl()[1]]
            uidl = True
        except poplib.error_proto:  # no UIDL: numbers and a hash of the content
            listing = [line.split()[:1] for line in self.conn.list()[1]]
            uidl = False
        except OSError as exc:
            raise self._lost(exc) from None
        for fields in listing:
            number = int(fields[0])
            try:
                lines = self.conn.retr(number)[1]
            except poplib.error_proto as exc:
                log.warning("%s: message %s could not be fetched (%s): skipped, it stays",
                            self.name, fields[-1].decode(errors="replace"), _said(exc))
                continue
            except OSError as exc:
                raise self._lost(exc) from None
            data = b"\r\n".join(lines) + b"\r\n"
            uid = fields[1].decode(errors="replace") if uidl else \
                f"{number}:{hashlib.sha1(data).hexdigest()[:12]}"
            self._numbers[uid] = number
            yield Incoming(uid, data)

    def _lost(self, exc: BaseException) -> SourceError:
        return SourceError(f"{self.name}: the connection was lost ({_said(exc)}).",
                           temporary=True)

    def done(self, item: Incoming) -> None:
        if self.keep or self.conn is None:
            return
        try:
            self.conn.dele(self._numbers[item.id])
        except poplib.error_proto as exc:
            log.warning("%s: message %s could not be deleted (%s): it stays",
                        self.name, item.id, _said(exc))
        except OSError as exc:
            raise self._lost(exc) from None

    def aside(self, item: Incoming, why: str) -> None:
        self._aside_log(item, why, "left on the server (POP3 has no folders)")

    def close(self) -> None:
        conn, self.conn = getattr(self, "conn", None), None
        if conn is None:
            return
        try:
            conn.quit()  # the deletions happen now (RFC 1939: the UPDATE state)
        except (OSError, poplib.error_proto) as exc:
            _shut(conn)
            log.warning("%s: the session did not end cleanly (%s): messages marked done "
                        "stay on the server and will be read again", self.name, _said(exc))


def _capa(conn: poplib.POP3) -> dict[str, list[str]]:
    try:
        return conn.capa()
    except poplib.error_proto:
        return {}
