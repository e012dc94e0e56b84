"""The providers' webhooks over real HTTP (uvicorn), on SQLite and PostgreSQL.

A real campaign is sent to the project's maildir outbox, so every webhook below names a
real message: its VERP token (SES's mail.source) or its Message-ID. SNS messages are signed
here exactly as AWS signs them (the documented string to sign, SHA1withRSA for
SignatureVersion 1, SHA256withRSA for 2) with a key and self-signed certificate made for
the session. The app fetches that certificate from
https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem through an injected
fetcher that sends the request, by the real urllib path with TLS verified, to a local
HTTPS server playing AWS; the same server answers the subscription confirmation. The
fetcher records every URL asked for, so the tests can say what was never fetched.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import text

import mailer.web.webhooks as web_webhooks
from mailer.feedback import webhooks
from mailer.project import Project
from mailer.web.app import create_app
from tests.support.webserver import Response, WebServer

TEMPLATE = "templates/newsletter.html.j2"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:mailer-ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"
POSTMARK_USER = "postmark-hook"
POSTMARK_PASSWORD = "correct horse battery staple"


# --- a key and certificate, and AWS played locally -------------------------------------------

@dataclass
class Pki:
    key: rsa.RSAPrivateKey
    pem: bytes
    certfile: Path
    keyfile: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An RSA key and a self-signed certificate: SNS's signing certificate, and the TLS
    certificate of the local server that plays AWS (valid for 127.0.0.1)."""
    folder = tmp_path_factory.mktemp("pki")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("sns.eu-west-1.amazonaws.com"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return Pki(key, pem, folder / "cert.pem", folder / "key.pem")


@dataclass
class Aws:
    """A local HTTPS server answering for sns.eu-west-1.amazonaws.com, and the fetcher
    the app is given, which sends the app's requests there."""

    pki: Pki
    fetched: list[str] = field(default_factory=list)  # what the app asked to fetch
    served: list[str] = field(default_factory=list)  # what reached the server
    port: int = 0

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        parts = urlsplit(url)
        local = f"https://127.0.0.1:{self.port}{parts.path}" + (
            f"?{parts.query}" if parts.query else "")
        return webhooks.fetch_url(local, context=ssl.create_default_context(
            cafile=str(self.pki.certfile)))


@pytest.fixture
def aws(pki: Pki) -> Iterator[Aws]:
    double = Aws(pki)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            double.served.append(self.path)
            if self.path == "/SimpleNotificationService-x.pem":
                body, status = pki.pem, 200
            elif self.path.startswith("/?Action=ConfirmSubscription"):
                body, status = b"<ConfirmSubscriptionResponse/>", 200
            else:
                body, status = b"not found", 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certfile, pki.keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    double.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield double
    server.shutdown()
    server.server_close()


# --- the project, a sent campaign, the app ---------------------------------------------------

def configure(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (project / "mailer.toml").open("a") as toml:
        toml.write(f'\n[feedback]\nses_topics = ["{TOPIC}"]\n'
                   f'postmark_webhook_user = "{POSTMARK_USER}"\n')
    monkeypatch.setenv("MAILER_POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)


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
    """Send a campaign to the maildir outbox; the messages by recipient (as in
    tests/test_feedback.py)."""
    result = run("campaign", "create", name, "--list", "nieuwsbrief", "--template", TEMPLATE,
                 "--subject", "Nieuws")
    assert result.exit_code == 0, result.output
    result = run("campaign", "send", name, "--yes")
    assert result.exit_code == 0, result.output
    sent = {}
    for path in (project / "outbox" / "new").glob("*"):
        data = path.read_bytes().replace(b"\r\n", b"\n")
        sent[message_from_bytes(data)["To"].split("<")[-1].rstrip(">")] = data
    return sent


@dataclass
class Site:
    web: WebServer
    project: Project
    sent: dict[str, bytes]
    addresses: list[str]

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        return self.web.request("POST", path, body=body, headers=headers or {})


def serve(project: Path, monkeypatch: pytest.MonkeyPatch,
          aws: Aws | None) -> tuple[WebServer, Project]:
    if aws is not None:
        monkeypatch.setattr(web_webhooks, "routes",
                            functools.partial(web_webhooks.routes, fetch=aws.fetch))
    app_project = Project.load()
    return WebServer(create_app(app_project)), app_project


@pytest.fixture
def site(run, project: Path, aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    configure(project, monkeypatch)
    addresses = people(run, project, 3)
    sent = send(run, project)
    web, app_project = serve(project, monkeypatch, aws)
    with web:
        yield Site(web, app_project, sent, addresses)
    app_project.close()


def show(run, email: str) -> dict:  # noqa: ANN001
    result = run("subscribers", "show", email, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def suppressed(run, email: str) -> bool:  # noqa: ANN001
    return run("suppression", "check", email).exit_code == 0


def event_count(project: Project) -> int:
    with project.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM feedback_event")).scalar_one()


# --- SNS, signed as AWS signs ----------------------------------------------------------------

def string_to_sign(message: dict[str, str]) -> bytes:
    """AWS's documented string to sign: name, newline, value, newline, in this order;
    Subject only when the notification has one."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", *(["Subject"] if "Subject" in message else []),
                 "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                 "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names).encode()


def sign(key: rsa.RSAPrivateKey, message: dict[str, str]) -> dict[str, str]:
    digest = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), digest)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def sns(pki: Pki, payload: dict[str, Any] | str, *, kind: str = "Notification",
        version: str = "1", topic: str = TOPIC, cert_url: str = CERT_URL,
        message_id: str | None = None, **extra: str) -> dict[str, str]:
    message = {"Type": kind, "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic,
               "Message": payload if isinstance(payload, str) else json.dumps(payload),
               "Timestamp": "2026-12-01T10:00:00.000Z", "SignatureVersion": version,
               "SigningCertURL": cert_url}
    if kind == "Notification":
        message["Subject"] = "Amazon SES Email Event Notification"
        message["UnsubscribeURL"] = ("https://sns.eu-west-1.amazonaws.com/?Action="
                                     f"Unsubscribe&SubscriptionArn={topic}:1")
    else:
        message["Token"] = "2336412f37fb687f5d51e6e2425f004aed8"
        message["SubscribeURL"] = ("https://sns.eu-west-1.amazonaws.com/?Action="
                                   f"ConfirmSubscription&TopicArn={topic}&Token=2336412f")
    message.update(extra)
    return sign(pki.key, message)


def post_sns(site: Site, message: dict[str, str]) -> Response:
    return site.post("/webhooks/ses", json.dumps(message).encode(), {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": message["Type"]})


def ses_mail(sent: bytes, *, with_token: bool = True) -> dict[str, Any]:
    """SES's `mail` object for one of our messages."""
    msg = message_from_bytes(sent)
    source = msg["Return-Path"].strip("<>") if with_token else "nieuws@example.be"
    return {"timestamp": "2026-12-01T09:59:00.000Z", "source": source,
            "messageId": "0102018c-ses-own-id-000000", "destination": [msg["To"]],
            "headersTruncated": False,
            "headers": [{"name": "From", "value": msg["From"]},
                        {"name": "To", "value": msg["To"]},
                        {"name": "Message-ID", "value": msg["Message-ID"]},
                        {"name": "Subject", "value": "Nieuws"}],
            "commonHeaders": {"from": [msg["From"]], "to": [msg["To"]],
                              "messageId": msg["Message-ID"], "subject": "Nieuws"}}


def ses_bounce(sent: bytes, address: str, *, bounce_type: str = "Permanent",
               sub_type: str = "General", status: str | None = "5.1.1",
               diagnostic: str | None = "smtp; 550 5.1.1 user unknown",
               with_token: bool = True) -> dict[str, Any]:
    recipient = {"emailAddress": address, "action": "failed"}
    if status:
        recipient["status"] = status
    if diagnostic:
        recipient["diagnosticCode"] = diagnostic
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type,
                       "bouncedRecipients": [recipient],
                       "timestamp": "2026-12-01T10:00:00.000Z",
                       "feedbackId": "0102018c-feedback", "reportingMTA": "dsn; a1.ses"},
            "mail": ses_mail(sent, with_token=with_token)}


def ses_complaint(sent: bytes, address: str) -> dict[str, Any]:
    return {"notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": address}],
                          "timestamp": "2026-12-01T10:00:00.000Z",
                          "feedbackId": "0102018c-complaint", "userAgent": "Yahoo!",
                          "complaintFeedbackType": "abuse"},
            "mail": ses_mail(sent, with_token=False)}


