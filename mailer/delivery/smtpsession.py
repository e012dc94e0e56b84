"""The mail transactions of one SMTP connection, once it is set up.

aiosmtplib opens the connection: greeting, EHLO, STARTTLS with certificate checks, AUTH.
The transactions that follow (MAIL, RCPT, DATA, then the message) are the per-message
cost of a send, and are done here:

- With PIPELINING (RFC 2920, offered by Postfix, Exim and every large provider's relays),
  MAIL, RCPT and DATA go out in one write and their three replies come back together:
  two round trips and two writes a message instead of four. aiosmtplib reads one reply
  per command and drops what arrives early, so the connection's replies are then read by
  `_Replies`, a small protocol that takes over the transport from aiosmtplib.
- Without it, through aiosmtplib's command layer, one command at a time.

Either way, not `sendmail()`: for one recipient it parses both addresses twice with the
stdlib's address parser and runs three regular expressions over the whole message
(line-end normalisation twice, dot-stuffing): ~270 us for a 15 KB newsletter, as much as
rendering and signing it. Our addresses are validated and normalised before they get
here, our messages are CRLF throughout; dot-stuffing is one `replace` when a line starts
with a dot at all (headers, base64 and MIME boundaries never do).

Refusals raise aiosmtplib's exceptions (SMTPSenderRefused, SMTPRecipientRefused,
SMTPDataError), a lost connection SMTPServerDisconnected, a silent server TimeoutError:
the transport turns them into outcomes. Once the end of DATA (the final dot) has been
written, a lost connection or a silent server raises `ReplyLost` instead: the server
may have taken the message before its reply got lost (RFC 1047), so the delivery is
"unknown", never resent on its own.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailer.content.mailing import Message
from mailer.delivery.wire import Unsendable, check, dot_stuffed, envelope

__all__ = ["ReplyLost", "Session", "Unsendable", "check", "envelope"]

MAX_REPLY = 64 * 1024  # a reply longer than this is not SMTP


class ReplyLost(Exception):
    """No reply to the end of DATA: the message may or may not have been taken."""


class Session:
    """One connection, set up by aiosmtplib, and its transactions."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.sent = 0  # messages delivered on this connection
        self.data_sent = False  # the current transaction's final dot was written
        self._replies = (_Replies(client) if client.supports_extension("pipelining")
                         and client.transport is not None else None)

    @property
    def connected(self) -> bool:
        if self._replies is not None:
            return self._replies.open
        return self.client.is_connected

    async def send(self, message: Message) -> SMTPResponse:
        """One mail transaction; the reply to the end of DATA. Raises `Unsendable`,
        before writing anything, for a message that cannot go out as it is."""
        self.data_sent = False
        if not message.checked:  # else checked where it was rendered (wire.checked)
            check(message)
        if message.smtputf8 and not self.client.supports_extension("smtputf8"):
            raise Unsendable(f"the address {message.recipient!r} needs SMTPUTF8 (RFC 6531), "
                             "which the relay does not offer")
        encoding = "utf-8" if message.smtputf8 else "ascii"
        mail = (b"MAIL FROM:<" + envelope(message, message.envelope_from).encode(encoding)
                + b">")
        if message.smtputf8:
            mail += b" SMTPUTF8"
        rcpt = b"RCPT TO:<" + envelope(message, message.recipient).encode(encoding) + b">"
        data = message.data if message.plain else dot_stuffed(message.data)
        if self._replies is None:
            return await self._one_at_a_time(message, mail, rcpt, data)
        replies = self._replies
        replies.write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
        try:
            got = await replies.read(3, self.timeout)
        except aiosmtplib.SMTPServerDisconnected:
            refusal = _refusal(replies.take(), message)  # e.g. 421 to MAIL, then closed
            if refusal is not None:
                raise refusal from None
            raise
        refusal = _refusal(got, message)
        if refusal is not None:
            if got[2].code == 354:  # DATA accepted without a recipient: send nothing
                replies.write(b".\r\n")
                await replies.read(1, self.timeout)
            raise refusal
        replies.write(data + b".\r\n")
        self.data_sent = True
        try:
            (done,) = await replies.read(1, self.timeout)
        except (TimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise ReplyLost(_what(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 0:
                raise
            raise ReplyLost(_what(exc)) from exc  # garbled: not a reply we can read
        if done.code != 250:
            raise aiosmtplib.SMTPDataError(done.code, done.message)
        return done

    async def _one_at_a_time(self, message: Message, mail: bytes, rcpt: bytes,
                             data: bytes) -> SMTPResponse:
        client = self.client
        reply = await client.execute_command(*mail.split(b" ", 1))
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message,
                                               message.envelope_from)
        reply = await client.execute_command(*rcpt.split(b" ", 1))
        if reply.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message,
                                                  message.recipient)
        reply = await client.execute_command(b"DATA")
        if reply.code != 354:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol.write(data + b".\r\n")
        self.data_sent = True
        try:
            reply = await protocol.read_response(timeout=self.timeout)
        except (TimeoutError, aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPTimeoutError) as exc:
            client.close()
            raise ReplyLost(_what(exc)) from exc
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    async def reset(self) -> None:
        """RSET after a refusal: the connection stays usable."""
        if self._replies is None:
            await self.client.rset()
            return
        self._replies.write(b"RSET\r\n")
        (reply,) = await self._replies.read(1, self.timeout)
        if reply.code != 250:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)

    async def quit(self) -> None:
        """QUIT and close; errors on the way out do not matter."""
        try:
            if self._replies is None:
                if self.client.is_connected:
                    await self.client.quit()
            elif self._replies.open:
                self._replies.write(b"QUIT\r\n")
                await self._replies.read(1, self.timeout)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.client.close()
        if self._replies is not None:
            self._replies.close()


