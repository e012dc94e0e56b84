"""Benchmark: `mailer bounces process` of a Maildir of mixed returns, made from real messages.

Setup, once: a fresh project (`mailer init`, SQLite by default), N confirmed subscribers
imported, a real campaign sent to all of them through the default `maildir:outbox`
transport (unthrottled). From the sent messages it writes a pool of returns, one about
each sent message, each carrying what production returns carry (the VERP envelope
`bounces+TOKEN@` or `unsub+TOKEN@`, the returned original as message/rfc822 or
text/rfc822-headers, the original's Message-ID), in a realistic mix:

    55 %  RFC 3464 DSNs: Postfix relaying Gmail/Outlook/Yahoo/Telenet refusals, Exchange
          Online NDRs, Gmail-relay DSNs; hard (user/host unknown), soft (mailbox full,
          expired, greylisted, disabled) and sender-side (DMARC, Spamhaus, spam content)
    10 %  non-standard bounces without a DSN part: qmail-send, Exim "Mail delivery failed"
    10 %  delayed DSNs (Action: delayed)
    10 %  auto-replies in Dutch, English, French and German (RFC 3834 headers, Exchange's
          markers, or only the subject)
     5 %  ARF complaints (Yahoo, Microsoft JMRP style), the recipient redacted
     5 %  mails to unsub+TOKEN@ (what a mail program's unsubscribe button sends)
     5 %  other: spam to the catch-all, people answering, broken MIME, unreadable files
          (moved aside) and exact duplicates (counted once)

Each measured run starts from the same database (a copy of the one after sending; on
PostgreSQL a new database from it as template) and a full, cold Maildir: the pool's
files are hard-linked into new/ and evicted from the page cache (posix_fadvise
DONTNEED), so every run reads the mailbox from disk. The command is the real one,

    python -m mailer bounces process --source maildir:PATH --json

in its own process, pinned to one core (the command is single-threaded; the bench
checks the thread count). It prints wall seconds, messages/s (with and without the
process's start-up, measured on an empty Maildir), CPU seconds (user + system of the
process) and messages per CPU second, with and without the start-up's CPU seconds: on a
loaded machine that is the one-core figure; and peak RSS (the kernel's high-water mark,
and /proc sampled every 20 ms). Afterwards it checks: one
message key in the events per message read minus duplicates, the duplicates and
unreadable files as generated, new/ and cur/ empty, .processed and .failed full, and
the kinds found against the kinds generated.

    .venv/bin/python bench/feedback_bench.py                        # 10,000 and 100,000, SQLite
    .venv/bin/python bench/feedback_bench.py --sizes 10000 --repeat 3
    .venv/bin/python bench/feedback_bench.py --postgres
    .venv/bin/python bench/feedback_bench.py --sizes 10000 --profile   # + a cProfile run
    .venv/bin/python bench/feedback_bench.py --keep /var/tmp/fbbench   # build once, reuse

With --keep DIR the project, the database after sending and the pool of returns stay in
DIR, and a later run with the same DIR starts from them (the setup, ~6 minutes for
100,000 on a busy machine, is skipped; a database behind the code is upgraded first).
Each run's line ends with the load average (1 minute) when it ended: on a shared machine
the wall rate follows the load, the rate per CPU second much less.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOUNCE_DOMAIN = "example.be"  # the project's default sending and bounce domain
OUR_MTA = "mail.example.be"
OUR_IP = "192.0.2.10"
DOMAINS = ["gmail.com", "outlook.com", "hotmail.com", "telenet.be", "skynet.be",
           "yahoo.com", "proximus.be", "kuleuven.be", "gent.be", "icloud.com",
           "web.de", "orange.fr"]
FIRST = ["An", "Jan", "Marie", "Sofie", "Lukas", "Els", "Jürgen", "Noor", "Pieter", "Lotte"]
T0 = 1_796_000_000  # the returns' dates: seconds since the epoch (December 2026)


# -- the returns ------------------------------------------------------------------------------

@dataclass
class Sent:
    """One sent message, and what a return about it needs."""

    i: int
    rcpt: str
    name: str
    verp: str  # bounces+TOKEN@example.be
    unsub: str  # unsub+TOKEN@example.be
    msgid: str  # <...@example.be>
    full: str  # the original as the receiving MTA saw it (LF, our Received on top)
    headers: str  # its header only
    date: str
    rnd: random.Random

    @property
    def domain(self) -> str:
        return self.rcpt.rpartition("@")[2]

    @property
    def mx(self) -> str:
        return {"gmail.com": "gmail-smtp-in.l.google.com",
                "outlook.com": "outlook-com.olc.protection.outlook.com",
                "hotmail.com": "hotmail-com.olc.protection.outlook.com",
                "yahoo.com": "mta7.am0.yahoodns.net"}.get(self.domain, f"mx.{self.domain}")


def sent_from(i: int, data: bytes) -> Sent:
    """A message from the outbox (as the maildir transport wrote it: Return-Path and
    Delivered-To on top, CRLF) as the receiving side would return it."""
    text = data.decode("utf-8").replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    verp = lines[0].split("<", 1)[1].rstrip(">")
    rcpt = lines[1].split(":", 1)[1].strip()
    assert lines[0].startswith("Return-Path:") and verp.startswith("bounces+"), lines[0]
    own = "\n".join(lines[2:])
    msgid = next(h.split(":", 1)[1].strip() for h in lines if h.startswith("Message-ID:"))
    date = formatdate(T0 + 3600 + i // 10)
    rnd = random.Random(i)
    received = (f"Received: from {OUR_MTA} ({OUR_MTA} [{OUR_IP}])\n\tby mx.{rcpt.split('@')[1]}"
                f" with ESMTPS id {rnd.getrandbits(40):010x}\n\tfor <{rcpt}>; {date}\n")
    headers = received + own
    name = next((h.split(":", 1)[1].strip().split(" <")[0] for h in lines if h.startswith("To:")),
                "Lezer")
    return Sent(i, rcpt, name, verp, verp.replace("bounces+", "unsub+", 1), msgid,
                headers + "\n\n" + body, headers, date, rnd)


def _boundary(s: Sent, tag: str) -> str:
    return f"{tag}{s.rnd.getrandbits(64):016x}"


def _dsn_part(s: Sent, action: str, status: str, diagnostic: str, reporting: str,
              remote: str | None = None, extra: str = "") -> str:
    remote_line = f"Remote-MTA: dns; {remote}\n" if remote else ""
    return (f"Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; {reporting}\nArrival-Date: {s.date}\n\n"
            f"Final-Recipient: rfc822; {s.rcpt}\nOriginal-Recipient: rfc822;{s.rcpt}\n"
            f"Action: {action}\nStatus: {status}\n{remote_line}"
            f"Diagnostic-Code: smtp; {diagnostic}\n{extra}")


def _original_part(s: Sent, headers_only: bool) -> str:
    if headers_only:
        return f"Content-Type: text/rfc822-headers\n\n{s.headers}\n"
    return f"Content-Description: Undelivered Message\nContent-Type: message/rfc822\n\n{s.full}"


# Diagnostics as the receiving servers word them (status, text, expected verdict).
HARD, SOFT, SENDER = "bounce (hard)", "bounce (soft)", "bounce (sender-side)"
DIAGNOSTICS = [
    ("5.1.1", "550-5.1.1 The email account that you tried to reach does not exist. Please "
              "try\n    550-5.1.1 double-checking the recipient's email address for typos or\n"
              "    550-5.1.1 unnecessary spaces. For more information, go to\n    550 5.1.1  "
              "https://support.google.com/mail/?p=NoSuchUser a640c23a62f3a-a8d (in reply to "
              "RCPT TO command)", HARD, 20),
    ("5.1.1", "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
              "[AM4PEPF00027A5F.eurprd04.prod.outlook.com 2026-12-02T11:51:03.221Z "
              "08DCF1E3] (in reply to RCPT TO command)", HARD, 10),
    ("5.1.1", "554 delivery error: dd This user doesn't have a yahoo.com account ({rcpt}) "
              "[0] - mta7.mail.bf1.yahoo.com (in reply to end of DATA command)", HARD, 6),
    ("5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual "
              "mailbox table (in reply to RCPT TO command)", HARD, 12),
    ("5.1.2", "Host or domain name not found. Name service error for name={domain} "
              "type=MX: Host not found", HARD, 5),
    ("5.2.2", "552-5.2.2 The recipient's inbox is out of storage space. Please direct the\n"
              "    552-5.2.2 recipient to\n    552 5.2.2  https://support.google.com/mail/?p="
              "OverQuotaPerm (in reply to RCPT TO command)", SOFT, 8),
    ("5.2.2", "552 5.2.2 Mailbox full: {rcpt} quota exceeded (in reply to RCPT TO command)",
     SOFT, 5),
    ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled. "
              "https://support.google.com/mail/?p=DisabledUser (in reply to RCPT TO command)",
     SOFT, 4),
    ("5.4.7", "delivery temporarily suspended: connect to {mx}[203.0.113.25]:25: "
              "Connection timed out", SOFT, 4),
    ("5.7.26", "550-5.7.26 Unauthenticated email from example.be is not accepted due to\n"
               "    550-5.7.26 domain's DMARC policy. Please contact the administrator of\n"
               "    550 5.7.26 example.be domain if this was a legitimate mail. "
               "(in reply to end of DATA command)", SENDER, 6),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using "
              "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10 (in reply to "
              "RCPT TO command)", SENDER, 6),
    ("5.7.1", "550-5.7.1 [192.0.2.10] Our system has detected that this message is likely\n"
              "    550-5.7.1 unsolicited mail. To reduce the amount of spam sent to Gmail,\n"
              "    550 5.7.1 this message has been blocked. (in reply to end of DATA command)",
     SENDER, 4),
    ("5.7.1", "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please "
              "contact your Internet service provider since part of their network is on our "
              "block list (S3150). (in reply to MAIL FROM command)", SENDER, 4),
    ("4.7.0", "421-4.7.0 [192.0.2.10] Our system has detected an unusual rate of\n    421 "
              "4.7.0 unsolicited mail originating from your IP address. (in reply to end of "
              "DATA command)", SENDER, 3),
]
_DIAGNOSTIC_WEIGHTS = [d[3] for d in DIAGNOSTICS]


def _fill(text: str, s: Sent) -> str:
    return text.replace("{rcpt}", s.rcpt).replace("{domain}", s.domain).replace("{mx}", s.mx)


def postfix_dsn(s: Sent) -> tuple[bytes, str]:
    """Our own relay (Postfix) reports what the receiving server refused."""
    status, diagnostic, verdict, _ = s.rnd.choices(DIAGNOSTICS, _DIAGNOSTIC_WEIGHTS)[0]
    diagnostic = _fill(diagnostic, s)
    b = _boundary(s, "4Q")
    said = diagnostic if status == "5.1.2" else f"host {s.mx}[203.0.113.25] said: {diagnostic}"
    text = (f"Return-Path: <>\nDelivered-To: {s.verp}\nReceived: by {OUR_MTA} (Postfix)\n\tid "
            f"4Q{s.rnd.getrandbits(32):08X}; {s.date}\nDate: {s.date}\n"
            f"From: MAILER-DAEMON@{OUR_MTA} (Mail Delivery System)\n"
            f"Subject: Undelivered Mail Returned to Sender\nTo: {s.verp}\n"
            f"Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{b}\"\n"
            f"Content-Transfer-Encoding: 8bit\nMessage-Id: <{T0}.{s.i}.dsn@{OUR_MTA}>\n\n"
            f"This is a MIME-encapsulated message.\n\n--{b}\n"
            f"Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n"
            f"This is the mail system at host {OUR_MTA}.\n\nI'm sorry to have to inform you "
            f"that your message could not\nbe delivered to one or more recipients. It's "
            f"attached below.\n\nFor further assistance, please send mail to postmaster.\n\n"
            f"If you do so, please include this problem report. You can\ndelete your own "
            f"text from the attached returned message.\n\n                   The mail system"
            f"\n\n<{s.rcpt}>: {said}\n\n--{b}\n"
            + _dsn_part(s, "failed", status, diagnostic.replace("\n    ", " "), OUR_MTA,
                        None if status == "5.1.2" else s.mx)
            + f"\n--{b}\n" + _original_part(s, s.rnd.random() < 0.3) + f"\n--{b}--\n")
    return text.encode(), verdict


def exchange_ndr(s: Sent) -> tuple[bytes, str]:
    """Exchange Online accepted the message, then could not deliver it."""
    full = s.rnd.random() < 0.4
    status, diagnostic, verdict = (
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
                   "address lookup", HARD) if full else
        ("5.2.2", "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
                  "MapiExceptionShutoffQuotaExceeded; Failed to process message due to a "
                  "permanent exception with message [BeginDiagnosticData]Cannot open mailbox."
                  "[EndDiagnosticData]", SOFT))
    b, a = _boundary(s, "_000_"), _boundary(s, "_001_")
    server = f"AM{s.rnd.randrange(10**4):04d}PR0{s.rnd.randrange(10)}MB{s.rnd.randrange(10**4):04d}"
    why = (f"{s.rcpt} wasn't found at {s.domain}." if full
           else f"{s.name}'s mailbox is full.")
    text = (f"Delivered-To: {s.verp}\nReceived: from {server}.eurprd0{s.i % 9}.prod.outlook."
            f"com\n\tby {OUR_MTA} with ESMTPS; {s.date}\n"
            f"From: Microsoft Outlook\n <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@"
            f"{s.domain}>\nTo: <{s.verp}>\nDate: {s.date}\nContent-Type: multipart/report;"
            f" report-type=delivery-status;\n\tboundary=\"{b}\"\nX-MS-Exchange-Message-Is-Ndr:\n"
            f"Content-Language: en-US\nMessage-ID:\n <{s.rnd.getrandbits(64):x}@{server}."
            f"eurprd04.prod.outlook.com>\nIn-Reply-To: {s.msgid}\nReferences: {s.msgid}\n"
            f"Subject: Undeliverable: Nieuws\nAuto-Submitted: auto-replied\nMIME-Version: 1.0"
            f"\n\n--{b}\nContent-Type: multipart/alternative; differences=Content-Type;\n\t"
            f"boundary=\"{a}\"\n\n--{a}\nContent-Type: text/plain; charset=\"us-ascii\"\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n"
            f"Your message to {s.rcpt} couldn't be delivered.\n\n{why}\n\n"
            f"Voorbeeld   Office 365   {s.name}\nAction Required                 Recipient\n\n"
            f"Diagnostic information for administrators:\n\nGenerating server: {server}."
            f"eurprd04.prod.outlook.com\n\n{s.rcpt}\nRemote Server returned '{diagnostic}'"
            f"\n\nOriginal message headers:\n\n{s.headers[:600]}\n\n--{a}\n"
            f"Content-Type: text/html; charset=\"us-ascii\"\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n<html><head></head><body><p>Your "
            f"message to {s.rcpt} couldn't be delivered.</p><p>{why}</p></body></html>\n\n"
            f"--{a}--\n\n--{b}\n"
            + _dsn_part(s, "failed", status, diagnostic, f"{server}.eurprd04.prod.outlook.com")
            + f"X-Display-Name: {s.name}\n\n--{b}\n" + _original_part(s, not full)
            + f"\n--{b}--\n")
    return text.encode(), verdict


def gmail_dsn(s: Sent) -> tuple[bytes, str]:
    """A DSN from Gmail (relaying through Google Workspace as the smart host)."""
    status, diagnostic, verdict, _ = s.rnd.choices(DIAGNOSTICS[:6], _DIAGNOSTIC_WEIGHTS[:6])[0]
    diagnostic = _fill(diagnostic, s).replace("\n    ", " ")
    b, a = _boundary(s, "0000000000"), _boundary(s, "0000000001")
    text = (f"Delivered-To: {s.verp}\nReceived: by 2002:a05:6402:{s.i % 9999:x} with SMTP id "
            f"x{s.rnd.getrandbits(30):x};\n        {s.date}\nReturn-Path: <>\n"
            f"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: {s.verp}\n"
            f"Auto-Submitted: auto-replied\nMessage-ID: <{s.rnd.getrandbits(64):x}."
            f"{s.i}@mx.google.com>\nDate: {s.date}\nSubject: Delivery Status Notification "
            f"(Failure)\nReferences: {s.msgid}\nIn-Reply-To: {s.msgid}\nX-Failed-Recipients: "
            f"{s.rcpt}\nMIME-Version: 1.0\nContent-Type: multipart/report; boundary=\"{b}\";"
            f" report-type=delivery-status\n\n--{b}\nContent-Type: multipart/related; "
            f"boundary=\"{a}\"\n\n--{a}\nContent-Type: text/plain; charset=\"UTF-8\"\n\n"
            f"** Message not delivered **\n\nThere was a problem delivering your message to "
            f"{s.rcpt}. See the technical details below.\n\nThe response from the remote "
            f"server was:\n{diagnostic}\n\n--{a}--\n\n--{b}\n"
            + _dsn_part(s, "failed", status, diagnostic, "googlemail.com",
                        f"{s.mx}. (142.250.102.27, the server for the domain {s.domain}.)",
                        f"Last-Attempt-Date: {s.date}\n")
            + f"\n--{b}\n" + _original_part(s, False) + f"\n--{b}--\n")
    return text.encode(), verdict


def delayed_dsn(s: Sent) -> tuple[bytes, str]:
    """A warning that the message is still queued: Action delayed."""
    status, diagnostic = s.rnd.choice([
        ("4.4.1", f"X-Postfix; connect to {s.mx}[203.0.113.25]:25: Connection timed out"),
        ("4.2.0", "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
                  "https://postgrey.schweikert.ch/help/{domain}.html"),
        ("4.2.2", "452 4.2.2 The email account that you tried to reach is over quota."),
        ("4.7.0", "421 4.7.0 Try again later, closing connection. (EHLO)"),
    ])
    diagnostic = _fill(diagnostic, s)
    b = _boundary(s, "4D")
    text = (f"Return-Path: <>\nDelivered-To: {s.verp}\nDate: {s.date}\n"
            f"From: MAILER-DAEMON@{OUR_MTA} (Mail Delivery System)\n"
            f"Subject: Delayed Mail (still being retried)\nTo: {s.verp}\n"
            f"Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{b}\"\n"
            f"Message-Id: <{T0}.{s.i}.delay@{OUR_MTA}>\n\n--{b}\n"
            f"Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n"
            f"This is the mail system at host {OUR_MTA}.\n\n####################################"
            f"################################\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO "
            f"RESEND YOUR MESSAGE. #\n#############################################"
            f"#######################\n\nYour message could not be delivered for more than "
            f"4 hour(s).\nIt will be retried until it is 5 day(s) old.\n\n<{s.rcpt}>: "
            f"{diagnostic}\n\n--{b}\n"
            + _dsn_part(s, "delayed", status, diagnostic, OUR_MTA, s.mx,
                        f"Will-Retry-Until: {formatdate(T0 + 5 * 86400)}\n")
            + f"\n--{b}\n" + _original_part(s, True) + f"\n--{b}--\n")
    return text.encode(), "delayed"


def qmail_bounce(s: Sent) -> tuple[bytes, str]:
    """qmail-send's report: no DSN part, the original below a line."""
    why, verdict = s.rnd.choice([
        ("Sorry, no mailbox here by that name. (#5.1.1)", HARD),
        ("The users mailfolder is over the allowed quota (size). (#5.2.2)", SOFT),
    ])
    text = (f"Return-Path: <>\nDelivered-To: {s.verp}\nReceived: (qmail {s.i} invoked for "
            f"bounce); {s.date}\nDate: {s.date}\nFrom: MAILER-DAEMON@mx.{s.domain}\n"
            f"To: {s.verp}\nSubject: failure notice\n\nHi. This is the qmail-send program at "
            f"mx.{s.domain}.\nI'm afraid I wasn't able to deliver your message to the "
            f"following addresses.\nThis is a permanent error; I've given up. Sorry it "
            f"didn't work out.\n\n<{s.rcpt}>:\n{why}\n\n--- Below this line is a copy of the "
            f"message.\n\n{s.full}")
    return text.encode(), verdict


