"""The test SMTP server (tests/support/smtpserver.py), driven by real SMTP clients."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import aiosmtplib
import pytest

from tests.support.smtpserver import Received, SmtpServer
from tests.support.waiting import wait_for

MESSAGE = (b"From: Nieuwsbrief <news@example.org>\r\nTo: an@example.be\r\nSubject: Hallo\r\n\r\n"
           b"Body line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n")


def connect(server: SmtpServer, **kwargs) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=60, **kwargs)


def send(server: SmtpServer, recipients: list[str], data: bytes = MESSAGE,
         sender: str = "news@example.org") -> dict:
    with connect(server) as client:
        return client.sendmail(sender, recipients, data)


def tls_client(server: SmtpServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=server.cafile)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def test_plain_message_is_recorded_exactly():
    with SmtpServer() as server:
        before = time.monotonic()
        with connect(server) as client:
            code, features = client.ehlo()
            assert code == 250
            assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
            assert int(client.esmtp_features["size"]) >= 10 * 1024 * 1024
            assert not client.has_extn("auth") and not client.has_extn("starttls")
            assert client.sendmail("news@example.org", ["an@example.be", "bo@example.nl"],
                                   MESSAGE) == {}
            after = time.monotonic()
            assert server.active_sessions == 1
        assert server.wait_idle()
        assert server.active_sessions == 0
        [message] = server.messages()
        assert message == Received("news@example.org", ("an@example.be", "bo@example.nl"),
                                   MESSAGE, message.at, 1)
        assert before <= message.at <= after
        assert server.recipients() == ["an@example.be", "bo@example.nl"]
        assert server.sessions == 1 and server.max_concurrent_sessions == 1


def test_each_message_is_recorded_once_with_its_connection_number():
    with SmtpServer() as server:
        with connect(server) as client:
            client.sendmail("a@example.org", ["one@example.be"], b"Subject: 1\r\n\r\n1\r\n")
            client.sendmail("a@example.org", ["two@example.be"], b"Subject: 2\r\n\r\n2\r\n")
        send(server, ["three@example.be"], b"Subject: 3\r\n\r\n3\r\n")
        assert [(m.recipients, m.session) for m in server.messages()] == [
            (("one@example.be",), 1), (("two@example.be",), 1), (("three@example.be",), 2)]
        assert server.recipients() == ["one@example.be", "two@example.be", "three@example.be"]
        assert server.messages() is not server.received and server.messages() == server.received
        assert server.sessions == 2


def test_smtputf8_and_8bit_data_are_kept_byte_for_byte():
    data = "Subject: Zoë\r\n\r\nCafé — ok\r\n".encode()
    with SmtpServer() as server, connect(server) as client:
        client.sendmail("zoë@example.org", ["jürgen@exämple.be"], data,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        [message] = server.messages()
        assert message.envelope_from == "zoë@example.org"
        assert message.recipients == ("jürgen@exämple.be",)
        assert message.data == data


def test_large_message_is_accepted_and_long_lines_are_refused():
    line = b"x" * 998 + b"\r\n"  # RFC 5321's limit
    big = b"Subject: big\r\n\r\n" + line * (11 * 1024 * 1024 // len(line))
    with SmtpServer() as server, connect(server) as client:
        client.sendmail("a@example.org", ["an@example.be"], big)
        assert server.messages()[0].data == big
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["an@example.be"], b"x" * 1000 + b"\r\n")
        assert refused.value.smtp_code == 500
        assert len(server.messages()) == 1


def test_rcpt_refused_for_one_recipient_of_two():
    with SmtpServer() as server:
        server.reply_to_rcpt("gone@example.be", 550, "5.1.1 No such user")
        refused = send(server, ["an@example.be", "Gone@Example.be"])
        assert refused == {"Gone@Example.be": (550, b"5.1.1 No such user")}
        [message] = server.messages()
        assert message.recipients == ("an@example.be",)
        assert server.recipients() == ["an@example.be"]


def test_rcpt_faults_by_domain_for_a_number_of_times():
    with SmtpServer() as server:
        server.reply_to_rcpt("@busy.example", 451, "4.7.1 Try later", times=2)
        assert send(server, ["a@busy.example", "b@busy.example", "c@other.example"]) == {
            "a@busy.example": (451, b"4.7.1 Try later"),
            "b@busy.example": (451, b"4.7.1 Try later")}
        assert send(server, ["a@busy.example", "a@sub.busy.example"]) == {}
        assert [m.recipients for m in server.messages()] == [
            ("c@other.example",), ("a@busy.example", "a@sub.busy.example")]


def test_message_whose_recipients_were_all_refused_is_not_recorded():
    with SmtpServer() as server:
        server.reply_to_rcpt("@example.be", 550)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(server, ["an@example.be", "bo@example.be"])
        assert {code for code, _ in refused.value.recipients.values()} == {550}
        assert server.messages() == [] and server.recipients() == []


def test_data_refused_with_451_once():
    with SmtpServer() as server:
        server.reply_to_data(451, "4.7.1 Try later", times=1)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server, ["an@example.be"])
        assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.7.1 Try later")
        assert server.messages() == []
        send(server, ["an@example.be"])
        assert len(server.messages()) == 1


def test_data_fault_only_for_matching_recipients():
    with SmtpServer() as server:
        server.reply_to_data(554, "5.7.1 Rejected", match="@strict.example")
        send(server, ["an@example.be"])
        with pytest.raises(smtplib.SMTPDataError):
            send(server, ["an@example.be", "bo@strict.example"])
        with pytest.raises(smtplib.SMTPDataError):
            send(server, ["bo@strict.example"])
        server.clear_faults()
        send(server, ["bo@strict.example"])
        assert [m.recipients for m in server.messages()] == [("an@example.be",),
                                                             ("bo@strict.example",)]


def test_drop_after_closes_the_connection_at_the_next_mail_from():
    with SmtpServer() as server:
        server.drop_after(1)
        with connect(server) as client:
            client.sendmail("a@example.org", ["one@example.be"], MESSAGE)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.sendmail("a@example.org", ["two@example.be"], MESSAGE)
        assert server.recipients() == ["one@example.be"]
        send(server, ["three@example.be"])
        send(server, ["four@example.be"])  # times=1: only the first connection was dropped
        assert server.recipients() == ["one@example.be", "three@example.be", "four@example.be"]
        assert server.sessions == 3


def test_drop_during_data_is_a_disconnect_and_nothing_is_recorded():
    with SmtpServer() as server:
        server.drop_during_data(times=2)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(server, ["an@example.be"])

        async def with_aiosmtplib() -> None:
            await aiosmtplib.send(MESSAGE, sender="a@example.org", recipients=["an@example.be"],
                                  hostname=server.host, port=server.port, timeout=5)

        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            asyncio.run(with_aiosmtplib())
        assert server.wait_idle()
        assert server.messages() == []
        send(server, ["an@example.be"])
        assert len(server.messages()) == 1


def test_drop_after_data_records_the_message_and_hangs_up_before_the_250():
    with SmtpServer() as server:
        server.drop_after_data(match="@lost.example")
        send(server, ["an@example.be"])  # not matched: answered as usual
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(server, ["bo@lost.example"])
        assert server.wait_idle()
        assert server.recipients() == ["an@example.be", "bo@lost.example"]  # taken
        send(server, ["bo@lost.example"])  # times=1: the next one is answered
        assert len(server.messages()) == 3


def test_greeting_421_then_close():
    with SmtpServer() as server:
        server.greet_with(421, "4.3.2 Too busy")
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            connect(server)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (421, b"4.3.2 Too busy")
        assert server.wait_idle()  # the server hung up
        send(server, ["an@example.be"])
        assert server.sessions == 2 and len(server.messages()) == 1


def test_max_messages_per_session():
    with SmtpServer() as server:
        server.max_messages_per_session(2)
        with connect(server) as client:
            for n in range(2):
                client.sendmail("a@example.org", [f"{n}@example.be"], MESSAGE)
            assert client.mail("a@example.org") == (421, b"4.7.0 Too many messages")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
        send(server, ["2@example.be"])  # a new connection may send again
        assert [m.session for m in server.messages()] == [1, 1, 2]
        server.max_messages_per_session(None)
        with connect(server) as client:
            for n in range(3):
                client.sendmail("a@example.org", [f"{n}@example.be"], MESSAGE)
        assert len(server.messages()) == 6


def test_stall_delays_the_data_reply_and_a_client_timeout_loses_the_message():
    with SmtpServer() as server:
        server.stall(0.2)
        started = time.monotonic()
        send(server, ["an@example.be"])
        assert time.monotonic() - started >= 0.2
        server.stall(60.0)  # longer than the test: stop() ends it
        with connect(server) as client:
            client.ehlo()
            client.mail("a@example.org")
            client.rcpt("bo@example.be")
            assert client.docmd("DATA")[0] == 354
            client.send(b"Subject: stalled\r\n\r\nBody\r\n.\r\n")
            client.sock.settimeout(0.1)  # only the reply to the end of DATA times out
            with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
                client.getreply()
        assert server.wait_idle()  # the client hung up, so the stalled DATA was abandoned
        assert server.recipients() == ["an@example.be"]


def test_held_messages_wait_unrecorded_until_released():
    with SmtpServer() as server, ThreadPoolExecutor(3) as pool:
        server.hold_data()
        sends = [pool.submit(send, server, [f"{n}@example.be"]) for n in range(3)]
        assert server.wait_held(3)
        assert server.held == 3 and server.messages() == []
        assert not any(f.done() for f in sends)  # no reply to the end of DATA yet
        server.release_data(1)
        assert wait_for(lambda: [f for f in sends if f.done()], "one message let go")
        assert len(server.messages()) == 1 and server.held == 2
        server.hold_data()  # again: the permits are reset, the two still wait
        server.release_data(5)  # two now, three for later ones
        assert [f.result(timeout=60) for f in sends] == [{}, {}, {}]
        send(server, ["later@example.be"])  # a permit left over
        server.release_data()
        send(server, ["free@example.be"])  # not holding any more
        assert len(server.messages()) == 5 and server.held == 0


def test_starttls_verifies_against_cafile():
    with SmtpServer(starttls=True) as server:
        for host in ("127.0.0.1", "localhost"):
            with smtplib.SMTP(host, server.port, timeout=5) as client:
                client.ehlo()
                assert client.has_extn("starttls")
                client.starttls(context=tls_client(server))
                client.sendmail("a@example.org", ["an@example.be"], MESSAGE)
        with connect(server) as client, pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context())
        assert [m.session for m in server.messages()] == [1, 2]  # STARTTLS keeps the number

        async def with_aiosmtplib(**tls) -> None:  # STARTTLS is used when offered
            await aiosmtplib.send(MESSAGE, sender="a@example.org", recipients=["bo@example.be"],
                                  hostname=server.host, port=server.port, timeout=5, **tls)

        asyncio.run(with_aiosmtplib(cert_bundle=server.cafile))
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(with_aiosmtplib())
        assert server.recipients() == ["an@example.be", "an@example.be", "bo@example.be"]


def test_require_starttls_refuses_mail_before_it():
    with SmtpServer(require_starttls=True) as server, connect(server) as client:
        client.ehlo()
        assert client.mail("a@example.org")[0] == 530
        client.starttls(context=server.client_context())
        client.sendmail("a@example.org", ["an@example.be"], MESSAGE)
        assert len(server.messages()) == 1


def test_implicit_tls():
    with SmtpServer(implicit_tls=True) as server:
        with smtplib.SMTP_SSL(server.host, server.port, timeout=5,
                              context=tls_client(server)) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
            client.sendmail("a@example.org", ["an@example.be"], MESSAGE)
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(server.host, server.port, timeout=5,
                             context=ssl.create_default_context())

        async def with_aiosmtplib() -> None:
            await aiosmtplib.send(MESSAGE, sender="a@example.org", recipients=["bo@example.be"],
                                  hostname="localhost", port=server.port, use_tls=True,
                                  cert_bundle=server.cafile, timeout=5)

        asyncio.run(with_aiosmtplib())
        assert server.recipients() == ["an@example.be", "bo@example.be"]
        assert server.sessions == 2  # the failed handshake never became a session


def test_auth_is_required_before_mail():
    with SmtpServer(auth=("mailer", "s3cret")) as server:
        with connect(server) as client:
            client.ehlo()
            assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
            assert client.mail("a@example.org")[0] == 530
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("mailer", "wrong")
            assert refused.value.smtp_code == 535
            client.login("mailer", "s3cret")  # PLAIN
            client.sendmail("a@example.org", ["an@example.be"], MESSAGE)

        async def with_login() -> None:
            async with aiosmtplib.SMTP(hostname=server.host, port=server.port,
                                       timeout=5) as client:
                await client.auth_login("mailer", "s3cret")
                await client.sendmail("a@example.org", ["bo@example.be"], MESSAGE)

        asyncio.run(with_login())
        assert server.recipients() == ["an@example.be", "bo@example.be"]


def test_auth_over_starttls_and_implicit_tls():
    async def submit(server: SmtpServer, **tls) -> None:
        await aiosmtplib.send(MESSAGE, sender="a@example.org", recipients=["an@example.be"],
                              hostname=server.host, port=server.port, username="mailer",
                              password="s3cret", cert_bundle=server.cafile, timeout=5, **tls)

    with SmtpServer(starttls=True, auth=("mailer", "s3cret")) as server:
        with connect(server) as client:
            client.ehlo()
            assert not client.has_extn("auth")  # only offered once the session is encrypted
            client.starttls(context=server.client_context())
            client.ehlo()
            assert client.has_extn("auth")
        asyncio.run(submit(server))
        assert server.recipients() == ["an@example.be"]
    with SmtpServer(implicit_tls=True, auth=("mailer", "s3cret")) as server:
        asyncio.run(submit(server, use_tls=True))
        assert server.recipients() == ["an@example.be"]


def test_concurrent_sessions_are_counted():
    count = 40

    async def main(server: SmtpServer) -> None:
        clients = [aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=10)
                   for _ in range(count)]
        await asyncio.gather(*(c.connect() for c in clients))  # all open at once
        assert server.active_sessions == count
        await asyncio.gather(*(c.sendmail("a@example.org", [f"{n}@example.be"], MESSAGE)
                               for n, c in enumerate(clients)))
        await asyncio.gather(*(c.quit() for c in clients))

    with SmtpServer() as server:
        asyncio.run(main(server))
        assert server.sessions == count and server.max_concurrent_sessions == count
        messages = server.messages()
        assert sorted(m.session for m in messages) == list(range(1, count + 1))
        assert sorted(server.recipients()) == sorted(f"{n}@example.be" for n in range(count))
        assert server.wait_idle()


def test_thousands_of_messages_a_second_recorded_exactly_once():
    connections, per_connection = 8, 500
    transaction = b"".join([b"MAIL FROM:<a@example.org>\r\nRCPT TO:<%d@example.be>\r\nDATA\r\n",
                            MESSAGE.replace(b"\r\n.", b"\r\n.."), b".\r\n"])

    def pipeline(first: int) -> None:  # a raw client that does not wait for each reply
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            replies = sock.makefile("rb")
            assert replies.readline().startswith(b"220")
            batch = b"".join(transaction % (first + n) for n in range(per_connection))
            sock.sendall(b"HELO client\r\n" + batch + b"QUIT\r\n")
            codes = [line[:3] for line in replies]
            assert codes == [b"250"] + [b"250", b"250", b"354", b"250"] * per_connection \
                + [b"221"]

    with SmtpServer() as server:
        # The server's speed is its thread's CPU time a message: the wall clock would
        # count whatever else the machine is doing too.
        clock = time.pthread_getcpuclockid(server._thread.ident)
        cpu = time.clock_gettime(clock)
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(pipeline, range(0, connections * per_connection, per_connection)))
        cpu = time.clock_gettime(clock) - cpu
        messages = server.messages()
        total = connections * per_connection
        assert sorted(int(r.split("@")[0]) for r in server.recipients()) == list(range(total))
        assert all(m.data == MESSAGE for m in messages)
        assert total / cpu > 1500  # messages a second of the server thread's CPU


def test_stop_hangs_up_on_open_connections_and_frees_the_port():
    server = SmtpServer().start()
    client = connect(server)
    client.ehlo()
    server.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=5)
    server.stop()  # a second stop is harmless


def test_bad_arguments_are_refused():
    server = SmtpServer()
    with pytest.raises(ValueError):
        server.reply_to_rcpt("no-at-sign", 550)
    with pytest.raises(ValueError):
        server.reply_to_data(99)
    with pytest.raises(ValueError):
        server.stall(1, times=-1)
    with pytest.raises(ValueError):
        SmtpServer(starttls=True, implicit_tls=True)
