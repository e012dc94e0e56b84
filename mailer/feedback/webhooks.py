"""The providers' webhooks: what Amazon SES (through SNS) and Postmark say came back, checked
and turned into the same `reports.Report` a returned message gives.

No web framework here, on purpose: verification and mapping are plain functions of the
request's bytes (and, for SNS, of a certificate fetcher), so the tests can drive them with
any message and any certificate, and mailer/web/webhooks.py stays a thin adapter. The
processor then records a webhook's report exactly like a returned message's: the same
classifier decides the reason (`reports.failed_recipient`), the same attribution finds the
person (our Message-ID via `Original.message_ids`, the signed VERP token via
`Report.envelope_tokens`), the same policy acts.

Amazon SES through SNS. Anyone can POST to the public address, so nothing is believed
before the message is verified, and nothing is fetched for a message that could not be:

1. the body is the SNS JSON envelope (Notification, SubscriptionConfirmation or
   UnsubscribeConfirmation), whose TopicArn is one of `[feedback] ses_topics`;
2. its SigningCertURL is https on a host `sns.<region>.amazonaws.com(.cn)` (default port):
   any other address is refused before any fetch, so a forged message cannot make the
   server fetch an attacker's certificate, nor probe the network behind it;
3. the certificate is fetched (TLS verified, short timeout, no redirects, size capped),
   must be current, and is cached by URL;
4. the signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) is checked over the
   canonical string AWS documents: "Name\\nvalue\\n" for Message, MessageId, Subject (when
   present), Timestamp, TopicArn, Type of a notification; Message, MessageId,
   SubscribeURL, Timestamp, Token, TopicArn, Type of a (un)subscribe confirmation.

A SubscriptionConfirmation is answered by GETting its SubscribeURL (same host rule), once
verified. Failing any check raises `Refused` (the web answers 403 and changes nothing);
failing to reach AWS raises `Unavailable` (503: not the sender's fault, SNS tries again).

Postmark signs nothing: the webhook URL carries HTTP basic auth (`[feedback]
postmark_webhook_user` and the secret `postmark_webhook_password`), compared in constant
time. Postmark's MessageID is its own; our Message-ID or token is used when the payload
carries one (Headers, Metadata, the bounce dump in Content), else the bounced address.

Idempotency: the key of an event is the provider's id for the notification (SNS MessageId,
Postmark ID) prefixed by the provider's name, so a retried delivery counts once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.feedback.reasons import Reason, extract_codes
from mailer.feedback.reports import Failed, Original, Report, failed_recipient, tokens_in

__all__ = ["SNS_HOST", "Accepted", "Fetch", "Malformed", "PostmarkWebhook", "Refused",
           "SesWebhook", "Unavailable", "check_sns_url", "fetch_url", "postmark_report",
           "provider_key", "ses_report", "sns_canonical"]

log = logging.getLogger("mailer.feedback")

Fetch = Callable[[str], bytes]  # GET a URL, the body; raises OSError when it cannot

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                        "TopicArn", "Type")
_SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1,
                                                           "2": hashes.SHA256}
_MSGID = re.compile(r"<?([^<>\s]+@[^<>\s]+)>?")
_MSGID_LINE = re.compile(r"(?im)^message-id:\s*<([^<>\s]+@[^<>\s]+)>")
_FETCH_LIMIT = 65536  # a PEM certificate (and a confirmation's answer) is a few kB
_FETCH_TIMEOUT = 5.0
_CACHE_SIZE = 32
_KEY_LENGTH = 64  # feedback_event.message_key


class Refused(Exception):
    """The request is not what it claims to be: answered 403, nothing changes."""


class Unavailable(Exception):
    """AWS could not be reached (the certificate, the subscribe URL): answered 503, so
    the provider sends it again later."""


class Malformed(Exception):
    """An authenticated request whose body makes no sense: answered 400."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified webhook request: what to record (`report` None: nothing)."""

    provider: str  # ses | postmark
    key: str | None
    report: Report | None
    note: str  # for the log and the response: notification, subscribed, ignored …


