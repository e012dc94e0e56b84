"""A finding: one thing the doctor checked, as data.

    Finding(check="spf", status="fail", what="example.be has no SPF record.",
            why="Gmail: 550-5.7.26 …", fix='example.be. IN TXT "v=spf1 ip4:192.0.2.10 -all"')

`status` is ok, warn or fail. Only a fail blocks delivery (`mailer doctor` exits 1);
a warning is advice. `why` says what the large mailbox providers answer when it is
wrong, `fix` the exact record to publish or setting to change (empty when ok).

The providers' answers below are quoted from their published error lists (Gmail's "SMTP
errors and codes", Yahoo's Sender Hub, Microsoft's announcement of 2 April 2025 for
Outlook.com): the codes a log or a bounce shows, so the doctor's words can be matched to
what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from mailer.content.dkim import txt_strings
from mailer.doctor.resolver import DnsFailure

__all__ = ["BULK", "Finding", "Status", "each", "zone_line", "zone_txt"]

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str  # spf, dkim, dmarc, mx, ptr, ehlo, relay, public_url, one_click, templates, …
    status: Status
    what: str  # what was found, in plain words
    why: str = ""  # what Gmail, Yahoo and Microsoft answer (or would) because of it
    fix: str = ""  # the record to publish or the setting to change; empty when ok

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def each(check: str, what: str, domains: Iterable[str],
         examine: Callable[[str], list[Finding]]) -> list[Finding]:
    """The findings of `examine` for every domain; a domain whose DNS does not answer is
    a fail of its own ("WHAT of DOMAIN not checked"), and the others are still checked."""
    findings: list[Finding] = []
    for domain in domains:
        try:
            findings += examine(domain)
        except DnsFailure as exc:
            findings.append(Finding(check, "fail", f"{what} of {domain} not checked: {exc}.",
                                    "Receivers asking the same servers get no answer either "
                                    "and defer the mail.",
                                    "Make the domain's name servers answer (ask the DNS "
                                    "host), or run the doctor where DNS works."))
    return findings


def zone_txt(name: str, value: str) -> str:
    """A TXT record as a zone file line: character-strings of at most 255 bytes, in
    parentheses when there are several (verifiers join them without a separator)."""
    strings = [f'"{part}"' for part in txt_strings(value)]
    if len(strings) == 1:
        return f"{name}. IN TXT {strings[0]}"
    indent = " " * len(f"{name}. IN TXT ( ")
    return f"{name}. IN TXT ( " + f"\n{indent}".join(strings) + " )"


def zone_line(name: str, kind: str, value: str) -> str:
    return f"{name}. IN {kind} {value}"


# What the providers answer. "Bulk" is Gmail's and Yahoo's 5,000 messages a day to their
# users, and Microsoft's 5,000 a day to Outlook.com from one From domain.
BULK = "senders of 5,000 or more messages a day"

GMAIL_UNAUTHENTICATED = ("Gmail: 550-5.7.26 \"This mail has been blocked because the sender "
                         "is unauthenticated\" when neither SPF nor DKIM passes (421-4.7.26 "
                         "rate-limits it first).")
GMAIL_SPF = ("Gmail: 421-4.7.27, then 550-5.7.27 \"it didn't pass SPF authentication\": "
             f"{BULK} must pass SPF.")
GMAIL_SPF_HARDFAIL = ("Gmail: 550-5.7.26 \"The MAIL FROM domain has an SPF record with a hard "
                      "fail policy (-all) but it fails to pass SPF checks with the ip\".")
GMAIL_SPF_SUSPICIOUS = ("Gmail: 451-4.7.24 / 550-5.7.24 \"The SPF record of the sending "
                        "domain has one or more suspicious entries\".")
GMAIL_DKIM = ("Gmail: 421-4.7.30, then 550-5.7.30 \"it didn't pass DKIM authentication\": "
              f"{BULK} must sign with DKIM.")
GMAIL_DMARC = ("Gmail: 421-4.7.40 / 550-5.7.40 \"the sending domain doesn't have a DMARC "
               "record or the DMARC record doesn't specify a DMARC policy\" (4.7.31 before).")
GMAIL_ALIGNMENT = ("Gmail: 421-4.7.32 / 5.7.32 \"the From: header isn't aligned with either "
                   "the authenticated SPF or DKIM organizational domain\".")
GMAIL_DMARC_REJECT = ("Gmail: 550-5.7.26 \"Unauthenticated email from DOMAIN is not accepted "
                      "due to domain's DMARC policy\".")
GMAIL_PTR = ("Gmail: 451-4.7.23 (rate-limited), then 550-5.7.25 \"the sending IP address "
             "doesn't have a PTR record, or the forwarding DNS entry doesn't reference the "
             "sending IP address\"; a requirement for all senders.")
GMAIL_TLS = ("Gmail: 421-4.7.29 / 550-5.7.29 \"it wasn't sent over a TLS connection\": "
             f"{BULK} must use TLS.")
GMAIL_ONE_CLICK = ("Gmail and Yahoo require one-click unsubscribe (RFC 8058: an https "
                   f"List-Unsubscribe URL that takes a POST) from {BULK}; without it Gmail "
                   "shows no unsubscribe button, people press \"Report spam\" instead, and "
                   "the complaint rate (Gmail's limit: 0.3 %) decides the rest.")
GMAIL_CLIP = "Gmail clips an HTML part over 102 KB, hiding the rest and the unsubscribe link."
YAHOO_UNAUTHENTICATED = ("Yahoo: 550 5.7.9 \"This mail has been blocked because the sender "
                         "is unauthenticated. Yahoo requires all senders to authenticate with "
                         "either SPF or DKIM\".")
YAHOO_DMARC = ("Yahoo: 554 5.7.9 \"Message not accepted for policy reasons\" when DMARC fails "
               f"under p=reject; {BULK} need SPF, DKIM and a DMARC policy.")
YAHOO_IP = ("Yahoo: 553 5.7.2 [TSS09] \"All messages from IP will be permanently deferred; "
            "Retrying will NOT succeed\" for addresses without proper reverse DNS or with a "
            "poor reputation.")
YAHOO_CONTENT = "Yahoo: 554 [PH01] \"Email not accepted for policy reasons\" for the content."
MICROSOFT = ("Microsoft (Outlook.com, Hotmail, Live): 550 5.7.515 \"Access denied, sending "
             "domain DOMAIN does not meet the required authentication level\": "
             f"{BULK} need SPF and DKIM to pass and DMARC (at least p=none) aligned.")
UNKNOWN_SENDER_DOMAIN = ("Receivers that check the envelope sender's domain refuse mail "
                         "from one that takes no mail: Postfix's reject_unknown_sender_domain "
                         "answers 450 4.1.8 / 550 5.1.8 \"Sender address rejected: Domain not "
                         "found\", Yahoo 554 \"unresolvable RFC.5321 from domain\".")
