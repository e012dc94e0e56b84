"""The return-path sources against real mailboxes: a dovecot IMAP/POP3 server started for the
session (tests/support/mailserver.py), Maildirs and mbox files on disk, a pipe on stdin.

What is checked is what an operator relies on: TLS is verified, errors are one line without
the password, processed messages end up where configured (checked over IMAP, as a mail
client would see them), --keep changes nothing, one bad message does not stop the others,
and a reader that dies between reading and `done()` leaves the message to be read again.
"""

from __future__ import annotations

import io
import itertools
import mailbox
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.errors import ConfigError, MailerError
from mailer.feedback import sources
from mailer.feedback.sources import Incoming, SourceError, open_source, personal_prefix
from tests.support.mailserver import MailServer, MailUser

ROOT = Path(__file__).resolve().parent.parent


def message(n: int, extra: str = "") -> bytes:
    return (f"From: MAILER-DAEMON@example.net\r\nTo: bounces+tok{n}@example.be\r\n"
            f"Subject: Undelivered Mail {n}\r\nMessage-ID: <m{n}@example.net>\r\n\r\n"
            f"Return {n}.\r\n{extra}").encode()


@pytest.fixture
def user(mail_server: MailServer) -> MailUser:
    return mail_server.add_user()


def imap(server: MailServer, user: MailUser, scheme: str = "imaps", **kwargs: object):  # noqa: ANN201
    return open_source(server.url(scheme, user), password=user.password,
                       cafile=server.cafile, **kwargs)  # type: ignore[arg-type]