def provider_key(provider: str, ident: object) -> str:
    """The idempotency key of a provider's notification (fits feedback_event.message_key)."""
    key = f"{provider}:{ident}"
    if len(key) > _KEY_LENGTH:
        digest = hashlib.sha256(str(ident).encode()).hexdigest()
        key = f"{provider}:{digest}"[:_KEY_LENGTH]
    return key


# --- fetching from AWS ------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere; the host rule holds for the URL we were given."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_url(url: str, *, context: ssl.SSLContext | None = None,
              timeout: float = _FETCH_TIMEOUT, limit: int = _FETCH_LIMIT) -> bytes:
    """GET an https URL, the certificate verified, no redirects, at most `limit` bytes.
    Raises OSError (urllib's errors are OSErrors) when it cannot."""
    if urlsplit(url).scheme != "https":
        raise OSError(f"not an https URL: {url}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context or ssl.create_default_context()),
        _NoRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "mailer-webhooks"})
    with opener.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"{url} answered {response.status}")
        data: bytes = response.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{url} answered more than {limit} bytes")
    return data


def check_sns_url(url: object) -> str:
    """The URL, if it is https on an SNS host at the default port; else `Refused`."""
    if not isinstance(url, str) or not url:
        raise Refused("no certificate or subscribe URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {url!r}") from exc
    if parts.scheme != "https":
        raise Refused(f"not https: {url!r}")
    if parts.username is not None or parts.password is not None or port not in (None, 443):
        raise Refused(f"not a plain SNS address: {url!r}")
    host = parts.hostname or ""
    if not SNS_HOST.match(host) or parts.netloc.lower() not in (host, f"{host}:443"):
        raise Refused(f"not an SNS host: {url!r}")
    return url


# --- Amazon SES through SNS ----------------------------------------------------------------