# --- Amazon SES ------------------------------------------------------------------------------

def test_a_hard_bounce_through_sns_suppresses_and_a_repeat_counts_once(run, site, pki, aws):
    p0 = site.addresses[0]
    message = sns(pki, ses_bounce(site.sent[p0], p0))
    first = post_sns(site, message)
    assert first.status == 200, first.text
    assert suppressed(run, p0) and not suppressed(run, site.addresses[1])
    events = show(run, p0)["feedback"]
    assert [(e["kind"], e["reason"], e["hard"], e["attributed_by"], e["campaign"],
             e["source"], e["action"]) for e in events] == [
        ("bounce", "userunknown", True, "token", "dec", "webhook:ses", "suppressed")]
    # SNS delivers at least once: the same MessageId again is 200 and counts once.
    again = post_sns(site, message)
    assert again.status == 200 and again.text == "duplicate"
    assert len(show(run, p0)["feedback"]) == 1
    # The certificate was fetched once, through the host rule, and cached.
    assert aws.fetched == [CERT_URL]
    other = sns(pki, ses_bounce(site.sent[site.addresses[1]], site.addresses[1],
                                bounce_type="Transient", status="4.2.2",
                                diagnostic="smtp; 452 4.2.2 mailbox full"))
    assert post_sns(site, other).status == 200
    assert aws.fetched == [CERT_URL]
    soft = show(run, site.addresses[1])["feedback"]
    assert [(e["reason"], e["hard"], e["action"]) for e in soft] == [
        ("mailboxfull", False, "soft bounce 1 of 3")]
    assert not suppressed(run, site.addresses[1])