def exim_bounce(s: Sent) -> tuple[bytes, str]:
    """Exim's "Mail delivery failed" without a DSN part."""
    why, verdict = s.rnd.choice([
        (f"    SMTP error from remote mail server after RCPT TO:<{s.rcpt}>:\n    host "
         f"{s.mx} [203.0.113.7]: 550 5.1.1 <{s.rcpt}>: Recipient address rejected: User "
         "unknown in local recipient table", HARD),
        ("    Mailbox quota exceeded", SOFT),
        ("    all relevant MX records point to non-existent hosts", HARD),
    ])
    text = (f"Return-path: <>\nEnvelope-to: {s.verp}\nDelivery-date: {s.date}\n"
            f"Received: from mail by mx.{s.domain} with local (Exim 4.96)\n\tid "
            f"1t{s.rnd.getrandbits(30):x}-00{s.i % 97}\n\tfor {s.verp}; {s.date}\n"
            f"X-Failed-Recipients: {s.rcpt}\nAuto-Submitted: auto-replied\n"
            f"From: Mail Delivery System <Mailer-Daemon@mx.{s.domain}>\nTo: {s.verp}\n"
            f"References: {s.msgid}\nContent-Type: text/plain; charset=us-ascii\n"
            f"Subject: Mail delivery failed: returning message to sender\n"
            f"Message-Id: <E1t{s.rnd.getrandbits(40):x}@mx.{s.domain}>\nDate: {s.date}\n\n"
            f"This message was created automatically by mail delivery software.\n\n"
            f"A message that you sent could not be delivered to one or more of its\n"
            f"recipients. This is a permanent error. The following address(es) failed:\n\n"
            f"  {s.rcpt}\n{why}\n\n------ This is a copy of the message, including all the "
            f"headers. ------\n\n{s.full}")
    return text.encode(), verdict