def sns_canonical(envelope: Mapping[str, Any]) -> bytes:
    """The string an SNS message's signature is made over (AWS's documented order)."""
    kind = envelope.get("Type")
    names = _NOTIFICATION_FIELDS if kind == "Notification" else _CONFIRMATION_FIELDS
    out = []
    for name in names:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise Refused(f"the SNS message has no {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


class SesWebhook:
    """Verifies SNS messages for the configured topics and maps SES notifications.

    `fetch` GETs the certificate and the subscribe URL (default `fetch_url`); tests pass
    their own. Thread-safe: the web app calls `receive` from worker threads."""

    def __init__(self, topics: list[str], *, fetch: Fetch | None = None) -> None:
        self.topics = frozenset(topics)
        self.fetch = fetch or fetch_url
        self._keys: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}
        self._lock = threading.Lock()

    def receive(self, body: bytes, message_type: str | None = None) -> Accepted:
        """One POST from SNS (its body and x-amz-sns-message-type header)."""
        envelope = self.verify(body, message_type)
        kind = envelope["Type"]
        key = provider_key("ses", envelope["MessageId"])
        if kind == "SubscriptionConfirmation":
            url = check_sns_url(envelope.get("SubscribeURL"))
            try:
                self.fetch(url)
            except OSError as exc:
                raise Unavailable(f"could not confirm the subscription: {exc}") from exc
            log.info("confirmed the SNS subscription to %s", envelope["TopicArn"])
            return Accepted("ses", key, None, "subscribed")
        if kind == "UnsubscribeConfirmation":
            log.warning("SNS says the subscription to %s was removed", envelope["TopicArn"])
            return Accepted("ses", key, None, "unsubscribed")
        try:
            message = json.loads(envelope["Message"])
        except ValueError:
            message = None
        report = ses_report(message) if isinstance(message, dict) else None
        if report is None:
            return Accepted("ses", key, None, "ignored")
        return Accepted("ses", key, report, "notification")

    def verify(self, body: bytes, message_type: str | None = None) -> dict[str, Any]:
        """The SNS envelope, if it is one of ours and its signature holds; else `Refused`
        (`Unavailable` if the certificate could not be fetched)."""
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused("the body is not JSON") from exc
        if not isinstance(envelope, dict):
            raise Refused("the body is not an SNS message")
        kind = envelope.get("Type")
        if kind not in _SNS_TYPES:
            raise Refused(f"not an SNS message type: {kind!r}")
        if message_type is not None and message_type != kind:
            raise Refused("x-amz-sns-message-type does not match the message")
        if envelope.get("TopicArn") not in self.topics:
            raise Refused(f"not a configured topic: {envelope.get('TopicArn')!r}")
        if not isinstance(envelope.get("MessageId"), str) or not envelope["MessageId"]:
            raise Refused("the SNS message has no MessageId")
        algorithm = _HASHES.get(str(envelope.get("SignatureVersion")))
        if algorithm is None:
            raise Refused(f"unknown SignatureVersion {envelope.get('SignatureVersion')!r}")
        url = check_sns_url(envelope.get("SigningCertURL"))
        canonical = sns_canonical(envelope)
        try:
            signature = base64.b64decode(str(envelope.get("Signature") or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused("the signature is not base64") from exc
        if not signature:
            raise Refused("the SNS message is not signed")
        try:
            self._key(url).verify(signature, canonical, padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise Refused("the signature does not match") from exc
        return envelope

    def _key(self, url: str) -> rsa.RSAPublicKey:
        """The public key of the certificate at `url`, cached while it is valid."""
        now = datetime.now(UTC)
        with self._lock:
            cached = self._keys.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            pem = self.fetch(url)
        except OSError as exc:
            raise Unavailable(f"could not fetch the SNS certificate {url}: {exc}") from exc
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise Refused(f"{url} is not a PEM certificate") from exc
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Refused(f"the certificate at {url} is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused(f"the certificate at {url} has no RSA key")
        with self._lock:
            if len(self._keys) >= _CACHE_SIZE:
                self._keys.clear()
            self._keys[url] = (key, certificate.not_valid_after_utc)
        return key


# What SES's bounce subtypes mean, in words the classifier reads, for a recipient that
# comes without a diagnosticCode (https://docs.aws.amazon.com/ses/latest/dg/
# notification-contents.html#bounce-types).
_SES_SUBTYPES = {
    "NoEmail": "the target email address does not exist",
    "Suppressed": "the address is on the suppression list because it has a recent history "
                  "of bouncing as an invalid address",
    "OnAccountSuppressionList": "the address is on the account-level suppression list",
    "MailboxFull": "the recipient's mailbox is full",
    "MessageTooLarge": "the message is too large",
    "ContentRejected": "the content was denied by policy at the receiving server",
    "AttachmentRejected": "an illegal attachment was rejected by the receiving server",
}


def ses_report(message: Mapping[str, Any]) -> Report | None:
    """An SES notification (or event-publishing record) as a Report; None for what is
    not a failure or complaint (Delivery, Send, Open, …)."""
    kind = message.get("notificationType") or message.get("eventType")
    mail = _dict(message.get("mail"))
    original, envelope, subject = _ses_original(mail)
    if kind == "Bounce":
        bounce = _dict(message.get("bounce"))
        bounce_type = str(bounce.get("bounceType") or "Undetermined")
        sub_type = str(bounce.get("bounceSubType") or "")
        hint = {"Permanent": "5.0.0", "Transient": "4.0.0"}.get(bounce_type)
        fallback = f"Amazon SES: {bounce_type} bounce ({sub_type})"
        if sub_type in _SES_SUBTYPES:
            fallback += f": {_SES_SUBTYPES[sub_type]}"
        recipients = tuple(_ses_recipient(r, "failed", hint, fallback)
                           for r in _list(bounce.get("bouncedRecipients")))
        if not recipients:
            return None
        return Report("bounce", recipients, original, envelope, None, subject,
                      notes=(f"ses: {bounce_type}/{sub_type}",))
    if kind == "DeliveryDelay":
        delay = _dict(message.get("deliveryDelay"))
        recipients = tuple(
            _ses_recipient(r, "delayed", "4.0.0",
                           f"Amazon SES: delayed ({delay.get('delayType') or 'unknown'})")
            for r in _list(delay.get("delayedRecipients")))
        return Report("delayed", recipients, original, envelope, None, subject) \
            if recipients else None
    if kind == "Complaint":
        complaint = _dict(message.get("complaint"))
        feedback_type = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        if feedback_type == "not-spam":
            return Report("other", (), original, envelope, None, subject, feedback_type)
        recipients = tuple(
            _complained(str(r.get("emailAddress") or "") or None, feedback_type)
            for r in _list(complaint.get("complainedRecipients")))
        return Report("complaint", recipients or (_complained(None, feedback_type),),
                      original, envelope, None, subject, feedback_type)
    return None


def _ses_recipient(recipient: Mapping[str, Any], action: str, hint: str | None,
                   fallback: str) -> Failed:
    diagnostic = _strip_type(str(recipient.get("diagnosticCode") or "")) or fallback
    reply_code, found = extract_codes(diagnostic)
    status = _status(recipient.get("status")) or found or hint
    address = str(recipient.get("emailAddress") or "").strip().strip("<>").lower() or None
    return failed_recipient(address, str(recipient.get("action") or action).lower(), status,
                            reply_code, diagnostic)


def _ses_original(mail: Mapping[str, Any]) -> tuple[Original, tuple[tuple[str, str], ...],
                                                    str]:
    """What the SES `mail` object says about our message: (Original, envelope tokens,
    subject)."""
    common = _dict(mail.get("commonHeaders"))
    ids = _message_ids(common.get("messageId"))
    values = []
    for header in _list(mail.get("headers")):
        name, value = str(header.get("name") or ""), str(header.get("value") or "")
        if name.lower() == "message-id":
            ids += _message_ids(value)
        values.append(value)
    header_tokens = _tokens(values)
    envelope = _tokens([str(mail.get("source") or "")])
    to = tuple(str(a).lower() for a in _list(mail.get("destination"), str) if "@" in str(a))
    subject = str(common.get("subject") or "")
    return Original(tuple(dict.fromkeys(ids)), header_tokens, to), envelope, subject


# --- Postmark -------------------------------------------------------------------------------

# Postmark's bounce types (https://postmarkapp.com/developer/api/bounce-api#bounce-types):
# a bounce with a status hint for the classifier when the details carry no code, or
# another kind of report. Types not named here are recorded as `other`.
_POSTMARK_BOUNCES: dict[str, tuple[str | None, str]] = {
    "HardBounce": ("5.0.0", "hard bounce"),
    "BadEmailAddress": ("5.1.3", "bad email address"),
    "SoftBounce": ("4.0.0", "soft bounce"),
    "Transient": ("4.0.0", "transient"),
    "DnsError": ("4.4.0", "DNS error"),
    "Unknown": (None, "unknown"),
    "SpamNotification": (None, "spam notification"),
    "VirusNotification": (None, "virus notification"),
    "Blocked": (None, "blocked"),
    "DMARCPolicy": (None, "DMARC policy"),
    "SMTPApiError": (None, "SMTP API error"),
}


class PostmarkWebhook:
    """Basic auth and mapping for Postmark's bounce and spam complaint webhooks."""

    def __init__(self, user: str, password: str) -> None:
        if not user or not password:
            raise ValueError("the Postmark webhook needs a user and a password")
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")

    def authorised(self, header: str | None) -> bool:
        """Whether an Authorization header names our user and password (constant time)."""
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            hmac.compare_digest(b"", self._password)  # the same work either way
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        right = hmac.compare_digest(user, self._user)
        right &= hmac.compare_digest(password, self._password)
        return right

    def receive(self, body: bytes) -> Accepted:
        """One authorised POST; `Malformed` if the body is not a Postmark record."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Malformed("the body is not JSON") from exc
        if not isinstance(payload, dict):
            raise Malformed("the body is not a Postmark record")
        ident = payload.get("ID")
        key = provider_key("postmark", ident if ident not in (None, "") else
                           hashlib.sha256(body).hexdigest()[:40])
        report = postmark_report(payload)
        if report is None:
            return Accepted("postmark", key, None, "ignored")
        return Accepted("postmark", key, report, str(payload.get("RecordType")))


def postmark_report(payload: Mapping[str, Any]) -> Report | None:
    """A Postmark Bounce or SpamComplaint record as a Report; None for other records
    (Delivery, Open, Click, SubscriptionChange)."""
    record = payload.get("RecordType")
    kind = str(payload.get("Type") or "")
    if record not in ("Bounce", "SpamComplaint"):
        return None
    address = str(payload.get("Email") or "").strip().strip("<>").lower() or None
    original, envelope = _postmark_original(payload)
    subject = str(payload.get("Subject") or "")
    notes = (f"postmark: {kind or record}",)
    if record == "SpamComplaint" or kind == "SpamComplaint":
        return Report("complaint", (_complained(address, "abuse"),), original, envelope,
                      None, subject, "abuse", notes)
    if kind == "AutoResponder":
        return Report("auto-reply", (), original, envelope, address, subject, notes=notes)
    if kind not in _POSTMARK_BOUNCES:
        return Report("other", (), original, envelope, address, subject, notes=notes)
    hint, name = _POSTMARK_BOUNCES[kind]
    details = _strip_type(str(payload.get("Details") or ""))
    description = str(payload.get("Description") or "")
    diagnostic = details or description or f"Postmark: {name}"
    if not extract_codes(diagnostic)[1] and description and description not in diagnostic:
        diagnostic = f"{diagnostic} ({description})"
    reply_code, status = extract_codes(diagnostic)
    recipient = failed_recipient(address, "failed", status or hint, reply_code, diagnostic)
    return Report("bounce", (recipient,), original, envelope, None, subject, notes=notes)


def _postmark_original(payload: Mapping[str, Any]) -> tuple[Original,
                                                            tuple[tuple[str, str], ...]]:
    """Our Message-ID and token where the payload has them: Headers and Metadata (set by
    whoever sent through Postmark: ours), then the bounce dump (Content)."""
    headers = payload.get("Headers")
    if isinstance(headers, dict):
        header_pairs = [(str(k), str(v)) for k, v in headers.items()]
    else:
        header_pairs = [(str(h.get("Name") or ""), str(h.get("Value") or ""))
                        for h in _list(headers)]
    metadata = payload.get("Metadata")
    metadata_pairs = [(str(k), str(v)) for k, v in metadata.items()] \
        if isinstance(metadata, dict) else []
    ids = [i for name, value in header_pairs + metadata_pairs
           if name.lower().replace("_", "-") in ("message-id", "messageid")
           for i in _message_ids(value)]
    content = str(payload.get("Content") or "")
    ids += _MSGID_LINE.findall(content)
    # Metadata is what we attached when sending: as strong as the envelope. The headers
    # and the bounce dump are the returned original's.
    envelope = _tokens(v for _, v in metadata_pairs)
    returned = _tokens([*(v for _, v in header_pairs), content])
    return Original(tuple(dict.fromkeys(ids)), returned, ()), envelope


# --- shared --------------------------------------------------------------------------------

def _complained(address: str | None, feedback_type: str) -> Failed:
    """A complaint's recipient, as reports.py records one from an ARF report."""
    return Failed(address.strip().lower() if address else None, None, None, None,
                  Reason.FEEDBACK, False, False, f"feedback-type: {feedback_type}")


def _tokens(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The VERP tokens in some texts, each once, in order."""
    return tuple(dict.fromkeys(tokens_in("\n".join(values).encode("utf-8", "replace"))))


def _message_ids(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [m.group(1) for m in _MSGID.finditer(value)]


def _strip_type(value: str) -> str:
    """`smtp; 550 …` → `550 …` (RFC 3464's diagnostic type, which both providers keep)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and kind.strip().lower() in ("smtp", "x-unix", "x-postfix") \
        else value.strip()


def _status(value: object) -> str | None:
    match = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", str(value or ""))
    return ".".join(match.groups()) if match else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object, kind: type = dict) -> list[Any]:
    return [v for v in value if isinstance(v, kind)] if isinstance(value, list) else []