def test_signature_version_2_and_attribution_by_message_id(run, site, pki):
    """No token in mail.source (SES's own MAIL FROM): our Message-ID in the headers finds
    the delivery; a Permanent bounce without a status is classified with a 5.0.0 hint."""
    p1 = site.addresses[1]
    bounce = ses_bounce(site.sent[p1], p1, sub_type="NoEmail", status=None, diagnostic=None,
                        with_token=False)
    response = post_sns(site, sns(pki, bounce, version="2"))
    assert response.status == 200, response.text
    events = show(run, p1)["feedback"]
    assert [(e["reason"], e["hard"], e["status"], e["attributed_by"], e["campaign"])
            for e in events] == [("userunknown", True, "5.0.0", "message-id", "dec")]
    assert suppressed(run, p1)
    deliveries = json.loads(run("campaign", "deliveries", "dec", "--json").stdout)
    assert {d["email"]: d["state"] for d in deliveries}[p1] == "bounced"


def test_a_complaint_unsubscribes_from_everything_and_suppresses(run, site, pki):
    p2 = site.addresses[2]
    response = post_sns(site, sns(pki, ses_complaint(site.sent[p2], p2), version="2"))
    assert response.status == 200, response.text
    person = show(run, p2)
    assert [m["status"] for m in person["lists"]] == ["unsubscribed"]
    assert [(e["kind"], e["attributed_by"], e["action"]) for e in person["feedback"]] == [
        ("complaint", "message-id", "unsubscribed from all, suppressed")]
    assert suppressed(run, p2)
    assert [m["status"] for m in show(run, site.addresses[0])["lists"]] == ["confirmed"]