def _refusal(replies: list[SMTPResponse],
             message: Message) -> aiosmtplib.SMTPResponseException | None:
    """The first refusal among the replies to MAIL, RCPT and DATA (as far as they came)."""
    for stage, reply in enumerate(replies[:3]):
        if stage == 0 and reply.code != 250:
            return aiosmtplib.SMTPSenderRefused(reply.code, reply.message,
                                                message.envelope_from)
        if stage == 1 and reply.code not in (250, 251):
            return aiosmtplib.SMTPRecipientRefused(reply.code, reply.message,
                                                   message.recipient)
        if stage == 2 and reply.code != 354:
            return aiosmtplib.SMTPDataError(reply.code, reply.message)
    return None


def _what(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


class _Replies(asyncio.Protocol):
    """Takes over a set-up connection's transport from aiosmtplib and reads its replies
    in order, so that several commands can be written before their replies are read."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        assert client.transport is not None
        self._transport = client.transport
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost: BaseException | None = None
        self._transport.set_protocol(self)

    @property
    def open(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.open:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(data)  # type: ignore[attr-defined]

    async def read(self, n: int, timeout: float) -> list[SMTPResponse]:
        """The next n replies; raises when the connection is lost or the server is
        silent for `timeout` seconds."""
        if not self._writable.is_set():  # the server is slow to take what we wrote
            await asyncio.wait_for(self._writable.wait(), timeout)
        if len(self._replies) < n:
            if self._lost is not None:
                raise self._lost
            self._wanted = n
            self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, self._time_out, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        return [self._replies.popleft() for _ in range(n)]

    def take(self) -> list[SMTPResponse]:
        """The replies that have come and were not read."""
        replies = list(self._replies)
        self._replies.clear()
        return replies

    def close(self) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection closed"))
        self._transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        lines: list[bytes] = []
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                try:
                    code = int(lines[0][:3])
                except ValueError:
                    self._fail(aiosmtplib.SMTPResponseException(
                        -1, f"Malformed SMTP reply: {lines[0][:80]!r}"))
                    self._transport.close()
                    return
                text = b"\n".join(part[4:].strip() for part in lines)
                self._replies.append(SMTPResponse(code, text.decode("utf-8", "replace")))
                del buffer[:start]
                start, lines = 0, []
        if len(buffer) > MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "SMTP reply too long"))
            self._transport.close()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done() and len(self._replies) >= self._wanted:
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("The server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(
            f"Connection lost: {exc}" if exc else "The server closed the connection"))
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._lost)

    @staticmethod
    def _time_out(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("the server did not answer in time"))