AUTO_REPLIES = [  # (language, subject, body, extra headers)
    ("nl", "Afwezig: Nieuws", "Beste,\n\nIk ben afwezig tot en met 4 januari en lees mijn "
     "mails niet. Voor dringende zaken kunt u terecht bij onze dienst.\n\nMet vriendelijke "
     "groet,\n{name}", "Auto-Submitted: auto-replied\n"),
    ("nl", "Automatisch antwoord: Nieuws", "Dank u voor uw bericht. Ik ben met verlof.\n",
     "X-MS-Exchange-Inbox-Rules-Loop: {rcpt}\nX-MS-Exchange-Generated-Message-Source: "
     "Mailbox Rules Agent\nAuto-Submitted: auto-generated\n"),
    ("en", "Out of Office: Nieuws", "Thank you for your email. I am out of the office until "
     "January 4th with limited access to email.\n\nKind regards,\n{name}",
     "X-Autoreply: yes\nPrecedence: auto_reply\n"),
    ("en", "Automatic reply: Nieuws", "I'm on holiday and will answer when I'm back.\n",
     "X-MS-Exchange-Inbox-Rules-Loop: {rcpt}\n"),
    ("fr", "=?utf-8?q?R=C3=A9ponse_automatique_=3A_Nieuws?=", "Bonjour,\n\nJe suis absent "
     "du bureau jusqu'au 4 janvier. En cas d'urgence, contactez le secrétariat.\n\n"
     "Cordialement,\n{name}", "Auto-Submitted: auto-replied\n"),
    ("fr", "Absent: Nieuws", "Je suis en congé.\n", ""),  # the subject alone
    ("de", "Abwesenheitsnotiz: Nieuws", "Sehr geehrte Damen und Herren,\n\nich bin bis zum "
     "4. Januar nicht im Büro. Ihre E-Mail wird nicht weitergeleitet.\n\nMit freundlichen "
     "Grüßen\n{name}", "X-Autorespond: Abwesenheitsnotiz\n"),
    ("de", "Automatische Antwort: Nieuws", "Ich bin im Urlaub.\n", ""),
]