def test_deliveries_and_other_notifications_are_taken_and_ignored(run, site, pki):
    p0 = site.addresses[0]
    delivery = {"notificationType": "Delivery", "mail": ses_mail(site.sent[p0]),
                "delivery": {"recipients": [p0], "smtpResponse": "250 ok"}}
    assert post_sns(site, sns(pki, delivery)).text == "ignored"
    assert post_sns(site, sns(pki, "not JSON at all")).text == "ignored"
    assert event_count(site.project) == 0


@pytest.mark.parametrize("case", [
    "forged-signature", "altered-message", "wrong-topic", "cert-on-another-host",
    "cert-over-http", "cert-on-another-port", "cert-with-user", "unknown-version",
    "unsigned", "header-mismatch", "not-json"])
def test_a_request_that_fails_verification_is_403_and_changes_nothing(run, site, pki, aws,
                                                                       case):
    p0 = site.addresses[0]
    bounce = ses_bounce(site.sent[p0], p0)
    headers = {"Content-Type": "text/plain; charset=UTF-8",
               "x-amz-sns-message-type": "Notification"}
    message = sns(pki, bounce)
    if case == "forged-signature":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        message = sign(other, {k: v for k, v in message.items() if k != "Signature"})
    elif case == "altered-message":
        message["Message"] = json.dumps(ses_bounce(site.sent[site.addresses[1]],
                                                   site.addresses[1]))
    elif case == "wrong-topic":
        message = sns(pki, bounce, topic="arn:aws:sns:eu-west-1:999999999999:someone-else")
    elif case == "cert-on-another-host":
        message = sns(pki, bounce,
                      cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/x.pem")
    elif case == "cert-over-http":
        message = sns(pki, bounce, cert_url=CERT_URL.replace("https:", "http:"))
    elif case == "cert-on-another-port":
        message = sns(pki, bounce, cert_url=CERT_URL.replace(".com/", ".com:8443/"))
    elif case == "cert-with-user":
        message = sns(pki, bounce, cert_url=CERT_URL.replace("https://",
                                                             "https://evil.example@"))
    elif case == "unknown-version":
        message = sns(pki, bounce, version="3")
    elif case == "unsigned":
        message.pop("Signature")
    elif case == "header-mismatch":
        headers["x-amz-sns-message-type"] = "SubscriptionConfirmation"
    body = b"{not json" if case == "not-json" else json.dumps(message).encode()
    response = site.post("/webhooks/ses", body, headers)
    assert response.status == 403, response.text
    assert event_count(site.project) == 0
    assert not suppressed(run, p0)
    # Nothing but the real SNS certificate address was ever fetched.
    assert set(aws.fetched) <= {CERT_URL}
    if case.startswith("cert-") or case in ("wrong-topic", "not-json", "unknown-version"):
        assert aws.fetched == []


def test_a_subscription_confirmation_gets_its_subscribe_url_once_verified(site, pki, aws):
    confirmation = sns(pki, "You have chosen to subscribe to the topic …",
                       kind="SubscriptionConfirmation")
    response = post_sns(site, confirmation)
    assert response.status == 200 and response.text == "subscribed"
    assert aws.fetched == [CERT_URL, confirmation["SubscribeURL"]]
    assert aws.served[-1].startswith("/?Action=ConfirmSubscription&TopicArn=")
    # A SubscribeURL elsewhere is refused, though signed: nothing is fetched.
    elsewhere = sns(pki, "…", kind="SubscriptionConfirmation",
                    SubscribeURL="https://evil.example/?Action=ConfirmSubscription")
    assert post_sns(site, elsewhere).status == 403
    # A forged confirmation is not confirmed.
    forged = {**confirmation, "SubscribeURL": confirmation["SubscribeURL"] + "&x=1"}
    assert post_sns(site, forged).status == 403
    assert len(aws.fetched) == 2 and event_count(site.project) == 0
    unsubscribed = post_sns(site, sns(pki, "…", kind="UnsubscribeConfirmation",
                                      version="2"))
    assert unsubscribed.status == 200 and len(aws.fetched) == 2


def test_a_certificate_that_cannot_be_fetched_is_503_so_sns_retries(site, pki, aws):
    missing = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-gone.pem"
    p0 = site.addresses[0]
    response = post_sns(site, sns(pki, ses_bounce(site.sent[p0], p0), cert_url=missing))
    assert response.status == 503 and aws.served == ["/SimpleNotificationService-gone.pem"]
    assert event_count(site.project) == 0


# --- Postmark --------------------------------------------------------------------------------

def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def postmark_bounce(address: str, *, ident: int = 4323372036854775807,
                    kind: str = "HardBounce", **extra: Any) -> bytes:
    record = {"RecordType": "Bounce", "ID": ident, "Type": kind, "TypeCode": 1,
              "Name": "Hard bounce", "Tag": "dec", "MessageStream": "broadcast",
              "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "ServerID": 23,
              "Description": "The server was unable to deliver your message (ex: unknown "
                             "user, mailbox not found).",
              "Details": "smtp;550 5.1.1 The email account that you tried to reach does not "
                         "exist.", "Email": address, "From": "nieuws@example.be",
              "BouncedAt": "2026-12-01T10:00:00Z", "DumpAvailable": False,
              "Inactive": True, "CanActivate": True, "Subject": "Nieuws", **extra}
    return json.dumps(record).encode()


def test_postmark_needs_the_right_password(run, site):
    p0 = site.addresses[0]
    for headers in (basic(POSTMARK_USER, "wrong"), basic("someone", POSTMARK_PASSWORD),
                    {"Content-Type": "application/json"},
                    {"Authorization": "Bearer " + POSTMARK_PASSWORD}):
        response = site.post("/webhooks/postmark", postmark_bounce(p0), headers)
        assert response.status == 403
    assert event_count(site.project) == 0 and not suppressed(run, p0)
    right = site.post("/webhooks/postmark", postmark_bounce(p0),
                      basic(POSTMARK_USER, POSTMARK_PASSWORD))
    assert right.status == 200 and right.text == "recorded"
    assert suppressed(run, p0)
    events = show(run, p0)["feedback"]
    assert [(e["kind"], e["reason"], e["hard"], e["status"], e["attributed_by"],
             e["source"]) for e in events] == [
        ("bounce", "userunknown", True, "5.1.1", "address", "webhook:postmark")]
    again = site.post("/webhooks/postmark", postmark_bounce(p0),
                      basic(POSTMARK_USER, POSTMARK_PASSWORD))
    assert again.status == 200 and again.text == "duplicate"
    assert len(show(run, p0)["feedback"]) == 1


def test_postmark_complaints_soft_bounces_our_message_id_and_other_records(run, site):
    auth = basic(POSTMARK_USER, POSTMARK_PASSWORD)
    p1, p2 = site.addresses[1], site.addresses[2]
    our_id = message_from_bytes(site.sent[p1])["Message-ID"]
    soft = postmark_bounce(p1, ident=11, kind="SoftBounce", Details="",
                           Description="Unable to temporarily deliver this message",
                           Metadata={"message-id": our_id})
    assert site.post("/webhooks/postmark", soft, auth).status == 200
    events = show(run, p1)["feedback"]
    assert [(e["hard"], e["attributed_by"], e["campaign"], e["action"]) for e in events] == [
        (False, "message-id", "dec", "soft bounce 1 of 3")]
    assert not suppressed(run, p1)
    complaint = json.dumps({
        "RecordType": "SpamComplaint", "MessageStream": "broadcast", "ID": 12,
        "Type": "SpamComplaint", "TypeCode": 512, "Name": "Spam complaint",
        "MessageID": "0000-postmark", "ServerID": 23, "Email": p2,
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details", "From": "nieuws@example.be",
        "BouncedAt": "2026-12-01T10:00:00Z", "Subject": "Nieuws"}).encode()
    assert site.post("/webhooks/postmark", complaint, auth).status == 200
    person = show(run, p2)
    assert [m["status"] for m in person["lists"]] == ["unsubscribed"]
    assert person["feedback"][0]["action"] == "unsubscribed from all, suppressed"
    assert suppressed(run, p2)
    delivery = json.dumps({"RecordType": "Delivery", "ID": 13, "Recipient": p2}).encode()
    assert site.post("/webhooks/postmark", delivery, auth).text == "ignored"
    assert site.post("/webhooks/postmark", b"[1, 2", auth).status == 400
    assert event_count(site.project) == 2


# --- not configured --------------------------------------------------------------------------

def test_webhooks_that_are_not_configured_answer_404(run, project, monkeypatch):
    web, app_project = serve(project, monkeypatch, None)
    with web:
        assert web.request("POST", "/webhooks/ses", body=b"{}").status == 404
        assert web.request("POST", "/webhooks/postmark", body=b"{}",
                           headers=basic("", "")).status == 404
    app_project.close()


def test_a_postmark_user_without_its_password_leaves_the_webhook_off(run, project,
                                                                     monkeypatch):
    configure(project, monkeypatch)
    monkeypatch.delenv("MAILER_POSTMARK_WEBHOOK_PASSWORD")
    web, app_project = serve(project, monkeypatch, None)
    with web:
        response = web.request("POST", "/webhooks/postmark", body=b"{}",
                               headers=basic(POSTMARK_USER, ""))
        assert response.status == 404
    app_project.close()


# --- the pure parts --------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/x.pem",
    "https://sns.us-gov-west-1.amazonaws.com:443/x.pem",
])
def test_sns_addresses_that_are_accepted(url):
    assert webhooks.check_sns_url(url) == url


