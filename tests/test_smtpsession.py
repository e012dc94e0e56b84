"""The per-message SMTP transaction (mailer/delivery/smtpsession.py), pipelined and one
command at a time, against the aiosmtpd test server: what arrives, and how each refusal
and hang-up is reported."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import aiosmtplib
import pytest

from mailer.content.compose import ascii_address
from mailer.content.mailing import Message
from mailer.delivery.smtpsession import ReplyLost, Session, Unsendable
from mailer.delivery.wire import checked
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import until

MODES = pytest.mark.parametrize("pipelining", [True, False],
                                ids=["pipelining", "one-command-at-a-time"])


def message(to: str = "an@example.be", body: bytes = b"Dag An\r\n") -> Message:
    data = (b"From: <news@example.be>\r\nTo: <" + to.encode() + b">\r\nSubject: x\r\n"
            b"Message-ID: <1@example.be>\r\n\r\n" + body)
    return Message(data=data, envelope_from="bounces+x@example.be", recipient=to,
                   message_id="1@example.be", smtputf8=False)


async def session_with(server: SmtpServer) -> Session:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False,
                             timeout=5)
    await client.connect()
    await client.ehlo()
    return Session(client, timeout=5)


@MODES
def test_messages_arrive_whole_with_lines_that_start_with_a_dot(pipelining):
    """Each body as a message built anywhere, and as one checked where it was rendered
    (wire.checked: `plain` when nothing needs dot-stuffing, and the session then writes
    its data as it is)."""
    bodies = [b"Dag An\r\n", b".\r\n..twee\r\n.drie", b".begin\r\nmidden\r\n.\r\n"]
    sent = [m for body in bodies for m in (message(body=body), checked(message(body=body)))]
    assert [m.plain for m in sent] == [False, True, False, False, False, False]

    async def go(server: SmtpServer) -> list[str]:
        session = await session_with(server)
        assert (session._replies is not None) is pipelining
        replies = [(await session.send(m)).code for m in sent]
        await session.quit()
        return replies

    with SmtpServer(pipelining=pipelining) as server:
        assert asyncio.run(go(server)) == [250] * 6
        received = [m.data.split(b"\r\n\r\n", 1)[1] for m in server.messages()]
    # DATA ends a message with CRLF (RFC 5321 4.5.2): the one without gets it
    expected = [b"Dag An\r\n", b".\r\n..twee\r\n.drie\r\n", bodies[2]]
    assert received == [body for body in expected for _ in range(2)]
    assert all(m.envelope_from == "bounces+x@example.be" for m in server.messages())


@MODES
def test_each_refusal_is_reported_for_its_stage_and_the_session_goes_on(pipelining):
    async def go(server: SmtpServer) -> list[tuple[str, int]]:
        session = await session_with(server)
        outcomes = []
        for to in ("bad@example.be", "full@example.be", "ok@example.be"):
            try:
                reply = await session.send(message(to))
                outcomes.append(("sent", reply.code))
            except aiosmtplib.SMTPResponseException as exc:
                outcomes.append((type(exc).__name__, exc.code))
                await session.reset()
        await session.quit()
        return outcomes

    with SmtpServer(pipelining=pipelining) as server:
        server.reply_to_rcpt("bad@example.be", 550, "5.1.1 No such user")
        server.reply_to_data(452, "4.3.1 Full", match="full@example.be")
        assert asyncio.run(go(server)) == [("SMTPRecipientRefused", 550),
                                           ("SMTPDataError", 452), ("sent", 250)]
        assert server.recipients() == ["ok@example.be"]


@MODES
def test_a_421_before_hanging_up_is_reported_with_its_code(pipelining):
    async def go(server: SmtpServer) -> tuple[int, bool]:
        session = await session_with(server)
        await session.send(message())
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await session.send(message("b@example.be"))
        await until(lambda: not session.connected, "the session to see the server hang up")
        return refused.value.code, session.connected

    with SmtpServer(pipelining=pipelining) as server:
        server.max_messages_per_session(1)
        assert asyncio.run(go(server)) == (421, False)
        assert server.recipients() == ["an@example.be"]


@MODES
def test_a_connection_dropped_during_data_is_a_disconnect(pipelining):
    async def go(server: SmtpServer) -> None:
        session = await session_with(server)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await session.send(message())
        assert not session.connected

    with SmtpServer(pipelining=pipelining) as server:
        server.drop_during_data()
        asyncio.run(go(server))
        assert server.messages() == []


@MODES
def test_a_reply_lost_after_the_final_dot_is_not_a_plain_disconnect(pipelining):
    """The server took the message and hung up before its 250: the session cannot know
    whether it arrived, and says so (ReplyLost), unlike a drop before the data went."""
    async def go(server: SmtpServer) -> None:
        session = await session_with(server)
        with pytest.raises(ReplyLost):
            await session.send(message())
        assert not session.connected

    with SmtpServer(pipelining=pipelining) as server:
        server.drop_after_data()
        asyncio.run(go(server))
        assert server.recipients() == ["an@example.be"]


@MODES
def test_a_message_that_cannot_go_out_as_it_is_is_refused_before_a_byte_is_written(
        pipelining):
    """A CR/LF in an address or a header value, a line over 998 octets: refused with the
    reason, nothing written (no raw RCPT of an injected address), the session goes on."""
    def with_data(head: bytes, body: bytes = b"Dag\r\n") -> Message:
        return Message(data=head + b"\r\n\r\n" + body, envelope_from="b@example.be",
                       recipient="an@example.be", message_id="1@example.be",
                       smtputf8=False)

    bad = [
        (message("an@example.be>\r\nRCPT TO:<evil@example.be"), "recipient address"),
        (with_data(b"To: <an@example.be>\r\nSubject: x\nBcc: evil@example.be"),
         "line break"),
        (with_data(b"To: <an@example.be>\r\nSubject: x\r\nBcc evil@example.be"),
         "neither a field nor a fold"),
        (with_data(b"To: <an@example.be>\r\nSubject: " + b"x" * 2000),
         "a line in the header Subject is 2,009 characters long"),
        (with_data(b"To: <an@example.be>", b"y" * 1000 + b"\r\n"),
         "a line in the body is 1,000 characters long"),
    ]

    async def go(server: SmtpServer) -> list[str]:
        session = await session_with(server)
        reasons = []
        for refused, _ in bad:
            with pytest.raises(Unsendable) as error:
                await session.send(refused)
            reasons.append(str(error.value))
        assert (await session.send(message())).code == 250
        await session.quit()
        return reasons

    with SmtpServer(pipelining=pipelining) as server:
        reasons = asyncio.run(go(server))
        assert server.recipients() == ["an@example.be"]
    for reason, (_, expected) in zip(reasons, bad, strict=True):
        assert expected in reason
    assert all("not the address" in r for r in reasons[3:])
    # the same check where a message is rendered (delivery/wire.py): the same reasons,
    # and a message that passed it is marked so, its bytes unchanged
    for refused, expected in bad:
        with pytest.raises(Unsendable, match=re.escape(expected)):
            checked(refused)
    good = message()
    assert checked(good) == dataclasses.replace(good, checked=True, plain=True)
    assert not good.checked and not good.plain


@pytest.mark.parametrize("address, wire", [
    ("user@bücher.example", "user@xn--bcher-kva.example"),
    ("an@straße.de", "an@xn--strae-oqa.de"),  # IDNA 2008: not strasse.de, another domain
    ("an@example.be", "an@example.be"),
    ("chloë@example.be", "chloë@example.be"),  # only SMTPUTF8 can carry this local part
    ("an@bü cher.example", "an@bü cher.example"),  # not a name: left for check() to refuse
])
def test_international_domains_go_on_the_envelope_as_a_labels(address, wire):
    assert ascii_address(address) == wire


@MODES
def test_a_relay_without_smtputf8_gets_a_labels_or_nothing(pipelining):
    """A server without SMTPUTF8 (it refuses the parameter and bytes outside ASCII):
    an@bücher.example goes out as an@xn--bcher-kva.example; a message that needs SMTPUTF8
    (chloë@…) is refused before a byte is written, and the session goes on."""
    def utf8(to: str) -> Message:
        return Message(data=b"To: <x>\r\nSubject: x\r\n\r\nDag\r\n", recipient=to,
                       envelope_from="bounces+x@example.be", message_id="1@example.be",
                       smtputf8=not to.partition("@")[0].isascii())

    async def go(server: SmtpServer) -> str:
        session = await session_with(server)
        assert (await session.send(utf8("an@bücher.example"))).code == 250
        with pytest.raises(Unsendable) as error:
            await session.send(utf8("chloë@example.be"))
        assert (await session.send(message())).code == 250
        await session.quit()
        return str(error.value)

    with SmtpServer(pipelining=pipelining, smtputf8=False) as server:
        reason = asyncio.run(go(server))
        assert server.recipients() == ["an@xn--bcher-kva.example", "an@example.be"]
    assert "needs SMTPUTF8" in reason and "does not offer" in reason


def test_a_silent_server_times_out():
    async def go(server: SmtpServer) -> None:
        session = await session_with(server)
        session.timeout = 0.3
        with pytest.raises(ReplyLost, match="did not answer in time"):  # after the dot
            await session.send(message())
        session.close()

    with SmtpServer() as server:
        server.stall(60.0)  # far beyond the client's 0.3 s, however slow the machine
        asyncio.run(go(server))


def test_multiline_replies_are_read_as_one():
    """The pipelined reader takes a reply of several lines (250-… 250 …) as one."""
    async def go(server: SmtpServer) -> tuple[int, list[str], int]:
        session = await session_with(server)
        assert session._replies is not None
        session._replies.write(b"EHLO again.example.be\r\nNOOP\r\n")
        ehlo, noop = await session._replies.read(2, 5)
        await session.quit()
        return ehlo.code, ehlo.message.split("\n"), noop.code

    with SmtpServer() as server:
        code, lines, noop = asyncio.run(go(server))
    assert code == 250 and noop == 250
    assert len(lines) >= 4 and "PIPELINING" in lines and lines[-1] == "HELP"