def auto_reply(s: Sent) -> tuple[bytes, str]:
    """An out-of-office reply, to the Return-Path (RFC 3834), about our Message-ID."""
    _, subject, body, extra = s.rnd.choice(AUTO_REPLIES)
    text = (f"Return-Path: <{s.rcpt}>\nDelivered-To: {s.verp}\nFrom: {s.name} <{s.rcpt}>\n"
            f"To: {s.verp}\nSubject: {subject}\nDate: {s.date}\nMessage-ID: <"
            f"{s.rnd.getrandbits(64):x}.{s.i}@{s.domain}>\nIn-Reply-To: {s.msgid}\n"
            f"References: {s.msgid}\n{extra.replace('{rcpt}', s.rcpt)}MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: 8bit\n\n"
            f"{body.replace('{name}', s.name)}\n")
    return text.encode(), "auto-reply"


def arf_complaint(s: Sent) -> tuple[bytes, str]:
    """A feedback-loop report (RFC 5965): the recipient redacted, our headers returned."""
    headers = "\n".join("To: redacted@" + s.domain if h.startswith("To:") else h
                        for h in s.headers.split("\n"))
    yahoo = s.rnd.random() < 0.5
    b = _boundary(s, "----=_Part_")
    part = (f"Content-Type: text/rfc822-headers\n\n{headers}\n" if yahoo else
            f"Content-Type: message/rfc822\nContent-Disposition: inline\n\n{headers}\n\n"
            + s.full.partition("\n\n")[2])
    sender = ("Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>" if yahoo
              else "staff@hotmail.com")
    text = (f"Delivered-To: fbl@{BOUNCE_DOMAIN}\nFrom: {sender}\nTo: fbl@{BOUNCE_DOMAIN}\n"
            f"Subject: Email Feedback Report for IP {OUR_IP}\nDate: {s.date}\n"
            f"Message-ID: <{s.rnd.getrandbits(64):x}.{s.i}@arf.example.net>\nMIME-Version: 1.0"
            f"\nContent-Type: multipart/report; report-type=feedback-report;\n\tboundary=\"{b}\""
            f"\n\n--{b}\nContent-Type: text/plain; charset=us-ascii\n\nThis is an email abuse "
            f"report for an email message received from IP {OUR_IP} on {s.date}.\nFor more "
            f"information about this format please see http://www.mipassoc.org/arf/.\n\n--{b}\n"
            f"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: "
            f"{'Yahoo!-Mail-Feedback/2.0' if yahoo else 'Hotmail FBL'}\nVersion: 1\n"
            f"Original-Mail-From: <{s.verp}>\nArrival-Date: {s.date}\nSource-IP: {OUR_IP}\n"
            f"Reported-Domain: {BOUNCE_DOMAIN}\nAuthentication-Results: mta.example.net; "
            f"dkim=pass header.d={BOUNCE_DOMAIN}\n\n--{b}\n{part}\n--{b}--\n")
    return text.encode(), "complaint"