@pytest.mark.parametrize("url", [
    "http://sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
    "https://user@sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com\\@evil.example/x.pem",
    "https://s3.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu_west.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com./x.pem",
    "ftp://sns.eu-west-1.amazonaws.com/x.pem",
    "", None,
])
def test_sns_addresses_that_are_refused(url):
    with pytest.raises(webhooks.Refused):
        webhooks.check_sns_url(url)


def test_the_default_fetcher_will_not_leave_https():
    with pytest.raises(OSError):
        webhooks.fetch_url("http://127.0.0.1:1/x.pem")


def test_ses_and_postmark_reports_by_kind():
    delay = webhooks.ses_report({
        "eventType": "DeliveryDelay", "mail": {"source": "nieuws@example.be"},
        "deliveryDelay": {"delayType": "MailboxFull", "delayedRecipients": [
            {"emailAddress": "an@example.org", "status": "4.2.2",
             "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}]}})
    assert delay is not None and delay.kind == "delayed"
    assert [(r.action, r.reason.value, r.hard) for r in delay.recipients] == [
        ("delayed", "mailboxfull", False)]
    assert webhooks.ses_report({"notificationType": "Complaint", "complaint": {
        "complaintFeedbackType": "not-spam"}}).kind == "other"
    spam = webhooks.postmark_report(json.loads(postmark_bounce(
        "an@example.org", kind="SpamNotification", Details="",
        Description="The message was delivered, but was either blocked by the user, or "
                    "classified as spam, bulk mail, or had rejected content.")))
    assert spam is not None and spam.kind == "bounce"
    assert [(r.hard, r.sender_side) for r in spam.recipients] == [(False, True)]
    auto = webhooks.postmark_report(json.loads(postmark_bounce("an@example.org",
                                                               kind="AutoResponder")))
    assert auto is not None and (auto.kind, auto.sender) == ("auto-reply", "an@example.org")
    assert webhooks.postmark_report({"RecordType": "Open"}) is None
    assert webhooks.provider_key("ses", "x" * 100).startswith("ses:")
    assert len(webhooks.provider_key("ses", "x" * 100)) == 64
