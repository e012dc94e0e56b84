"""Reading what came back: one raw message in, one `Report` out, no database.

A message to the return address is one of: a delivery status notification (RFC 3464
`multipart/report; report-type=delivery-status`), a complaint (RFC 5965 ARF,
`report-type=feedback-report`), a mail to `unsub+TOKEN@` (a List-Unsubscribe mailto), an
auto-reply (RFC 3834 and the vendors' own markers, out-of-office subjects), a bounce in one
of the many non-standard formats (qmail, old Exim, Exchange's text, appliances), or
something else (a person answering).

Checked in this order, because the later checks are weaker evidence: a report's own MIME
type is a standard, a mail to unsub+ is what the person meant whatever it says, the
auto-reply headers are explicit; only then is a message from MAILER-DAEMON or with a
bounce-like subject read as a non-standard bounce. For those, flufl.bounce's detectors
(one per odd MTA format, kept by Mailman for 20 years) find the failed addresses, and the
text around each address is its diagnostic. Every failed recipient's reason comes from
`reasons.classify`, by the reason and not the first digit.

What the returned original says is kept (`Original`): its Message-ID and any VERP token in
it (`bounces+TOKEN@`, `unsub+TOKEN@` in Return-Path or List-Unsubscribe), so attribution
can do without the recipient's address, which providers redact in complaints.

Parsing uses the stdlib's compat32 policy: it never raises on a malformed header (the
modern policy does, and costs ~3x), and a part that cannot be decoded is skipped, not
fatal. Only a message that is not mail at all raises `Unreadable`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from flufl.bounce import all_failures

from mailer.feedback.reasons import Reason, classify, extract_codes

__all__ = ["Failed", "Original", "Report", "Unreadable", "failed_recipient", "read_report",
           "tokens_in"]

# The token in a VERP address: 55 characters of lower-case base32 (tokens.py).
_TOKEN = re.compile(rb"\b(bounces|unsub)\+([A-Za-z2-7]{55})@", re.ASCII)
_MSGID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_MSGID_LINE = re.compile(rb"message-id:\s*<([^<>\s]+@[^<>\s]+)>", re.IGNORECASE)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@([\w-]+(?:\.[\w-]+)+)", re.UNICODE)
_WS = re.compile(r"\s+")

_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|"
                     r"mail\.?delivery\.?(system|subsystem)|mdaemon|bounce|bounces|"
                     r"double-bounce|nobody|root|microsoftexchange[0-9a-f]*)@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|non[- ]?delivery|delivery (status notification|failure|"
    r"has failed|failed|report|problem|notification)|mail delivery (failed|failure|"
    r"system|subsystem)|returned mail|failure notice|could not (be )?deliver|"
    r"unable to deliver|delivery incomplete|returned to sender|mail system error|"
    r"nondeliverable|unzustellbar|nicht zugestellt|fehlgeschlagen|onbestelbaar|"
    r"niet (bezorgd|afgeleverd)|onafleverbaar|non remis|non distribu|"
    r"[ée]chec de (la )?(livraison|remise)|message (bounced|not delivered|rejected)|"
    r"warning: (could not|message)|delayed mail|delivery delay", re.I)
_AUTO_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response|antwort|"
    r"matisch antwoord|matische antwort)|^auto:|autoreply|autorespon|vacation|holiday|"
    r"away from (the|my) (office|desk)|i am away|i'm away|on leave|"
    r"afwezig|afwezigheid|niet aanwezig|met verlof|vakantie|"
    r"r[ée]ponse automatique|absen(t|ce)|en cong[ée]|"
    r"abwesen|automatische antwort|urlaub|nicht im b[üu]ro|au[sß]er haus", re.I)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autoresponse",
                 "x-ms-exchange-inbox-rules-loop", "x-vacation")
_DELIVERY_STATUS = ("message/delivery-status", "message/global-delivery-status")
_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers",
                   "text/rfc822-header", "message/global-headers")
_MAX_DIAGNOSTIC = 500


class Unreadable(ValueError):
    """The bytes are not a mail message."""


@dataclass(frozen=True, slots=True)
class Failed:
    """One recipient in a report, classified."""

    address: str | None
    action: str | None  # RFC 3464 Action: failed, delayed, delivered, relayed, expanded
    status: str | None  # RFC 3463: 5.1.1
    reply_code: int | None  # the SMTP reply: 550
    reason: Reason
    hard: bool
    sender_side: bool
    diagnostic: str
    remote_mta: str | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """What a returned message (or an auto-reply's references) tells about our message."""

    message_ids: tuple[str, ...] = ()
    tokens: tuple[tuple[str, str], ...] = ()  # ("bounces" | "unsub", token)
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    kind: str  # models.FeedbackKind values
    recipients: tuple[Failed, ...]
    original: Original
    # Tokens in the addresses this message was sent to (Delivered-To, X-Original-To, To):
    # the envelope, the strongest evidence of all.
    envelope_tokens: tuple[tuple[str, str], ...]
    sender: str | None  # the From address (for an auto-reply: the person)
    subject: str
    feedback_type: str | None = None  # ARF: abuse, fraud, not-spam, …
    notes: tuple[str, ...] = field(default=())


def read_report(data: bytes) -> Report:
    """Read one message. Raises `Unreadable` only for bytes that are not a message."""
    if not data or not data.strip():
        raise Unreadable("the message is empty")
    head = data[:4096].lstrip()
    if b":" not in head.split(b"\n", 1)[0] and not head.startswith(b"From "):
        raise Unreadable("the message does not start with a header")
    msg = message_from_bytes(data)
    if not msg.keys():
        raise Unreadable("the message has no headers")
    subject = _header(msg, "subject")
    sender = _first_address(_header(msg, "from"))
    envelope = tuple(dict.fromkeys(_envelope_tokens(msg)))
    content_type = msg.get_content_type()
    report_type = (msg.get_param("report-type") or "").lower() \
        if content_type == "multipart/report" else ""

    if report_type == "feedback-report" or _part(msg, ("message/feedback-report",)):
        return _complaint(msg, envelope, sender, subject, data)
    status_part = _part(msg, _DELIVERY_STATUS)
    if status_part is not None:
        recipients = _dsn_recipients(status_part, msg)
        if recipients:
            return Report(_dsn_kind(recipients), recipients, _original(msg, data),
                          envelope, sender, subject)
    if any(kind == "unsub" for kind, _ in envelope):
        return Report("unsubscribe", (), _original(msg, data), envelope, sender, subject)
    complainant = _microsoft_complaint(msg)
    if complainant is not None:
        return _complaint(msg, envelope, sender, subject, data, address=complainant)
    # Before the auto-reply check: mail servers mark their bounces Auto-Submitted too.
    if _looks_like_bounce(sender, subject):
        original = _original(msg, data)
        recipients = _free_text_recipients(msg, subject, original)
        if recipients:
            return Report(_dsn_kind(recipients), recipients, original, envelope, sender,
                          subject)
    if _is_auto_reply(msg, subject):
        person = (Failed(sender, None, None, None, Reason.VACATION, False, False, ""),) \
            if sender else ()
        return Report("auto-reply", person, _references(msg), envelope, sender, subject)
    return Report("other", (), _references(msg), envelope, sender, subject)


def tokens_in(data: bytes) -> list[tuple[str, str]]:
    """Every VERP token in raw bytes, in order, as (kind, token). The expression is tried
    only where `bounces+` or `unsub+` starts (found by bytes.find, ~20x faster than the
    scan of every position; a token holds no `+`, so matches never overlap)."""
    starts = []
    for prefix in (b"bounces+", b"unsub+"):
        at = data.find(prefix)
        while at >= 0:
            starts.append(at)
            at = data.find(prefix, at + len(prefix))
    found = []
    for at in sorted(starts):
        m = _TOKEN.match(data, at)
        if m is not None:
            found.append((m.group(1).decode().lower(), m.group(2).decode().lower()))
    return found


# --- headers ------------------------------------------------------------------------------

def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        text = str(make_header(decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = str(value)
    return _WS.sub(" ", text).strip()


def _first_address(value: str) -> str | None:
    for _, address in getaddresses([value]):
        if "@" in address:
            return address.strip().lower()
    return None


def _envelope_tokens(msg: Message) -> list[tuple[str, str]]:
    found = []
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to",
                 "cc", "x-rcpt-to"):
        for value in msg.get_all(name) or ():
            found += tokens_in(str(value).encode("utf-8", "replace"))
    return found


# --- parts --------------------------------------------------------------------------------

def _part(msg: Message, types: tuple[str, ...]) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() in types:
            return part
    return None


def _text(part: Message) -> str:
    """A part's payload as text, decoded by its transfer encoding and charset."""
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, list):
            return "\n\n".join(p.as_string() for p in raw if isinstance(p, Message))
        return str(raw or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a delivery-status or feedback-report part (RFC 3464 §2.1):
    first the per-message fields, then one group per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and all(isinstance(p, Message) for p in payload):
        blocks = [{k.lower(): _WS.sub(" ", str(v)).strip() for k, v in p.items()}
                  for p in payload]
        if any(blocks):
            # compat32 parses each group as headers; a group whose lines did not parse as
            # headers ends up in its body: parse that too.
            extra = [p.get_payload() for p in payload if isinstance(p.get_payload(), str)
                     and p.get_payload().strip()]
            for text in extra:
                blocks += _parse_blocks(text)
            return [b for b in blocks if b]
    return _parse_blocks(_text(part))


def _parse_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        if not chunk.strip():
            continue
        fields = HeaderParser().parsestr(chunk.strip() + "\n")
        block = {k.lower(): _WS.sub(" ", str(v)).strip() for k, v in fields.items()}
        if block:
            blocks.append(block)
    return blocks


# --- delivery status notifications ----------------------------------------------------------

def _dsn_recipients(part: Message, msg: Message) -> tuple[Failed, ...]:
    blocks = _field_blocks(part)
    human = _human_text(msg)
    recipients = []
    for block in blocks:
        address = _dsn_address(block.get("final-recipient") or block.get("original-recipient"))
        if address is None and "action" not in block:
            continue  # the per-message group
        action = (block.get("action") or "").lower().split()[0:1]
        action_value = action[0] if action else None
        diagnostic = _strip_type(block.get("diagnostic-code", ""))
        status = _status(block.get("status"))
        if not diagnostic and human:
            diagnostic = _around(human, address) if address else ""
        reply_code, found_status = extract_codes(diagnostic)
        if status is None or status in ("5.0.0", "4.0.0") and found_status:
            status = found_status or status
        recipients.append(failed_recipient(address, action_value, status, reply_code, diagnostic,
                                  _strip_type(block.get("remote-mta", "")) or None))
    return tuple(recipients)


def _dsn_address(value: str | None) -> str | None:
    if not value:
        return None
    address = _strip_type(value).strip().strip("<>").strip()
    return address.lower() if "@" in address else None


def _strip_type(value: str) -> str:
    """`rfc822; a@b` → `a@b`, `smtp; 550 …` → `550 …` (RFC 3464 address and diagnostic
    types)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() and len(kind) < 20 else value.strip()


def _status(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", value)
    return ".".join(match.groups()) if match else None


def _dsn_kind(recipients: tuple[Failed, ...]) -> str:
    actions = {r.action for r in recipients}
    if actions <= {"delayed"}:
        return "delayed"
    if all(r.reason == Reason.DELIVERED for r in recipients):
        return "other"
    return "bounce"


def failed_recipient(address: str | None, action: str | None, status: str | None,
                     reply_code: int | None, diagnostic: str,
                     remote_mta: str | None = None) -> Failed:
    """One recipient, classified by `reasons.classify`; the diagnostic masked."""
    verdict = classify(status=status, reply_code=reply_code, diagnostic=diagnostic,
                       action=action)
    return Failed(address, action, status, reply_code, verdict.reason, verdict.hard,
                  verdict.sender_side, _mask(diagnostic)[:_MAX_DIAGNOSTIC], remote_mta)


def _mask(text: str) -> str:
    """Diagnostics are kept; the addresses in them are not (only their domains)."""
    text = _WS.sub(" ", text).strip()
    return _ADDRESS.sub(lambda m: f"…@{m.group(1)}", text) if "@" in text else text


# --- complaints ----------------------------------------------------------------------------

def _microsoft_complaint(msg: Message) -> str | None:
    """Microsoft's JMRP reports are not ARF: a message/rfc822 part whose headers carry
    X-HmXmrOriginalRecipient (the complainant)."""
    for part in msg.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message) and inner.get("x-hmxmroriginalrecipient"):
            return _dsn_address(str(inner["x-hmxmroriginalrecipient"])) or ""
    return None


def _complaint(msg: Message, envelope: tuple[tuple[str, str], ...], sender: str | None,
               subject: str, data: bytes, *, address: str | None = None) -> Report:
    part = _part(msg, ("message/feedback-report",))
    fields: dict[str, str] = {}
    if part is not None:
        for block in _field_blocks(part):
            fields.update(block)
    original = _original(msg, data)
    feedback_type = (fields.get("feedback-type") or "abuse").lower().split()[0]
    address = address or _dsn_address(fields.get("original-rcpt-to")
                                      or fields.get("removal-recipient"))
    if not address and original.to:
        address = original.to[0]
    # RFC 5965/6591: not-spam is the opposite of a complaint; auth-failure (a DMARC or
    # DKIM failure report) is about our authentication, not about the person.
    if feedback_type in ("not-spam", "auth-failure", "dkim", "dmarc"):
        return Report("other", (), original, envelope, sender, subject, feedback_type)
    recipient = Failed(address, None, None, None, Reason.FEEDBACK, False, False,
                       _mask(f"feedback-type: {feedback_type}"))
    return Report("complaint", (recipient,), original, envelope, sender, subject,
                  feedback_type)


# --- the returned original ------------------------------------------------------------------

def _original(msg: Message, data: bytes) -> Original:
    """Our message as returned: a message/rfc822 or text/rfc822-headers part, or failing
    that the whole body (non-standard bounces quote the original inline)."""
    ids: list[str] = []
    to: list[str] = []
    part = _part(msg, _ORIGINAL_TYPES)
    if part is not None:
        payload = part.get_payload()
        inner: Message | None = None
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            inner = payload[0]
        else:
            inner = HeaderParser().parsestr(_text(part))
        if inner is not None:
            ids += _MSGID.findall(str(inner.get("message-id", "")))
            to += [a.lower() for _, a in getaddresses(inner.get_all("to") or ())
                   if "@" in a and "redacted" not in a.lower()]
    body = _body(data)
    ids += _message_id_lines(data)
    outer_id = _MSGID.findall(str(msg.get("message-id", "")))
    ids = [i for i in dict.fromkeys(ids) if i not in outer_id]
    return Original(tuple(ids), tuple(dict.fromkeys(tokens_in(body))), tuple(to))


def _message_id_lines(data: bytes) -> list[str]:
    """The Message-ID of every header line `Message-ID: <…>` (any case, at the start of a
    line) in raw bytes: the expression is tried only where such a line starts."""
    lower = data.lower()
    ids = []
    at = lower.find(b"message-id:")
    while at >= 0:
        if at == 0 or data[at - 1] == 0x0A:
            match = _MSGID_LINE.match(data, at)
            if match is not None:
                ids.append(match.group(1).decode("utf-8", "replace"))
        at = lower.find(b"message-id:", at + 11)
    return ids


def _body(data: bytes) -> bytes:
    """Everything after the outer header (whose tokens are the envelope's)."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return data[min(ends):] if ends else b""


def _references(msg: Message) -> Original:
    ids = []
    for name in ("in-reply-to", "references"):
        ids += _MSGID.findall(str(msg.get(name, "")))
    return Original(tuple(dict.fromkeys(ids)), (), ())


# --- auto-replies ---------------------------------------------------------------------------

def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto = str(msg.get("auto-submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if any(msg.get(name) is not None for name in _AUTO_HEADERS):
        return True
    precedence = str(msg.get("precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(subject)) and not _BOUNCE_SUBJECT.search(subject)


# --- non-standard bounces -------------------------------------------------------------------

def _looks_like_bounce(sender: str | None, subject: str) -> bool:
    if sender and _DAEMON.match(sender):
        return True
    return bool(_BOUNCE_SUBJECT.search(subject))


def _human_text(msg: Message) -> str:
    """The first text/plain part that is not the returned original (or HTML as text)."""
    html = ""
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        ctype = part.get_content_type()
        if ctype in _ORIGINAL_TYPES or ctype in _DELIVERY_STATUS:
            break
        if ctype == "text/plain":
            return _text(part)
        if ctype == "text/html" and not html:
            html = re.sub(r"<[^>]+>", " ", _text(part))
    return html


def _free_text_recipients(msg: Message, subject: str, original: Original
                          ) -> tuple[Failed, ...]:
    human = _human_text(msg)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector's crash on odd input must not stop us
        temporary, permanent = set(), set()
    found: dict[str, str] = {}
    for _, address in getaddresses(msg.get_all("x-failed-recipients") or ()):
        if "@" in address:  # Exim names them in a header
            found[address.lower()] = "failed"
    for addresses, action in ((permanent, "failed"), (temporary, "delayed")):
        for raw in addresses:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            address = text.strip().strip("<>").lower()
            if "@" in address and address not in found:
                found[address] = action
    if not found:
        # Some servers name the person without the domain ("j.brouwer (user not
        # found)"); the returned original says whom the message was for.
        address = _guess_address(human) or (original.to[0] if original.to else None)
        if address is None:
            return ()
        found[address] = "delayed" if _delay_words(human) else "failed"
    whole = _WS.sub(" ", f"{subject} {human}").strip()[:8000]
    recipients = []
    for address, action in found.items():
        diagnostic = _around(human, address) or whole
        if action == "failed" and _delay_words(diagnostic) and not _fatal_words(human):
            action = "delayed"
        reply_code, status = extract_codes(diagnostic)
        if reply_code is None and status is None:
            reply_code, status = extract_codes(whole)
        recipient = failed_recipient(address, action, status, reply_code, diagnostic)
        if recipient.reason == Reason.UNDEFINED and diagnostic != whole:
            # The lines about the address did not say why; the report as a whole may.
            wider = failed_recipient(address, action, status, reply_code, whole)
            if wider.reason != Reason.UNDEFINED:
                recipient = wider
        recipients.append(recipient)
    return tuple(recipients)


def _delay_words(text: str) -> bool:
    return bool(re.search(r"(?i)\b(delayed|will (continue|keep) (trying|to try)|"
                          r"still (trying|being retried)|warning: message|"
                          r"not yet been delivered|retry|verzögert|vertraagd)\b", text))


def _fatal_words(text: str) -> bool:
    return bool(re.search(r"(?i)(permanent|giving up|gave up|failed permanently|"
                          r"could not be delivered|undeliverable|retry (time|timeout) "
                          r"(not reached|exceeded))", text))


def _guess_address(text: str) -> str | None:
    for line in text.splitlines():
        for match in re.finditer(r"<?([\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+)>?",
                                 line):
            address = match.group(1).lower()
            local = address.split("@", 1)[0]
            if not _DAEMON.match(address) and not local.startswith(("bounces+", "unsub+")):
                return address
    return None


def _around(text: str, address: str | None) -> str:
    """The lines about one address in a human-readable report: its line and the ones after
    it up to a blank line (or the next address), which is where every MTA puts the
    reason."""
    if not text or not address:
        return ""
    lines = text.splitlines()
    lower = [line.lower() for line in lines]
    for i, line in enumerate(lower):
        if address in line:
            taken = [lines[i]]
            for follow in lines[i + 1:i + 12]:
                if not follow.strip():
                    if len(taken) > 1 and not taken[-1].rstrip().endswith(":"):
                        break
                    continue
                if "@" in follow and address not in follow.lower() and len(taken) > 1:
                    break
                taken.append(follow)
            snippet = _WS.sub(" ", " ".join(taken)).strip()
            if len(snippet) > len(address) + 8:
                return snippet[:_MAX_DIAGNOSTIC * 2]
    return ""