def unsub_mail(s: Sent) -> tuple[bytes, str]:
    """What a mail program sends when its unsubscribe button uses the mailto."""
    body = s.rnd.choice(["This message was automatically generated by Gmail.\n",
                         "", "Graag uitschrijven aub.\n", "unsubscribe\n"])
    text = (f"Return-Path: <{s.rcpt}>\nDelivered-To: {s.unsub}\nFrom: {s.name} <{s.rcpt}>\n"
            f"To: {s.unsub}\nSubject: unsubscribe\nDate: {s.date}\nMessage-ID: <"
            f"{s.rnd.getrandbits(64):x}.{s.i}@mail.{s.domain}>\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=\"UTF-8\"\n\n{body}")
    return text.encode(), "unsubscribe"


def spam(s: Sent) -> tuple[bytes, str]:
    """Spam to the bounce domain's catch-all: no token, nobody's."""
    text = (f"Return-Path: <offers@promo{s.i % 50}.example.net>\nDelivered-To: info@"
            f"{BOUNCE_DOMAIN}\nFrom: Growth Team <offers@promo{s.i % 50}.example.net>\n"
            f"To: info@{BOUNCE_DOMAIN}\nSubject: Double your newsletter sales in 30 days\n"
            f"Date: {s.date}\nMessage-ID: <{s.rnd.getrandbits(64):x}@promo.example.net>\n"
            f"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n<html><body><p>"
            f"Dear marketer, our AI doubles your open rates.</p></body></html>\n")
    return text.encode(), "other"


def person_answers(s: Sent) -> tuple[bytes, str]:
    """Someone answers the newsletter and it reaches the return address."""
    text = (f"Return-Path: <{s.rcpt}>\nDelivered-To: {s.verp}\nFrom: {s.name} <{s.rcpt}>\n"
            f"To: {s.verp}\nSubject: Re: Nieuws\nDate: {s.date}\nMessage-ID: <"
            f"{s.rnd.getrandbits(64):x}@mail.{s.domain}>\nIn-Reply-To: {s.msgid}\nReferences:"
            f" {s.msgid}\nContent-Type: text/plain; charset=utf-8\n\nBedankt, mooi nummer!\n\n"
            f"> Hier komt het nieuws van deze maand.\n")
    return text.encode(), "other"


def broken(s: Sent) -> tuple[bytes, str]:
    """Readable but malformed: no boundary, bytes that are not UTF-8, a cut-off original."""
    variant = s.i % 3
    if variant == 0:  # multipart/report whose boundary is never closed, the original cut
        data, _ = postfix_dsn(s)
        return data[: len(data) * 2 // 3], "any"
    if variant == 1:  # multipart without a boundary parameter, Latin-1 in the header
        return (f"Delivered-To: {s.verp}\nFrom: MAILER-DAEMON@mx.{s.domain}\nTo: {s.verp}\n"
                f"Subject: Onbestelbaar: ".encode() + "déjà vu".encode("latin-1")
                + f"\nContent-Type: multipart/mixed\n\n<{s.rcpt}>: 550 unknown user\n\n"
                  f"{s.headers}\n".encode(), "any")
    return (f"Delivered-To: {s.verp}\nFrom: postmaster@{s.domain}\nTo: {s.verp}\nSubject: "
            f"Returned mail: see transcript for details\nContent-Type: multipart/report; "
            f"report-type=delivery-status; boundary=\"x\"\nContent-Transfer-Encoding: base64\n"
            f"\n--x\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n"
            f"\n!!not base64!!\n--x--\n".encode(), "any")


def unreadable(s: Sent) -> tuple[bytes, str]:
    """Not mail at all: moved aside."""
    return (b"" if s.i % 2 else bytes(s.rnd.getrandbits(8) for _ in range(512))
            .replace(b":", b";")), "aside"


# The mix: (share, builder). Builders return (bytes, the expected `kinds` label).
MIX: list[tuple[float, Callable[[Sent], tuple[bytes, str]]]] = [
    (0.35, postfix_dsn), (0.12, exchange_ndr), (0.08, gmail_dsn),
    (0.05, qmail_bounce), (0.05, exim_bounce),
    (0.10, delayed_dsn),
    (0.10, auto_reply),
    (0.05, arf_complaint),
    (0.05, unsub_mail),
    (0.015, spam), (0.01, person_answers), (0.01, broken), (0.005, unreadable),
]
DUPLICATE_SHARE = 0.01  # of the 5 % other: exact copies of an earlier return


def plan(n: int, seed: int = 2026) -> list[str]:
    """Which kind of return each of n sent messages gets, shuffled."""
    names = []
    for share, builder in MIX:
        names += [builder.__name__] * round(n * share)
    names += ["duplicate"] * round(n * DUPLICATE_SHARE)
    names = (names + ["postfix_dsn"] * n)[:n]
    random.Random(seed).shuffle(names)
    return names


def write_pool(outbox: Path, pool: Path, n: int) -> list[str]:
    """One return per sent message in `pool` (plain files, Maildir names); the expected
    label of each, in order."""
    builders = {b.__name__: b for _, b in MIX}
    files = sorted(os.listdir(outbox / "new"))
    if len(files) < n:
        raise SystemExit(f"the outbox holds {len(files):,} messages, {n:,} needed")
    pool.mkdir(parents=True)
    labels = []
    last: tuple[bytes, str] | None = None
    for i, (kind, name) in enumerate(zip(plan(n), files[:n], strict=True)):
        if kind == "duplicate" and last is not None:
            data, label = last[0], "duplicate"
        else:
            s = sent_from(i, (outbox / "new" / name).read_bytes())
            data, label = builders["postfix_dsn" if kind == "duplicate" else kind](s)
            if label not in ("aside", "any"):
                last = data, label
        (pool / f"{T0 + i // 100}.M{i}P1Q{i}.bench").write_bytes(data)
        labels.append(label)
    return labels


# -- the project ------------------------------------------------------------------------------

def project_env(db_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_DELIVERY__RATE": "0", "MAILER_DELIVERY__CONNECTIONS": "16",
                "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [
                    os.environ.get("PYTHONPATH")])])})  # this tree's mailer, not another
    if db_url:
        env["MAILER_DATABASE_URL"] = db_url
    return env


