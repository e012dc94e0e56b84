"""The return path end to end: a real campaign is sent (to the project's maildir outbox),
what comes back is built from the real messages (their VERP tokens and Message-IDs), put
in a return mailbox and read by `mailer bounces process`; the database is checked."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from email import message_from_bytes
from email.utils import formatdate
from pathlib import Path

import pytest

TEMPLATE = "templates/newsletter.html.j2"


def people(run, project: Path, n: int) -> list[str]:  # noqa: ANN001
    addresses = [f"p{i}@example.org" for i in range(n)]
    csv = project / "people.csv"
    csv.write_text("email,first_name\n" + "".join(f"{a},Naam{i}\n"
                                                  for i, a in enumerate(addresses)))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
    return addresses


def send(run, project: Path, name: str = "dec") -> dict[str, bytes]:  # noqa: ANN001
    """Send a campaign to the maildir outbox; the messages by recipient."""
    before = set((project / "outbox" / "new").glob("*")) if (project / "outbox").exists() \
        else set()
    result = run("campaign", "create", name, "--list", "nieuwsbrief", "--template", TEMPLATE,
                 "--subject", "Nieuws")
    assert result.exit_code == 0, result.output
    result = run("campaign", "send", name, "--yes")
    assert result.exit_code == 0, result.output
    sent = {}
    for path in set((project / "outbox" / "new").glob("*")) - before:
        data = path.read_bytes().replace(b"\r\n", b"\n")
        sent[message_from_bytes(data)["To"].split("<")[-1].rstrip(">")] = data
    return sent


def envelope(data: bytes) -> str:
    """The VERP envelope sender of a sent message (the maildir transport's Return-Path)."""
    value = message_from_bytes(data)["Return-Path"]
    assert value and "bounces+" in value, "the maildir outbox records the envelope sender"
    return value.strip("<>")


def dsn(original: bytes, recipient: str, *, status: str, diagnostic: str,
        action: str = "failed", to: str | None = None, headers_only: bool = False) -> bytes:
    """A Postfix-style RFC 3464 report about `original`, sent to its VERP address."""
    to = to or envelope(original)
    part = ("text/rfc822-headers", original.split(b"\n\n", 1)[0].decode()) if headers_only \
        else ("message/rfc822", original.decode())
    return (
        f"Return-Path: <>\nDelivered-To: {to}\nFrom: MAILER-DAEMON@mx.example.org "
        f"(Mail Delivery System)\nTo: {to}\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: {formatdate()}\nMIME-Version: 1.0\nAuto-Submitted: auto-replied\n"
        f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
        f"--B\nContent-Type: text/plain\n\nI'm sorry to have to inform you that your message "
        f"could not be delivered.\n\n<{recipient}>: host mx.example.org said: {diagnostic}\n\n"
        f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;{recipient}\n"
        f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; mx.example.org\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        f"--B\nContent-Type: {part[0]}\n\n{part[1]}\n--B--\n").encode()


def arf(original: bytes, *, redact: bool = True) -> bytes:
    """A complaint (RFC 5965) as providers send it: the address redacted."""
    headers = original.split(b"\n\n", 1)[0].decode()
    if redact:
        headers = "\n".join("To: redacted@example.org" if h.startswith("To:") else h
                            for h in headers.split("\n"))
    return (
        "From: feedback@fbl.example.net\nTo: abuse@example.be\nSubject: complaint\n"
        f"Date: {formatdate()}\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\n\n"
        "--F\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
        "--F\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
        "User-Agent: SomeFBL/1.0\nVersion: 1\n\n"
        f"--F\nContent-Type: text/rfc822-headers\n\n{headers}\n\n--F--\n").encode()


def returns(project: Path, *messages: bytes) -> str:
    """A return Maildir holding the messages; its URL."""
    box = mailbox.Maildir(project / "returns", create=True)
    for data in messages:
        box.add(data)
    return f"maildir:{project / 'returns'}"


def process(run, url: str, *extra: str) -> dict:  # noqa: ANN001
    result = run("bounces", "process", "--source", url, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def show(run, email: str) -> dict:  # noqa: ANN001
    result = run("subscribers", "show", email, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def suppressed(run, email: str) -> bool:  # noqa: ANN001
    return run("suppression", "check", email).exit_code == 0


def test_a_hard_bounce_suppresses_once_and_a_second_read_counts_once(run, project):
    addresses = people(run, project, 3)
    sent = send(run, project)
    bounce = dsn(sent[addresses[0]], addresses[0], status="5.1.1",
                 diagnostic="550 5.1.1 <p0@example.org>: Recipient address rejected: "
                            "User unknown in virtual mailbox table")
    url = returns(project, bounce)
    summary = process(run, url)
    assert summary["read"] == 1 and summary["kinds"] == {"bounce (hard)": 1}
    assert suppressed(run, addresses[0]) and not suppressed(run, addresses[1])
    events = show(run, addresses[0])["feedback"]
    assert [(e["kind"], e["reason"], e["hard"], e["attributed_by"], e["campaign"])
            for e in events] == [("bounce", "userunknown", True, "token", "dec")]
    assert events[0]["action"] == "suppressed"
    assert "p0@" not in events[0]["diagnostic"]  # only the domain of an address is kept
    deliveries = json.loads(run("campaign", "deliveries", "dec", "--json").stdout)
    assert {d["email"]: d["state"] for d in deliveries}[addresses[0]] == "bounced"
    box = mailbox.Maildir(project / "returns", create=False)
    assert len(box) == 0 and len(box.get_folder("processed")) == 1
    # A crash between processing and moving: the same message is read again.
    box.add(bounce)
    again = process(run, url)
    assert again["read"] == 1 and again["duplicates"] == 1 and again["kinds"] == {}
    assert len(show(run, addresses[0])["feedback"]) == 1
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)["feedback"]
    assert shown["hard"] == 1 and shown["reasons"] == [
        {"reason": "userunknown", "hard": True, "count": 1}]


def test_a_returned_original_attributes_without_the_envelope(run, project):
    """A bounce sent to a plain address (a forwarding alias lost the VERP local part):
    the token in the returned headers, or else their Message-ID, still finds the person."""
    addresses = people(run, project, 2)
    sent = send(run, project)
    by_headers = dsn(sent[addresses[0]], addresses[0], status="5.1.1",
                     diagnostic="550 5.1.1 user unknown", to="postmaster@example.be",
                     headers_only=True)
    original = message_from_bytes(sent[addresses[1]])
    del original["Return-Path"], original["List-Unsubscribe"]
    stripped = original.as_bytes()
    by_id = dsn(stripped, "someone-else@example.net", status="5.1.1",
                diagnostic="550 5.1.1 user unknown", to="postmaster@example.be",
                headers_only=True)
    process(run, returns(project, by_headers, by_id))
    assert show(run, addresses[0])["feedback"][0]["attributed_by"] == "headers"
    assert show(run, addresses[1])["feedback"][0]["attributed_by"] == "message-id"
    assert suppressed(run, addresses[0]) and suppressed(run, addresses[1])


def test_a_forged_token_attributes_nothing(run, project):
    addresses = people(run, project, 1)
    sent = send(run, project)
    real = envelope(sent[addresses[0]])
    local, domain = real.split("@")
    token = local.split("+")[1]
    forged = f"bounces+{token[:-3]}{'aaa' if token[-3:] != 'aaa' else 'bbb'}@{domain}"
    message = (f"Return-Path: <>\nTo: {forged}\nFrom: MAILER-DAEMON@mx.example.net\n"
               "Subject: Undelivered Mail Returned to Sender\n"
               "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
               "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
               "Final-Recipient: rfc822; nobody-we-know@example.net\nAction: failed\n"
               "Status: 5.1.1\n\n--B--\n").encode()
    summary = process(run, returns(project, message))
    assert summary["actions"] == {"not attributed": 1}
    assert not suppressed(run, addresses[0])


def test_a_sender_side_rejection_warns_and_never_suppresses(run, project):
    addresses = people(run, project, 2)
    sent = send(run, project)
    block = dsn(sent[addresses[0]], addresses[0], status="5.7.26",
                diagnostic="550-5.7.26 This mail has been blocked because the sender is "
                           "unauthenticated. Gmail requires all senders to authenticate "
                           "with either SPF or DKIM.")
    process(run, returns(project, block))
    assert not suppressed(run, addresses[0])
    event = show(run, addresses[0])["feedback"][0]
    assert event["sender_side"] and not event["hard"] and event["action"] == "warned operator"
    result = run("campaign", "show", "dec")
    assert "because of our sending" in result.output and "example.org" in result.output


def test_soft_bounces_suppress_at_the_third_in_a_row(run, project):
    addresses = people(run, project, 1)
    full = "552 5.2.2 Mailbox full: quota exceeded"
    for n, name in enumerate(("one", "two", "three"), start=1):
        sent = send(run, project, name)
        process(run, returns(project, dsn(sent[addresses[0]], addresses[0], status="5.2.2",
                                          diagnostic=full)))
        assert suppressed(run, addresses[0]) == (n == 3), n
    actions = [e["action"] for e in show(run, addresses[0])["feedback"]]
    assert actions == ["soft bounce 1 of 3", "soft bounce 2 of 3",
                       "suppressed (3 soft bounces)"]


def test_a_delivery_that_did_not_bounce_starts_the_count_again(run, project):
    addresses = people(run, project, 1)
    full = "452 4.2.2 Mailbox full"
    first = send(run, project, "one")
    process(run, returns(project, dsn(first[addresses[0]], addresses[0], status="5.2.2",
                                      diagnostic=full)))
    send(run, project, "two")  # delivered: nothing came back
    for name in ("three", "four"):
        sent = send(run, project, name)
        process(run, returns(project, dsn(sent[addresses[0]], addresses[0], status="5.2.2",
                                          diagnostic=full)))
    assert not suppressed(run, addresses[0])
    assert show(run, addresses[0])["feedback"][-1]["action"] == "soft bounce 2 of 3"


def test_a_complaint_unsubscribes_from_everything_and_suppresses(run, project):
    addresses = people(run, project, 2)
    sent = send(run, project)
    process(run, returns(project, arf(sent[addresses[1]])))
    person = show(run, addresses[1])
    assert [m["status"] for m in person["lists"]] == ["unsubscribed"]
    assert person["consent"][-1]["action"] == "unsubscribe"
    assert person["consent"][-1]["source"].startswith("complaint")
    assert person["feedback"][0]["kind"] == "complaint"
    assert suppressed(run, addresses[1]) and not suppressed(run, addresses[0])


def test_the_suppressions_returns_make_are_in_the_audit_trail_as_counts(run, project):
    addresses = people(run, project, 3)
    sent = send(run, project)
    bounce = dsn(sent[addresses[0]], addresses[0], status="5.1.1", diagnostic="550 5.1.1 unknown")

    def trail() -> list[dict]:
        return [a for a in json.loads(run("audit", "ls", "--json").stdout)
                if a["action"] == "bounces.process"]

    url = returns(project, bounce, arf(sent[addresses[1]]))
    process(run, url, "--dry-run")
    assert trail() == []  # a dry run changes nothing, so it audits nothing
    process(run, url)
    [entry] = trail()
    assert entry["detail"]["read"] == 2
    assert entry["detail"]["changes"] == {"suppressed": 1,
                                          "unsubscribed from all, suppressed": 1}
    assert entry["actor"] and "@" not in json.dumps(entry)  # counts, never an address
    mailbox.Maildir(project / "returns", create=False).add(bounce)  # read again: a duplicate
    assert process(run, url)["duplicates"] == 1
    assert len(trail()) == 1


def test_a_mail_to_the_unsub_address_unsubscribes_that_list(run, project):
    addresses = people(run, project, 2)
    sent = send(run, project)
    header = message_from_bytes(sent[addresses[0]])["List-Unsubscribe"]
    unsub = header.split("mailto:")[1].split("?")[0]
    mail = (f"From: Naam0 <{addresses[0]}>\nTo: {unsub}\nSubject: please keep me!\n"
            f"Date: {formatdate()}\n\nWhatever it says, the address decides.\n").encode()
    summary = process(run, returns(project, mail))
    assert summary["kinds"] == {"unsubscribe": 1} and summary["actions"] == {"unsubscribed": 1}
    person = show(run, addresses[0])
    assert [m["status"] for m in person["lists"]] == ["unsubscribed"]
    assert person["consent"][-1]["source"].startswith("mail")
    assert not suppressed(run, addresses[0])  # one list, as the person asked
    assert show(run, addresses[1])["lists"][0]["status"] == "confirmed"


def test_an_auto_reply_is_recorded_and_never_a_bounce(run, project):
    addresses = people(run, project, 1)
    sent = send(run, project)
    message_id = message_from_bytes(sent[addresses[0]])["Message-ID"]
    reply = (f"From: Naam0 <{addresses[0]}>\nTo: {envelope(sent[addresses[0]])}\n"
             f"Subject: Afwezig: Nieuws\nAuto-Submitted: auto-replied\n"
             f"In-Reply-To: {message_id}\nDate: {formatdate()}\n\n"
             "Ik ben afwezig tot 5 januari.\n").encode()
    summary = process(run, returns(project, reply))
    assert summary["kinds"] == {"auto-reply": 1}
    assert show(run, addresses[0])["feedback"][0]["kind"] == "auto-reply"
    assert not suppressed(run, addresses[0])


def test_an_unreadable_message_is_moved_aside_and_the_others_go_on(run, project):
    addresses = people(run, project, 1)
    sent = send(run, project)
    good = dsn(sent[addresses[0]], addresses[0], status="5.1.1", diagnostic="550 no such user")
    summary = process(run, returns(project, b"\x00\x01 not mail at all\n", good))
    assert summary["read"] == 1 and summary["moved_aside"] == 1
    assert suppressed(run, addresses[0])
    box = mailbox.Maildir(project / "returns", create=False)
    assert len(box.get_folder("failed")) == 1 and len(box.get_folder("processed")) == 1


def test_a_message_that_fails_in_a_batch_is_rolled_back_alone(run, project, monkeypatch):
    """Returns are recorded in batches, one transaction each: a message whose recording
    fails half-way (its subscriber already suppressed) is undone alone and moved aside;
    the others in its batch, and in the next batches, are kept and moved."""
    from mailer.feedback import intake, processing

    addresses = people(run, project, 5)
    sent = send(run, project)
    real = processing.apply

    def failing(session, hash_key, policy, event, target, *, now):  # noqa: ANN001, ANN202
        done = real(session, hash_key, policy, event, target, now=now)
        if "mailbox is odd" in (event.diagnostic or ""):
            raise RuntimeError("odd data")
        return done

    monkeypatch.setattr(processing, "apply", failing)
    monkeypatch.setattr(intake, "BATCH_MESSAGES", 2)
    summary = process(run, returns(project, *(
        dsn(sent[a], a, status="5.1.1",
            diagnostic=f"550 5.1.1 {'mailbox is odd' if a == addresses[2] else 'unknown'}")
        for a in addresses)))
    assert summary["read"] == 4 and summary["moved_aside"] == 1
    assert summary["problems"] and "RuntimeError: odd data" in summary["problems"][0]
    assert [suppressed(run, a) for a in addresses] == [True, True, False, True, True]
    assert show(run, addresses[2])["feedback"] == []
    box = mailbox.Maildir(project / "returns", create=False)
    assert len(box) == 0 and len(box.get_folder("processed")) == 4
    assert len(box.get_folder("failed")) == 1


def test_a_batch_is_moved_only_after_its_commit(run, project, monkeypatch):
    """The database fails at a batch's commit: nothing of that batch is kept and its
    messages stay in the mailbox; read again, each counts once."""
    from sqlalchemy.exc import OperationalError

    from mailer.feedback import intake, processing

    addresses = people(run, project, 3)
    sent = send(run, project)
    url = returns(project, *(dsn(sent[a], a, status="5.1.1", diagnostic="550 5.1.1 unknown")
                             for a in addresses))

    def broken(self) -> None:  # noqa: ANN001
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(intake, "BATCH_MESSAGES", 50)
    with monkeypatch.context() as patched:
        patched.setattr(processing.Batch, "commit", broken)
        result = run("bounces", "process", "--source", url, "--json")
    assert result.exit_code != 0 and "Traceback" not in result.output
    box = mailbox.Maildir(project / "returns", create=False)
    assert len(box) == 3 and not any(suppressed(run, a) for a in addresses)
    assert all(show(run, a)["feedback"] == [] for a in addresses)
    summary = process(run, url)
    assert summary["read"] == 3 and summary["duplicates"] == 0
    assert all(suppressed(run, a) for a in addresses)
    assert [len(show(run, a)["feedback"]) for a in addresses] == [1, 1, 1]
    assert len(box) == 0 and len(box.get_folder("processed")) == 3


def test_dry_run_changes_nothing_and_keeps_the_messages(run, project):
    addresses = people(run, project, 1)
    sent = send(run, project)
    url = returns(project, dsn(sent[addresses[0]], addresses[0], status="5.1.1",
                               diagnostic="550 5.1.1 unknown"))
    summary = process(run, url, "--dry-run")
    assert summary["actions"] == {"suppressed": 1}
    assert not suppressed(run, addresses[0]) and show(run, addresses[0])["feedback"] == []
    assert len(mailbox.Maildir(project / "returns", create=False)) == 1


def test_mailer_run_reads_the_configured_sources(run, project, monkeypatch):
    addresses = people(run, project, 1)
    sent = send(run, project)
    url = returns(project, dsn(sent[addresses[0]], addresses[0], status="5.1.1",
                               diagnostic="550 5.1.1 unknown"))
    monkeypatch.setenv("MAILER_FEEDBACK__SOURCES", url)
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["returns"]["kinds"] == {"bounce (hard)": 1}
    assert suppressed(run, addresses[0])


def test_a_message_on_standard_input_exits_as_an_mta_expects(run, project):
    addresses = people(run, project, 1)
    sent = send(run, project)
    bounce = dsn(sent[addresses[0]], addresses[0], status="5.1.1", diagnostic="550 unknown")
    command = [sys.executable, "-m", "mailer", "bounces", "process", "--source", "-",
               "--quiet"]
    taken = subprocess.run(command, input=bounce, capture_output=True, timeout=120)
    assert taken.returncode == 0, taken.stderr
    assert suppressed(run, addresses[0])
    broken = subprocess.run(command, input=bounce, capture_output=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "MAILER_DATABASE_URL":
                                 "postgresql://nobody@127.0.0.1:1/none",
                                 "MAILER_CONFIG": str(project / "mailer.toml")})
    assert broken.returncode == 75, broken.stderr  # try again later: the MTA keeps it
    assert b"Traceback" not in broken.stderr


@pytest.mark.parametrize("as_json", [True, False])
def test_explain_reads_a_file_without_a_project(tmp_path, monkeypatch, as_json):
    from click.testing import CliRunner

    from mailer.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    original = (b"From: n@groenbuurt.nl\nTo: an@example.org\nMessage-ID: <x@groenbuurt.nl>\n"
                b"Subject: Nieuws\n\nHallo\n")
    path = tmp_path / "bounce.eml"
    path.write_bytes(dsn(original, "an@example.org", status="5.1.1",
                         diagnostic="550 5.1.1 The email account that you tried to reach "
                                    "does not exist.",
                         to="bounces+abc@groenbuurt.nl"))
    args = ["bounces", "explain", str(path)] + (["--json"] if as_json else [])
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if as_json:
        data = json.loads(result.stdout)
        assert data["kind"] == "bounce" and data["attributed"] is None
        assert data["action"] == "suppress"
        assert data["recipients"][0] | {"diagnostic": ""} == {
            "address": "an@example.org", "action": "failed", "status": "5.1.1",
            "reply_code": 550, "reason": "userunknown", "hard": True, "sender_side": False,
            "diagnostic": "", "remote_mta": "mx.example.org"}
    else:
        assert "userunknown" in result.output
    missing = CliRunner().invoke(cli, ["bounces", "explain", str(tmp_path / "nope.eml")])
    assert missing.exit_code == 1 and "Cannot read" in missing.output


def test_smtp_rejections_go_through_the_same_classifier_and_policy(run, project,
                                                                  monkeypatch):
    from tests.support.smtpserver import SmtpServer

    addresses = people(run, project, 4)
    with SmtpServer() as smtp:
        for key, value in {"transport": f"smtp://127.0.0.1:{smtp.port}?tls=none",
                           "rate": 500, "retry_after": 0, "pause_failure_rate": 0.9}.items():
            monkeypatch.setenv(f"MAILER_DELIVERY__{key.upper()}", str(value))
        smtp.reply_to_rcpt(addresses[0], 550, "5.1.1 <p0@example.org>: No such user here")
        smtp.reply_to_rcpt(addresses[1], 554, "5.7.1 Service unavailable; Client host "
                                              "[192.0.2.1] blocked using zen.spamhaus.org")
        assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                   TEMPLATE, "--subject", "Nieuws").exit_code == 0
        result = run("campaign", "send", "dec", "--yes")
        assert result.exit_code == 0, result.output
    deliveries = json.loads(run("campaign", "deliveries", "dec", "--json").stdout)
    states = {d["email"]: d["state"] for d in deliveries}
    assert states == {addresses[0]: "bounced", addresses[1]: "failed",
                      addresses[2]: "sent", addresses[3]: "sent"}
    assert suppressed(run, addresses[0]) and not suppressed(run, addresses[1])
    hard = show(run, addresses[0])["feedback"]
    assert [(e["reason"], e["hard"], e["source"], e["action"]) for e in hard] == [
        ("userunknown", True, "smtp", "suppressed")]
    blocked = show(run, addresses[1])["feedback"][0]
    assert blocked["sender_side"] and blocked["action"] == "warned operator"
    assert "because of our sending" in run("campaign", "show", "dec").output


def test_bounces_are_read_over_imaps_with_the_password_from_the_secrets_file(
        run, project, mail_server, monkeypatch):
    addresses = people(run, project, 2)
    sent = send(run, project)
    user = mail_server.add_user()
    bounce = dsn(sent[addresses[1]], addresses[1], status="5.1.1",
                 diagnostic="550 5.1.1 The email account that you tried to reach does not "
                            "exist.")
    # The same return delivered twice (a crash between processing and moving): once.
    mail_server.deliver(user, bounce, bounce)
    secrets = project / "secrets.toml"
    secrets.write_text(secrets.read_text() + f'feedback_password = "{user.password}"\n')
    monkeypatch.setenv("MAILER_FEEDBACK__CAFILE", str(mail_server.cafile))
    summary = process(run, mail_server.url("imaps", user))
    assert summary["read"] == 2 and summary["duplicates"] == 1
    assert summary["kinds"] == {"bounce (hard)": 1}
    assert suppressed(run, addresses[1]) and not suppressed(run, addresses[0])
    assert mail_server.messages(user) == []
    assert len(mail_server.messages(user, "processed") or []) == 2
    assert user.password not in json.dumps(summary)