def one_line(exc: pytest.ExceptionInfo[MailerError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- IMAP ---


def test_imaps_verified_against_the_test_ca_reads_every_message(mail_server: MailServer,
                                                                 user: MailUser) -> None:
    sent = [message(1), message(2, "x" * 5000 + "\r\n"), message(3, "caf\xe9\r\n")]
    mail_server.deliver(user, *sent)
    with imap(mail_server, user, keep=True) as source:
        items = list(source)
        assert source.name == f"imaps://{user.name.replace('@', '%40')}@127.0.0.1:" \
                              f"{mail_server.ports['imaps']}/INBOX"
    assert [i.data for i in items] == sent
    validity = items[0].id.split(":")[0]
    assert [i.id for i in items] == [f"{validity}:{n}" for n in (1, 2, 3)]


def test_keep_leaves_messages_where_they_are_and_unread(mail_server: MailServer,
                                                        user: MailUser) -> None:
    mail_server.deliver(user, message(1), message(2))
    with imap(mail_server, user, keep=True) as source:
        for item in source:
            source.done(item)
        source.aside(item, "looks odd")
    assert mail_server.messages(user) == [message(1), message(2)]
    assert not any("Seen" in flags for flags in mail_server.flags(user))
    assert mail_server.messages(user, "processed") is None


def test_imaps_without_the_ca_is_one_line_certificate_error(mail_server: MailServer,
                                                            user: MailUser) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(mail_server.url("imaps", user), password=user.password)
    assert "certificate is not trusted (self-signed certificate)" in one_line(caught)
    assert "cafile" in (caught.value.hint or "")
    assert not caught.value.temporary


def test_verify_tls_false_accepts_the_certificate_unchecked(mail_server: MailServer,
                                                            user: MailUser) -> None:
    mail_server.deliver(user, message(1))
    with open_source(mail_server.url("imaps", user), password=user.password,
                     verify_tls=False, keep=True) as source:
        assert [i.data for i in source] == [message(1)]


@pytest.mark.parametrize("scheme", ["imaps", "imap", "pop3s", "pop3"])
def test_wrong_password_is_one_line_without_the_password(mail_server: MailServer,
                                                         user: MailUser, scheme: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(mail_server.url(scheme, user), password="Wr0ng-s3cret", keep=True,
                    cafile=mail_server.cafile)
    text = one_line(caught)
    assert "login refused" in text and "Authentication failed" in text
    assert "Wr0ng-s3cret" not in text + (caught.value.hint or "")
    assert user.password not in text


def test_imap_upgrades_with_starttls_and_verifies_it(mail_server: MailServer,
                                                     user: MailUser) -> None:
    mail_server.deliver(user, message(1))
    with imap(mail_server, user, "imap", keep=True) as source:
        assert [i.data for i in source] == [message(1)]
    with pytest.raises(SourceError) as caught:  # STARTTLS happened: the certificate counts
        open_source(mail_server.url("imap", user), password=user.password)
    assert "certificate is not trusted" in one_line(caught)


def test_done_moves_into_the_processed_folder_made_when_missing(mail_server: MailServer,
                                                                user: MailUser) -> None:
    mail_server.deliver(user, message(1), message(2), message(3))
    with imap(mail_server, user) as source:
        for item in source:
            if item.data == message(2):
                source.aside(item, "unreadable")
            else:
                source.done(item)
    assert mail_server.messages(user) == []
    assert mail_server.messages(user, "processed") == [message(1), message(3)]
    assert mail_server.messages(user, "failed") == [message(2)]
    mail_server.deliver(user, message(4))  # the folder exists now
    with imap(mail_server, user, processed="processed") as source:
        for item in source:
            source.done(item)
    assert mail_server.messages(user, "processed") == [message(1), message(3), message(4)]


def test_move_without_the_move_extension_copies_and_expunges(mail_server: MailServer,
                                                             user: MailUser) -> None:
    mail_server.deliver(user, message(1), message(2))
    with imap(mail_server, user, processed="Verwerkt \xe9") as source:
        source._caps.discard("MOVE")  # an older server: COPY, \Deleted, UID EXPUNGE
        for item in source:
            source.done(item)
    assert mail_server.messages(user) == []
    client = mail_server.client(user)
    try:
        listed = b" ".join(client.list()[1])
    finally:
        client.logout()
    assert b'"Verwerkt &AOk-"' in listed  # modified UTF-7 (RFC 3501 5.1.3)
    assert mail_server.messages(user, "Verwerkt &AOk-") == [message(1), message(2)]


@pytest.mark.parametrize("how", ["keyword", "url"])
def test_after_delete_deletes(mail_server: MailServer, user: MailUser, how: str) -> None:
    mail_server.deliver(user, message(1), message(2))
    url = mail_server.url("imaps", user) + ("?after=delete" if how == "url" else "")
    with open_source(url, password=user.password, cafile=mail_server.cafile,
                     after="delete" if how == "keyword" else "move") as source:
        for item in source:
            if item.data == message(1):
                source.done(item)
    assert mail_server.messages(user) == [message(2)]
    assert mail_server.messages(user, "processed") is None


def test_bodies_are_fetched_in_batches_in_uid_order(mail_server: MailServer, user: MailUser,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sent = [message(n, "y" * (300 * n) + "\r\n") for n in range(1, 12)]
    mail_server.deliver(user, *sent)
    monkeypatch.setattr(sources, "BATCH_MESSAGES", 3)
    monkeypatch.setattr(sources, "BATCH_BYTES", 2000)  # the largest go one at a time
    monkeypatch.setattr(sources, "SIZES_PER_COMMAND", 4)
    with imap(mail_server, user, keep=True) as source:
        assert [i.data for i in source] == sent


def _message_file(user: MailUser, data: bytes) -> Path:
    """Where dovecot keeps a message (found by its Message-ID; the mode may be 000)."""
    wanted = [line for line in data.splitlines() if line.startswith(b"Message-ID:")][0]
    found = []
    for path in (p for sub in ("new", "cur") for p in (user.maildir / sub).iterdir()):
        path.chmod(0o600)
        if wanted in path.read_bytes():
            found.append(path)
    assert len(found) == 1
    return found[0]


def test_a_message_that_cannot_be_fetched_is_skipped_and_the_others_go_on(
        mail_server: MailServer, user: MailUser, caplog: pytest.LogCaptureFixture) -> None:
    mail_server.deliver(user, message(1), message(2), message(3))
    broken = _message_file(user, message(2))
    broken.chmod(0)  # the server cannot read it: dovecot answers its FETCH with BYE
    try:
        with imap(mail_server, user) as source:
            read = []
            for item in source:
                read.append(item.data)
                source.done(item)
    finally:
        _message_file(user, message(2)).chmod(0o600)  # dovecot moved it to cur/ meanwhile
    assert read == [message(1), message(3)]
    assert "could not be fetched" in caplog.text and ":2 " in caplog.text
    assert mail_server.messages(user) == [message(2)]  # it stays, for the next run
    assert mail_server.messages(user, "processed") == [message(1), message(3)]


def test_a_missing_folder_is_one_line(mail_server: MailServer, user: MailUser) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(mail_server.url("imaps", user, "Bounces"), password=user.password,
                    cafile=mail_server.cafile)
    assert "there is no folder 'Bounces'" in one_line(caught)
    assert "secs" not in str(caught.value)


CRASH = """
import os, sys
from mailer.feedback.sources import open_source
url, password, cafile, after = sys.argv[1:5]
source = open_source(url, password=password or None, cafile=cafile or None, after=after)
items = iter(source)
first = next(items)
source.done(first)           # processed and settled
second = next(items)         # processed (recorded by the caller) ...
print(first.id, second.id, flush=True)
os._exit(1)                  # ... and the process dies before done(): no close either
"""


def crash(url: str, password: str = "", cafile: str = "", after: str = "move") -> list[str]:
    """Run a reader that settles one message, reads the next and dies; its ids."""
    ran = subprocess.run([sys.executable, "-c", CRASH, url, password, cafile, after],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ran.returncode == 1, ran.stderr
    return ran.stdout.split()


def test_imap_crash_between_processing_and_done_reads_the_message_again(
        mail_server: MailServer, user: MailUser) -> None:
    mail_server.deliver(user, message(1), message(2), message(3))
    first, second = crash(mail_server.url("imaps", user), user.password, mail_server.cafile)
    assert mail_server.messages(user, "processed") == [message(1)]
    with imap(mail_server, user, keep=True) as source:
        again = list(source)
    assert [i.id for i in again][0] == second  # the same id: the caller counts it once
    assert [i.data for i in again] == [message(2), message(3)]
    assert first not in [i.id for i in again]


# --- POP3 ---


def test_pop3s_reads_with_uidl_ids_and_deletes_what_is_done(mail_server: MailServer,
                                                            user: MailUser) -> None:
    sent = [message(1), message(2, "z" * 5000 + "\r\n.leading dot\r\n"), message(3)]
    mail_server.deliver(user, *sent)
    url = mail_server.url("pop3s", user) + "?after=delete"
    with open_source(url, password=user.password, cafile=mail_server.cafile) as source:
        assert source.name == f"pop3s://{user.name.replace('@', '%40')}@127.0.0.1:" \
                              f"{mail_server.ports['pop3s']}"
        items = list(source)
        assert [i.data for i in items] == sent
        for item in items[:2]:
            source.done(item)
        source.aside(items[2], "malformed")  # POP3 cannot move it: it stays
    assert mail_server.messages(user) == [message(3)]
    with open_source(url, password=user.password, cafile=mail_server.cafile,
                     keep=True) as source:
        assert [i.id for i in source] == [items[2].id]  # UIDL ids are stable


def test_pop3_keep_deletes_nothing(mail_server: MailServer, user: MailUser) -> None:
    mail_server.deliver(user, message(1))
    for _ in range(2):
        with open_source(mail_server.url("pop3s", user), password=user.password,
                         cafile=mail_server.cafile, keep=True) as source:
            for item in source:
                source.done(item)
    assert mail_server.messages(user) == [message(1)]


def test_pop3_upgrades_with_stls_and_verifies_it(mail_server: MailServer,
                                                 user: MailUser) -> None:
    mail_server.deliver(user, message(1))
    with open_source(mail_server.url("pop3", user), password=user.password,
                     cafile=mail_server.cafile, keep=True) as source:
        assert [i.data for i in source] == [message(1)]
    with pytest.raises(SourceError) as caught:
        open_source(mail_server.url("pop3", user), password=user.password, keep=True)
    assert "certificate is not trusted" in one_line(caught)


def test_pop3_refuses_to_move_since_it_has_no_folders(mail_server: MailServer,
                                                      user: MailUser) -> None:
    with pytest.raises(ConfigError) as caught:
        open_source(mail_server.url("pop3s", user), password=user.password,
                    cafile=mail_server.cafile)
    assert "POP3 has no folders" in one_line(caught)
    assert "?after=delete" in (caught.value.hint or "")


def test_pop3_crash_before_quit_deletes_nothing(mail_server: MailServer,
                                                user: MailUser) -> None:
    mail_server.deliver(user, message(1), message(2))
    first, second = crash(mail_server.url("pop3s", user) + "?after=delete", user.password,
                          mail_server.cafile)
    assert mail_server.messages(user) == [message(1), message(2)]  # DELE counts at QUIT
    with open_source(mail_server.url("pop3s", user), password=user.password,
                     cafile=mail_server.cafile, keep=True) as source:
        assert [i.id for i in source] == [first, second]


# --- clear text, URLs, unreachable servers ---


class Greeter:
    """A server that greets like IMAP without STARTTLS and records what it is sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                conn.sendall(b"* OK plain only\r\n")
                for line in reader:
                    tag, _, command = line.rstrip(b"\r\n").partition(b" ")
                    if command == b"CAPABILITY":
                        conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
                                     + tag + b" OK done\r\n")
                        continue
                    self.lines.append(line)
                    if command == b"AUTHENTICATE PLAIN":
                        conn.sendall(b"+ \r\n")
                        self.lines.append(next(reader))
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] no\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def greeter() -> Iterator[Greeter]:
    server = Greeter()
    yield server
    server.close()


def test_no_password_in_clear_to_another_host(greeter: Greeter,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_is_loopback", lambda address: False)
    url = f"imap://bounces%40example.be@127.0.0.1:{greeter.port}/INBOX"
    with pytest.raises(SourceError) as caught:
        open_source(url, password="s3cret", verify_tls=False)
    assert "offers no TLS" in one_line(caught) and "?tls=none" in (caught.value.hint or "")
    assert greeter.lines == []  # nothing was sent, certainly not the password
    with pytest.raises(SourceError) as caught:  # said explicitly: it logs in
        open_source(url + "?tls=none", password="s3cret")
    assert "login refused" in one_line(caught)
    assert any(b"AUTHENTICATE" in line for line in greeter.lines)


def test_clear_text_to_this_machine_is_allowed(greeter: Greeter) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(f"imap://u@127.0.0.1:{greeter.port}/INBOX", password="s3cret")
    assert "login refused" in one_line(caught)


@pytest.mark.parametrize(("url", "expected"), [
    ("imaps://bounces:hunter2@mail.example.be/INBOX", "password does not belong"),
    ("gopher://mail.example.be/", "Unknown kind of source"),
    ("ftp://u:hunter2@mail.example.be/", "Unknown kind of source"),
    ("imaps://mail.example.be/INBOX", "names no user"),
    ("pop3s://u@mail.example.be/INBOX", "POP3 has no folders"),
    ("imaps://u@mail.example.be/INBOX?verify=no", "Unknown option"),
    ("imaps://u@mail.example.be/INBOX?tls=none", "tls can only be"),
    ("imaps://u@mail.example.be:99999/INBOX", "not a valid URL"),
    ("maildir:", "names no path"),
])
def test_bad_urls_are_one_line_config_errors(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_source(url, password="x")
    assert expected in one_line(caught)
    assert "hunter2" not in str(caught.value) + (caught.value.hint or "")


def test_an_unreachable_server_is_a_temporary_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(SourceError) as caught:
        open_source(f"imaps://u@127.0.0.1:{port}/INBOX", password="x", timeout=30)
    assert "Cannot reach" in one_line(caught) and "refused" in str(caught.value)
    assert caught.value.temporary


def test_network_sources_need_a_password() -> None:
    with pytest.raises(ConfigError, match="No password"):
        open_source("imaps://u@127.0.0.1/INBOX")


def test_helpers() -> None:
    assert personal_prefix(b'(("INBOX." ".")) NIL NIL') == "INBOX."
    assert personal_prefix(b'(("" "/")) NIL (("#shared/" "/"))') == ""
    assert sources._uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert sources._quote('a "b" \u20ac&') == '"a \\"b\\" &IKw-&-"'


# --- Maildir ---


UNIQUE = itertools.count()


def make_maildir(root: Path, messages: list[bytes], sub: str = "new") -> list[str]:
    for part in ("tmp", "new", "cur"):
        (root / part).mkdir(parents=True, exist_ok=True)
    names = []
    for data in messages:
        n = next(UNIQUE)
        name = f"{1700000000 + n}.M{n}P1.host" + (":2,S" if sub == "cur" else "")
        (root / sub / name).write_bytes(data)
        names.append(name)
    return names


def maildir_contents(root: Path) -> list[bytes]:
    return sorted(p.read_bytes() for sub in ("new", "cur") if (root / sub).is_dir()
                  for p in (root / sub).iterdir())


def test_maildir_done_moves_into_a_maildir_plus_plus_folder(tmp_path: Path) -> None:
    root = tmp_path / "bounces"
    new = make_maildir(root, [message(1), message(2)])
    cur = make_maildir(root, [message(3)], sub="cur")
    with open_source(f"maildir:{root}") as source:
        items = {i.id: i for i in source}
        assert set(items) == set(new + cur)
        for name in (new[0], cur[0]):
            source.done(items[name])
        source.aside(items[new[1]], "malformed")
    assert maildir_contents(root) == []
    assert (root / ".processed" / "new" / new[0]).read_bytes() == message(1)
    assert (root / ".processed" / "cur" / cur[0]).read_bytes() == message(3)
    assert (root / ".processed" / "maildirfolder").exists()
    assert (root / ".failed" / "new" / new[1]).read_bytes() == message(2)
    assert len(mailbox.Maildir(root, create=False).get_folder("processed")) == 2


def test_maildir_delete_and_keep(tmp_path: Path) -> None:
    root = tmp_path / "bounces"
    make_maildir(root, [message(1), message(2)])
    with open_source(f"maildir:{root}", keep=True) as source:
        for item in source:
            source.done(item)
            source.aside(item, "odd")
    assert maildir_contents(root) == [message(1), message(2)]
    with open_source(f"maildir:{root}", after="delete") as source:
        for item in source:
            source.done(item)
    assert maildir_contents(root) == []
    assert not (root / ".processed").exists()


def test_maildir_crash_between_processing_and_done_reads_the_message_again(
        tmp_path: Path) -> None:
    root = tmp_path / "bounces"
    make_maildir(root, [message(1), message(2), message(3)])
    first, second = crash(f"maildir:{root}")
    with open_source(f"maildir:{root}", keep=True) as source:
        again = [i.id for i in source]
    assert second in again and first not in again and len(again) == 2


def test_not_a_maildir_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(f"maildir:{tmp_path / 'nothing'}")
    assert "not a Maildir" in one_line(caught)


def test_a_maildir_of_20000_messages_is_streamed_in_flat_memory(tmp_path: Path) -> None:
    root = tmp_path / "big"
    make_maildir(root, [])
    for n in range(20_000):
        (root / "new" / f"{n}.M{n}P1.host").write_bytes(message(n))
    tracemalloc.start()
    try:
        with open_source(f"maildir:{root}", keep=True) as source:
            count = sum(1 for item in source if item.data.startswith(b"From:"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2 << 20, f"peak {peak} bytes"


# --- mbox ---


def make_mbox(path: Path, messages: list[bytes]) -> None:
    box = mailbox.mbox(path)
    for data in messages:
        box.add(data)
    box.close()


def mbox_contents(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(k) for k in box.iterkeys()]
    finally:
        box.close()


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def test_mbox_done_appends_to_the_processed_file_and_removes_at_close(tmp_path: Path) -> None:
    path = tmp_path / "returns.mbox"
    make_mbox(path, [message(1, "From here on\r\n"), message(2), message(3)])
    stored = mbox_contents(path)  # as the stdlib reads them (mbox quotes 'From ' lines)
    with open_source(f"mbox:{path}") as source:
        items = list(source)
        assert [i.id.split(":")[0] for i in items] == ["0", "1", "2"]
        assert [i.data for i in items] == stored
        source.done(items[0])
        source.aside(items[1], "malformed")
        assert mbox_contents(path) == stored  # nothing changes before close
    assert mbox_contents(path) == stored[2:]
    assert mbox_contents(Path(f"{path}.processed")) == stored[:1]
    assert mbox_contents(Path(f"{path}.failed")) == stored[1:2]


def test_mbox_delete_and_keep(tmp_path: Path) -> None:
    path = tmp_path / "returns.mbox"
    make_mbox(path, [message(1), message(2)])
    with open_source(f"mbox:{path}", keep=True) as source:
        for item in source:
            source.done(item)
    assert len(mbox_contents(path)) == 2
    with open_source(f"mbox:{path}", after="delete") as source:
        for item in source:
            source.done(item)
    assert mbox_contents(path) == []
    assert not Path(f"{path}.processed").exists()


def test_mbox_is_locked_while_read(tmp_path: Path) -> None:
    path = tmp_path / "returns.mbox"
    make_mbox(path, [message(1)])
    with open_source(f"mbox:{path}", keep=True):
        other = mailbox.mbox(path, create=False)
        with pytest.raises(mailbox.ExternalClashError):
            other.lock()
        other.close()
    other = mailbox.mbox(path, create=False)
    other.lock()  # released at close
    try:
        with pytest.raises(SourceError) as caught:
            open_source(f"mbox:{path}")
        assert "locked by another program" in one_line(caught)
        assert caught.value.temporary
    finally:
        other.unlock()
        other.close()


def test_mbox_crash_changes_nothing_and_its_stale_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "returns.mbox"
    make_mbox(path, [message(1), message(2), message(3)])
    before = path.read_bytes()
    crash(f"mbox:{path}")
    assert path.read_bytes() == before and not Path(f"{path}.processed").exists()
    dotlock = Path(f"{path}.lock")
    assert dotlock.exists()  # left by the dead reader
    with pytest.raises(SourceError, match="locked"):
        open_source(f"mbox:{path}")  # fresh: perhaps a live reader
    old = time.time() - 2 * sources.STALE_DOTLOCK
    os.utime(dotlock, (old, old))
    with open_source(f"mbox:{path}", keep=True) as source:
        assert [lf(i.data) for i in source] == [lf(message(n)) for n in (1, 2, 3)]


# --- standard input ---


PIPE = """
from mailer.feedback.sources import open_source
with open_source("-") as source:
    for item in source:
        print(item.id, len(item.data), item.data.splitlines()[2].decode())
        source.done(item)
"""


def test_stdin_is_one_message_from_a_pipe() -> None:
    ran = subprocess.run([sys.executable, "-c", PIPE], input=message(7), cwd=ROOT,
                         capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().split() == ["stdin", str(len(message(7))), "Subject:",
                                           "Undelivered", "Mail", "7"]
    empty = subprocess.run([sys.executable, "-c", PIPE], input=b"", cwd=ROOT,
                           capture_output=True, timeout=120)
    assert empty.returncode == 0 and empty.stdout == b""


def test_stdin_is_read_once() -> None:
    source = open_source("-", stdin=io.BytesIO(message(1)))
    assert list(source) == [Incoming("stdin", message(1))]
    assert list(source) == []