def make_project(folder: Path, n: int, db_url: str | None) -> dict[str, str]:
    """`mailer init`, n confirmed subscribers, a campaign sent to them into the outbox."""
    env = project_env(db_url)
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "init", str(folder)], check=True, env=env, capture_output=True)
    run = {"cwd": folder, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "lists", "sync"], **run)
    rnd = random.Random(n)
    with (folder / "people.csv").open("w", encoding="utf-8") as fh:
        fh.write("email,first_name,language\n")
        for i in range(n):
            fh.write(f"person.{i}@{DOMAINS[i % len(DOMAINS)]},{rnd.choice(FIRST)},nl\n")
    subprocess.run([*mailer, "subscribers", "import", "people.csv", "--list", "nieuwsbrief",
                    "--consent", "bench", "--confirmed", "--quiet"], **run)
    subprocess.run([*mailer, "campaign", "create", "dec", "--list", "nieuwsbrief",
                    "--template", "templates/newsletter.html.j2", "--subject", "Nieuws"], **run)
    done = subprocess.run([*mailer, "campaign", "send", "dec", "--yes", "--json"], **run)
    report = json.loads(done.stdout)
    if report["sent"] != n:
        raise SystemExit(f"the campaign sent {report['sent']:,} of {n:,}: {report}")
    return env


# -- a run ------------------------------------------------------------------------------------

def fill_maildir(pool: Path, count: int, box: Path) -> None:
    """A fresh Maildir whose new/ holds the pool's first `count` files (hard links), none
    of them in the page cache."""
    shutil.rmtree(box, ignore_errors=True)
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    names = sorted(os.listdir(pool), key=lambda f: int(f.split(".M")[1].split("P")[0]))
    for name in names[:count]:
        os.link(pool / name, box / "new" / name)
    os.sync()
    for name in names[:count]:
        fd = os.open(box / "new" / name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _proc(pid: int) -> tuple[int, int]:
    """RSS (kB) and threads of one process."""
    rss = threads = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


def measure(cmd: list[str], env: dict[str, str], cwd: Path,
            cpu: int | None) -> dict[str, object]:
    """Run `cmd` pinned to `cpu`; wall and CPU seconds, peak RSS (the kernel's high-water
    mark and /proc sampled every 20 ms), most threads seen, and its stdout."""
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err,
                                preexec_fn=pin)
        peak = threads = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, n = _proc(proc.pid)
            peak, threads = max(peak, rss), max(threads, n)
            time.sleep(0.02)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[2:6])} failed:\n{stderr[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
            "sys": usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024,
            "sampled_mb": peak / 1024, "threads": threads, "stdout": stdout,
            "stderr": stderr}


def check(box: Path, report: dict, labels: list[str], db_url: str) -> list[str]:
    """What must hold after a run; a list of failures (empty: all good), and prints the
    kinds found beside the kinds generated."""
    import sqlalchemy as sa

    from mailer.db import make_engine

    problems = []
    n = len(labels)
    expected = Counter(labels)
    if report["read"] + report["moved_aside"] != n:
        problems.append(f"read {report['read']} + aside {report['moved_aside']} != {n}")
    if report["duplicates"] != expected["duplicate"]:
        problems.append(f"duplicates {report['duplicates']} != {expected['duplicate']}")
    if report["moved_aside"] != expected["aside"]:
        problems.append(f"aside {report['moved_aside']} != {expected['aside']}")
    engine = make_engine(db_url)
    with engine.connect() as conn:
        keys, events, attributed = conn.execute(sa.text(
            "SELECT COUNT(DISTINCT message_key), COUNT(*), COUNT(subscriber_id) "
            "FROM feedback_event WHERE message_key NOT LIKE 'smtp:%'")).one()
        by = dict(conn.execute(sa.text(
            "SELECT COALESCE(attributed_by, 'nobody'), COUNT(*) FROM feedback_event "
            "GROUP BY 1")).all())
        suppressed = conn.execute(sa.text("SELECT COUNT(*) FROM suppression")).scalar()
        unsubscribed = conn.execute(sa.text(
            "SELECT COUNT(*) FROM subscription WHERE status = 'unsubscribed'")).scalar()
    engine.dispose()
    if keys != report["read"] - report["duplicates"]:
        problems.append(f"{keys} messages in the events != read {report['read']} - "
                        f"duplicates {report['duplicates']}")
    left = len(os.listdir(box / "new")) + len(os.listdir(box / "cur"))
    if left:
        problems.append(f"{left} messages left in the mailbox")
    done = sum(len(os.listdir(box / ".processed" / s)) for s in ("new", "cur")
               if (box / ".processed" / s).is_dir())
    failed = sum(len(os.listdir(box / ".failed" / s)) for s in ("new", "cur")
                 if (box / ".failed" / s).is_dir())
    if done != report["read"] or failed != report["moved_aside"]:
        problems.append(f".processed holds {done} (read {report['read']}), .failed {failed} "
                        f"(aside {report['moved_aside']})")
    found = Counter(report["kinds"])
    print(f"    events {events:,} for {keys:,} messages; attributed {attributed:,} "
          f"({', '.join(f'{k} {v:,}' for k, v in sorted(by.items()))}); "
          f"suppressed {suppressed:,}, unsubscribed {unsubscribed:,}")
    kinds = sorted(set(found) | {k for k in expected if k not in ("duplicate", "aside", "any")})
    differ = [k for k in kinds if found[k] != expected[k]]
    print("    kinds found (generated): " + ", ".join(
        f"{k} {found[k]:,}" + (f" ({expected[k]:,})" if found[k] != expected[k] else "")
        for k in kinds) + f"; broken ones: {expected['any']:,}")
    if differ and sum(abs(found[k] - expected[k]) for k in differ) > expected["any"]:
        print("    NOTE: the kinds differ from the generated mix by more than the broken "
              f"messages can explain: {', '.join(differ)}")
    return problems


def upgrade_snapshot(project: Path, snapshot: Path, env: dict[str, str]) -> None:
    """A kept database made by older code: the migrations the code has since, applied
    (to the copy that every run starts from)."""
    import sqlite3

    restore(project, snapshot, None, 0, env)
    done = subprocess.run([sys.executable, "-m", "mailer", "db", "upgrade"], cwd=project,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mailer db upgrade failed on the kept database:\n{done.stderr}")
    if "applied" in done.stdout + done.stderr:
        with sqlite3.connect(project / "mailer.db") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(project / "mailer.db", snapshot)
        print(f"(the kept database upgraded: {(done.stdout + done.stderr).strip()})")


def restore(project: Path, snapshot: Path, pg: object | None, run: int,
            env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The database as it was after sending: its URL, and the env to reach it."""
    if pg is None:
        for suffix in ("-wal", "-shm"):
            Path(f"{project / 'mailer.db'}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(snapshot, project / "mailer.db")
        return env, f"sqlite:///{project / 'mailer.db'}"
    url = pg.create_database(f"run{run}", template="bench")  # type: ignore[attr-defined]
    return {**env, "MAILER_DATABASE_URL": url}, url


# Steps of a run, by the frames on a sampled stack (checked in this order).
STEPS = [
    ("read the files (Maildir walk, open, read)", ("MaildirSource.__iter__",)),
    ("message key (SHA-256)", (";message_key (",)),
    ("read_report: parse (email.message_from_bytes)", (";read_report (", "message_from_bytes")),
    ("read_report: classify (reasons.classify)", (";read_report (", ";classify (")),
    ("read_report: flufl.bounce detectors", (";read_report (", "all_failures")),
    ("read_report: the returned original", (";read_report (", ";_original (")),
    ("read_report: the rest (headers, parts, fields)", (";read_report (",)),
    ("record: attribution (token, SELECTs)", (";Batch.record (", ";attribute (")),
    ("record: policy: soft-bounce streak", (";Batch.record (", ";_soft_streak (")),
    ("record: policy: suppress", (";Batch.record (", ";suppress (")),
    ("record: policy: the rest", (";Batch.record (", ";apply (")),
    ("record: the other statements (Core)", (";Batch.record (", "Connection.execute")),
    ("record: the rest (savepoints, events)", (";Batch.record (",)),
    ("commit (one a batch)", (";Batch.commit (",)),
    ("Maildir move (done)", ("MaildirSource.done",)),
    ("intake: the rest", (";read_sources (",)),
    ("start-up and exit (imports, config, click)", ()),
]


def profile(project: Path, env: dict[str, str], box: Path, n: int, cpu: int | None) -> None:
    """One run under py-spy (on-CPU samples at 100 Hz: the shares hold on a busy machine;
    a share times the run's CPU seconds gives microseconds a message) or, without py-spy,
    cProfile; the time per message by step."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    out = project / ("bounces.spy" if spy else "bounces.prof")
    command = ["-m", "mailer", "bounces", "process", "--source", f"maildir:{box}", "--json"]
    if spy:
        rate = 100
        r = measure([spy, "record", "-r", str(rate), "-f", "raw", "-o", str(out),
                     "--", sys.executable, *command], env, project, cpu)
        seconds: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            label = next(label for label, frames in STEPS
                         if all(f in stack for f in frames))
            seconds[label] += int(samples) / rate
        sampled = sum(seconds.values())
        total = r["cpu"]  # type: ignore[assignment]
        seconds = Counter({k: v / sampled * total for k, v in seconds.items()})
        how = f"py-spy, {sampled:.1f} s on CPU sampled, shares scaled to the CPU seconds"
    else:
        import pstats

        r = measure([sys.executable, "-m", "cProfile", "-o", str(out), *command], env,
                    project, cpu)
        loaded = pstats.Stats(str(out))
        stats, total = loaded.stats, loaded.total_tt  # type: ignore[attr-defined]
        names = {"MaildirSource.__iter__": ("feedback/sources.py", "__iter__"),
                 ";message_key (": ("feedback/processing.py", "message_key"),
                 ";read_report (": ("feedback/reports.py", "read_report"),
                 "message_from_bytes": ("email/__init__.py", "message_from_bytes"),
                 ";classify (": ("feedback/reasons.py", "classify"),
                 "all_failures": ("flufl/bounce/_scan.py", "all_failures"),
                 ";_original (": ("feedback/reports.py", "_original"),
                 ";Batch.record (": ("feedback/processing.py", "record"),
                 ";Batch.commit (": ("feedback/processing.py", "commit"),
                 ";attribute (": ("feedback/processing.py", "attribute"),
                 ";_soft_streak (": ("feedback/policy.py", "_soft_streak"),
                 ";suppress (": ("audience/suppression.py", "suppress"),
                 ";apply (": ("feedback/policy.py", "apply"),
                 "Connection.execute": ("engine/base.py", "execute"),
                 "MaildirSource.done": ("feedback/sources.py", "done"),
                 ";read_sources (": ("feedback/intake.py", "read_sources")}

        def cum(frame: str) -> float:
            path, name = names[frame]
            return sum(v[3] for k, v in stats.items() if k[0].endswith(path) and k[2] == name)

        # cumulative times nest: each step is its innermost frame's time (overlaps stay)
        seconds = Counter({label: cum(frames[-1]) for label, frames in STEPS if frames})
        seconds[STEPS[-1][0]] = total - cum(";read_sources (")
        how = f"cProfile, {total:.1f} s profiled; nested steps overlap, cProfile slows Python ~2x"
    print(f"\nprofile of one run, {n:,} messages: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU "
          f"({how})")
    print(f"  {'step':<50}{'us/msg':>9}{'share':>8}")
    for label, _ in STEPS:
        if seconds[label]:
            print(f"  {label:<50}{seconds[label] / n * 1e6:>9,.0f}"
                  f"{seconds[label] / total:>8.0%}")


def code_version() -> str:
    """The commit of the measured tree, and whether mailer/ differs from it."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "mailer"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{ROOT} (not a git checkout)"
    return f"{commit}{' with uncommitted changes in mailer/' if dirty else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--subscribers", type=int, default=None,
                        help="subscribers (and sent messages); default: the largest size")
    parser.add_argument("--repeat", type=int, default=2, help="runs per size (default 2)")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--cpu", type=int, default=os.cpu_count() - 1 if os.cpu_count() else 0,
                        help="the core to pin the command to (default: the last one)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    parser.add_argument("--profile", action="store_true",
                        help="also one run of the smallest size under cProfile")
    parser.add_argument("--keep", metavar="DIR",
                        help="build in DIR and leave it there; a SQLite build already in DIR "
                             "is used again")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    n = args.subscribers or max(sizes)
    cpu = None if args.no_pin else args.cpu
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mailer-fbbench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    pg = None
    try:
        db_url = None
        if args.postgres:
            from tests.support.pgserver import start_postgres

            pg = start_postgres()
            db_url = pg.create_database("bench")
        project = tmp / "project"
        snapshot = tmp / "after-send.db"
        built = tmp / "built.json"
        if pg is None and built.exists():  # --keep DIR: a build left there before
            kept = json.loads(built.read_text())
            n, labels, sent_s, pool_s = kept["n"], kept["labels"], kept["sent_s"], kept["pool_s"]
            if max(sizes) > len(labels):
                raise SystemExit(f"{tmp} holds {len(labels):,} returns: use another folder")
            env = project_env(None)
            upgrade_snapshot(project, snapshot, env)
            print(f"(reusing the build in {tmp})")
        else:
            t = time.perf_counter()
            env = make_project(project, n, db_url)
            sent_s = time.perf_counter() - t
            t = time.perf_counter()
            labels = write_pool(project / "outbox", tmp / "pool", max(sizes))
            pool_s = time.perf_counter() - t
            shutil.rmtree(project / "outbox")
            if pg is None:
                import sqlite3

                with sqlite3.connect(project / "mailer.db") as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                shutil.copyfile(project / "mailer.db", snapshot)
                built.write_text(json.dumps({"n": n, "labels": labels, "sent_s": sent_s,
                                             "pool_s": pool_s}))
        pool_mb = sum(f.stat().st_size for f in (tmp / "pool").iterdir()) / 2**20
        print(f"{'PostgreSQL' if pg else 'SQLite'}; {n:,} subscribers, a campaign sent to "
              f"all of them into the maildir outbox ({sent_s:.0f} s with the project and the "
              f"import); {len(labels):,} returns written ({pool_mb:,.0f} MB, {pool_s:.0f} s); "
              f"pinned to {'no core' if cpu is None else f'core {cpu}'}; code {code_version()}; "
              f"load average {os.getloadavg()[0]:.1f}\n")
        box = tmp / "returns"
        url = f"maildir:{box}"
        cmd = [sys.executable, "-m", "mailer", "bounces", "process", "--source", url, "--json"]
        run_env, _ = restore(project, snapshot, pg, 0, env)
        fill_maildir(tmp / "pool", 0, box)
        empty = [measure(cmd, run_env, project, cpu) for _ in range(3)]
        startup = min(r["wall"] for r in empty)
        startup_cpu = min(r["cpu"] for r in empty)  # type: ignore[type-var]
        if pg is not None:
            pg.drop_database("run0")
        print(f"start-up (an empty Maildir, best of 3): {startup:.2f} s, "
              f"{startup_cpu:.2f} CPU s\n")
        print(f"{'messages':>9}{'run':>4}{'wall s':>8}{'msgs/s':>8}{'w/o start':>10}"
              f"{'CPU s':>7}{'msgs/CPU s':>11}{'w/o start':>10}{'peak RSS':>10}{'sampled':>9}"
              f"{'threads':>8}{'load':>6}")
        results: dict[int, list[dict]] = {}
        count = 0
        for size in sizes:
            for attempt in range(1, args.repeat + 1):
                count += 1
                run_env, run_url = restore(project, snapshot, pg, count, env)
                fill_maildir(tmp / "pool", size, box)
                r = measure(cmd, run_env, project, cpu)
                report = json.loads(r["stdout"])  # type: ignore[arg-type]
                results.setdefault(size, []).append(r)
                print(f"{size:>9,}{attempt:>4}{r['wall']:>8.1f}{size / r['wall']:>8,.0f}"
                      f"{size / (r['wall'] - startup):>10,.0f}{r['cpu']:>7.1f}"
                      f"{size / r['cpu']:>11,.0f}{size / (r['cpu'] - startup_cpu):>10,.0f}"
                      f"{r['maxrss_mb']:>7,.0f} MB"
                      f"{r['sampled_mb']:>6,.0f} MB{r['threads']:>8}"
                      f"{os.getloadavg()[0]:>6.1f}", flush=True)
                problems = check(box, report, labels[:size], run_url)
                if pg is not None:
                    pg.drop_database(f"run{count}")
                if problems:
                    raise SystemExit("CHECK FAILED: " + "; ".join(problems))
        print("\nbest and worst of the runs:")
        for size, runs in results.items():
            rates = sorted(size / r["wall"] for r in runs)
            rss = sorted(r["maxrss_mb"] for r in runs)
            print(f"  {size:>9,}: {rates[-1]:,.0f} / {rates[0]:,.0f} msgs/s (wall), "
                  f"{max(size / r['cpu'] for r in runs):,.0f} / "
                  f"{min(size / r['cpu'] for r in runs):,.0f} msgs per CPU second, "
                  f"peak RSS {rss[0]:,.0f} / {rss[-1]:,.0f} MB")
        print("checks: events = messages read - duplicates; duplicates and unreadable as "
              "generated; the mailbox empty, .processed and .failed full: all held")
        if args.profile:
            size = min(sizes)
            run_env, _ = restore(project, snapshot, pg, count + 1, env)
            fill_maildir(tmp / "pool", size, box)
            profile(project, run_env, box, size, cpu)
            if pg is not None:
                pg.drop_database(f"run{count + 1}")
    finally:
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
