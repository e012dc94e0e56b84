"""Why a message came back: one failed recipient's evidence in, one `Verdict` out.

`classify()` reads what a report says about one recipient (the RFC 3463 enhanced status
code, the SMTP reply code, the Diagnostic-Code or the free text of a non-standard report,
the RFC 3464 Action) and names the reason in sisimai's vocabulary, whether the failure is
hard (the recipient's side made it permanent: suppress the address) and whether it is about
us (our IP, domain, authentication, content or rate: warn the operator, never suppress the
subscriber). It classifies by reason, not by the first digit: "550 5.7.1 ... blocked using
Spamhaus" is permanent and about us, so it is soft; "552 5.2.2 over quota" is soft too.

Precedence, strongest evidence first:

1. Action. ``delivered``/``relayed``/``expanded`` (or a 2.x.x status with no Action) is
   `DELIVERED`. ``delayed`` is never hard, whatever else is said (the reason still comes
   from the evidence below; with none, ``expired`` as sisimai does).
2. Strong phrases in the text, one group per reason, in this order (the first group with
   a phrase anywhere in the text wins): provider codes that name their reason (GoDaddy
   ``IBnnn``, Cox ``AUP#CXBL``, Outlook.com ``SC-001``, Yahoo ``[TSS04]``), greylisting,
   sending-quota limits, mailbox full, message too big, exceed limit, suspend, has
   moved, no relaying, authentication (SPF/DKIM/DMARC), PTR, block lists, reputation,
   spam, virus, rejected sender, not accept (null MX), temporary DNS failure, host
   unknown, user unknown, STARTTLS, filtered, RFC 5322, content, policy, other
   rejections, too many connections, speeding, other blocks, security (SMTP AUTH),
   system full, mailer error. This is sisimai's order (MailboxFull, MesgTooBig,
   ExceedLimit, Suspend, HasMoved, NoRelaying, AuthFailure before UserUnknown; a 5.1.1
   that also names a block list, a relay denial, a full mailbox or a rejected sender is
   not a user unknown), with one deliberate change: every sender-side group that names
   its cause explicitly (SPF/DKIM/DMARC, PTR, block lists, reputation, spam, virus,
   rejected sender) is checked before user unknown, because suppressing a subscriber
   for our own block is the costlier mistake. Phrases nested in one another are all
   found, so the order decides ("client host rejected: cannot find your hostname" is a
   PTR problem, not the block that "client host rejected" alone would be).
3. A specific enhanced status code (sisimai's table, RFC 3463/5248/7372/7505): 5.1.1 user
   unknown, 5.1.2 and 5.4.4 host unknown, 5.1.6 has moved, 5.1.10 not accept, x.2.2
   mailbox full, 5.2.3 exceed limit, 5.3.4 message too big, 5.7.20-24/26/27/29 auth
   failure, 5.7.25 require PTR, x.4.7 expired, 4.7.1 blocked, ... A status refines a
   strong phrase in one case: 5.2.3 with "message too large" is exceed limit. Generic and
   ambiguous codes (x.0.0, 5.7.0, 5.7.1, 4.7.0, 5.5.x) are left to the text.
4. Weak phrases (generic wording: "does not exist", "invalid recipient", a bare "spam" or
   "blocked", loops, timeouts, system errors, syntax errors), then the generic code by
   its subject (x.7.x security error, x.6.x content error, 5.3.0 system error, ...), then
   the reply code alone (451 system error, 452 system full, 5.0x syntax error, 521/556
   not accept, 530/535 security error, 552 mailbox full), then vacation or feedback
   wording when there is no code at all, then `UNDEFINED`.

The status code is the report's own Status when it is well formed and specific; a
generic one (x.0.0, and the codes sisimai's status.Prefer distrusts: 4.4.7, 4.7.0,
5.3.x, x.5.x) gives way to the code written in the text; when they differ in class, the
one matching the reply code wins.

Hard is only `USERUNKNOWN`, `HOSTUNKNOWN`, `HASMOVED` on a failure that is not temporary
(not Action delayed, not a 4.x.x status or, without one, a 4xx reply), and `NOTACCEPT`
only when permanent (a 5.x.x/5xx, or Action failed with no code at all). A rejection at
the connection, HELO or MAIL FROM stage is never about the recipient, so never hard.
Sender-side: blocked, bad reputation, require PTR, auth failure, spam, policy, security,
content, virus, speeding, too many connections, no relaying, STARTTLS, RFC 5322; rejected
when the phrase is about our sender address/domain (or a 5.1.7/5.1.8 status); and any
x.7.x rejection whose text names our IP/domain, SPF/DKIM/DMARC or a block list. A
sender-side verdict is never hard.

Shape, for speed (this runs for every returned message): the text, cut at 4,096
characters, is lower-cased, accent-folded and cut into words of letters and digits in
one bytes.translate + split, so case, folding over lines and punctuation no longer
matter. Every phrase of every group is a path in one trie of words (a dict of dicts,
built at import); one pass over the words walks it from each word and collects every
group with a phrase in the text, skipping the "550-5.1.1" codes that multi-line SMTP
replies repeat at each line start. Phrases with gaps ("mailbox ... full") hang off their
first words and are checked further only when those occur. The codes are found by two
small regexes. A first version used one big regex (a trie of all phrases, in a
look-ahead, at each word start): CPython's re spends ~25 ns on every position it tries,
and that version took ~80 us per call. Measured with `python -m mailer.feedback.reasons`
(Python 3.11, CPU time of one process, best of 7; the 2-core machine was shared with
other test runs, load 3-4, so these are upper bounds and vary from run to run): 20-30 us
per call on average over 20 real-world diagnostics of 32-317 characters, 16 us for a
typical 190-character one, 230-430 us for a 4,096-character one; building the trie at
import takes 30-60 ms. At 500 messages/s a message may take 2 ms in all.

Where this departs from sisimai, on purpose: 5.7.27 (sender address has null MX, and
Gmail's "authenticate with SPF") is auth failure, not not-accept, since a not-accept with
a 5xx is hard and this is about our domain; connection refused/reset is a network error,
not a block; greylisting is on hold, not spam; x.2.1 is suspend (RFC 3463 "mailbox
disabled"); Gmail's "unusual rate of unsolicited mail" stays blocked as sisimai has it.

Sources: the phrases and the status-to-reason table are taken from sisimai
(https://libsisimai.org, lib/Sisimai/Reason/*.pm, sisimai/reason/*.rb and the Go
reason/why-*.go, rhost/for-*.go and smtp/status tables; Copyright azumakuniyuki and the
sisimai development team, BSD 2-Clause License), extended with provider documentation
(Google, Microsoft, Yahoo, Apple, GMX/web.de, T-Online, Orange, GoDaddy, Cox, Mimecast)
and with Dutch, German and French wordings. The code here is our own.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass

__all__ = ["Reason", "Verdict", "classify", "extract_codes"]


class Reason(enum.StrEnum):
    """Why a message was not delivered, in sisimai's vocabulary."""

    USERUNKNOWN = "userunknown"
    HOSTUNKNOWN = "hostunknown"
    HASMOVED = "hasmoved"
    NOTACCEPT = "notaccept"
    MAILBOXFULL = "mailboxfull"
    EXCEEDLIMIT = "exceedlimit"
    MESGTOOBIG = "mesgtoobig"
    SUSPEND = "suspend"
    FILTERED = "filtered"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    POLICYVIOLATION = "policyviolation"
    SPAMDETECTED = "spamdetected"
    VIRUSDETECTED = "virusdetected"
    SECURITYERROR = "securityerror"
    AUTHFAILURE = "authfailure"
    REQUIREPTR = "requireptr"
    BADREPUTATION = "badreputation"
    TOOMANYCONN = "toomanyconn"
    SPEEDING = "speeding"
    EXPIRED = "expired"
    NETWORKERROR = "networkerror"
    SYSTEMERROR = "systemerror"
    SYSTEMFULL = "systemfull"
    MAILERERROR = "mailererror"
    CONTENTERROR = "contenterror"
    NOTCOMPLIANTRFC = "notcompliantrfc"
    SYNTAXERROR = "syntaxerror"
    NORELAYING = "norelaying"
    FAILEDSTARTTLS = "failedstarttls"
    ONHOLD = "onhold"
    UNDEFINED = "undefined"
    DELIVERED = "delivered"
    FEEDBACK = "feedback"
    VACATION = "vacation"


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason
    hard: bool          # only userunknown, hostunknown, hasmoved, and notaccept with a 5xx
    sender_side: bool   # the rejection is about US: warn the operator, never suppress


R = Reason
_HARD = frozenset({R.USERUNKNOWN, R.HOSTUNKNOWN, R.HASMOVED})
_SENDER_SIDE = frozenset({
    R.BLOCKED, R.BADREPUTATION, R.REQUIREPTR, R.AUTHFAILURE, R.SPAMDETECTED,
    R.POLICYVIOLATION, R.SECURITYERROR, R.CONTENTERROR, R.VIRUSDETECTED, R.SPEEDING,
    R.TOOMANYCONN, R.NORELAYING, R.FAILEDSTARTTLS, R.NOTCOMPLIANTRFC,
})

# --- the phrases ------------------------------------------------------------------------
# A phrase is a string, matched as whole words (case, accents, whitespace and punctuation
# aside: "recipient address rejected: user unknown" is five words), or a tuple of phrases
# that must follow one another in that order, each within _GAP_WORDS words of the last.
# Its last word also matches with an ending (-s, -es, -d, -ed, -ing, -er, -ers: "rate
# limit" reads "rate limited") unless the phrase ends in "$".

Phrase = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    reason: Reason
    strong: bool               # strong: beats a specific status code; weak: gives way to it
    sender_side: bool | None   # None: as the reason says
    phrases: tuple[Phrase, ...]
    only_without_codes: bool = False


def _g(name: str, reason: Reason, *phrases: Phrase, strong: bool = True,
       sender_side: bool | None = None, only_without_codes: bool = False) -> _Group:
    return _Group(name, reason, strong, sender_side, phrases, only_without_codes)


_GROUPS: tuple[_Group, ...] = (
    # Provider codes that name their reason: GoDaddy "IBnnn", Cox "AUP#CXxxx"/"IPBLnnnn",
    # Outlook.com "RP-00n"/"SC-00n"/"OU-00n"/"DY-00n", Yahoo "[TSS04]", "[PH01]", "[BL21]".
    _g("code_blocked", R.BLOCKED,
       "ib110$", "ib111$", "ib112$", "ib113$", "ib104$", "ib105$", "ib106$", "cxbl$",
       "cdrbl$", "ipbl0001$", "ipbl0010$", "ipbl0100$", "ipbl0011$", "ipbl0101$",
       "ipbl0110$", "ipbl0111$", "ipbl1000$", "ipbl1001$", "ipbl1010$", "ipbl1011$",
       "ipbl1100$", "ipbl1101$", "ipbl1110$", "ipbl1111$", "ipbl00001$", "sc-003$",
       "sc-004$", "dy-001$", "ou-001$", "tss09$", "tss11$", "bl21$", "bl22$", "bl23$"),
    _g("code_badreputation", R.BADREPUTATION,
       "ib103$", "rp-001$", "rp-002$", "rp-003$", "sc-001$", "ou-002$", "tss04$", "ts01$",
       "ts02$", "ts03$"),
    _g("code_authfailure", R.AUTHFAILURE, "ib508$", "cxsndr$"),
    _g("code_requireptr", R.REQUIREPTR, "ib108$", "cxdns$"),
    _g("code_spam", R.SPAMDETECTED, "ib212$", "urlbl011$", "urlbl101$", "urlbl110$",
       "urlbl1001$"),
    _g("code_virus", R.VIRUSDETECTED, "ib705$"),
    _g("code_speeding", R.SPEEDING, "ib101$", "ib504$", "ib510$", "ib607$"),
    _g("code_toomanyconn", R.TOOMANYCONN, "ib605$", "ib007$", "cxcnct$", "cxmxrt$"),
    _g("code_security", R.SECURITYERROR, "ib401$", "cxthrt$", "cxmj$", "dy-002$"),
    _g("code_rfc", R.NOTCOMPLIANTRFC, "ib501$", "ib502$"),
    _g("code_rejected", R.REJECTED, "ib506$", "cxsmtp$", sender_side=True),
    _g("code_policy", R.POLICYVIOLATION, "sc-002$", "ph01$"),
    _g("greylist", R.ONHOLD, "greylisted", "greylisting", "grey listed", "graylisted",
       "greylist$", "grey-listed", sender_side=False),
    _g("quota_send", R.SPEEDING,
       "daily sending quota exceeded", "daily user sending limit exceeded",
       "daily user sending quota exceeded", "daily smtp relay limit exceeded",
       "daily smtp relay sending limit exceeded", "peak smtp relay limit exceeded",
       "submission quota exceeded", "sending quota exceeded", "maximum sending rate exceeded",
       "throttling failure", "has exceeded the max emails per hour",
       "reached your daily limit for message recipients", "per hour message receive limit",
       "has exceeded their limit for", "sent too many messages this hour",
       "sent too many to too many recipients", "exceeded the max number of messages per",
       "exceeded permitted limits within", "tenant has exceeded threshold",
       "traffic not accepted from this ip", "is receiving mail too quickly",
       "receiving mail at a rate that prevents additional messages",
       "user is receiving mail too quickly", "deferred due to excessive volume",
       "please try again slower", "try again slower", "receivingrateperm",
       "receivingratetemp"),
    _g("mailboxfull", R.MAILBOXFULL,
       "mailbox full", "mailbox is full", "mailbox is over quota", "mailbox quota exceeded",
       "mailbox size limit exceeded", "mailbox exceeds allowed size",
       "mailbox would exceed maximum allowed storage", "mailbox has exceeded", "full mailbox",
       "mailfolder is full", "inbox is full", "inbox full", "quota exceeded",
       "quota limit exceeded", "over quota", "overquota", "storage quota",
       "exceeded storage allocation", "exceeded its storage", "out of storage space",
       "insufficient disk space", "not sufficient disk space", "no space left on device",
       "not enough space", "not enough storage", "quota violation for",
       "user has exceeded quota", "too many messages on the server",
       "user's space has been used up", "account disabled temporarly for exceeding receiving",
       "account disabled temporarily for exceeding receiving", "account storage limit",
       "too much mail data", "exhausted allowed storage", "has exceeded the storage",
       "quotaexceededexception", "mapiexceptionshutoffquotaexceeded", "mailfolder is over the",
       "storage limit", "speichervolumen", "speicherplatz", "postfach voll",
       "postfach ist voll", "mailbox voll", "mailbox ist voll", "mailbox is vol$",
       "mailbox vol$", "postvak is vol$", "postvak vol$", "brievenbus is vol$",
       "boite du destinataire pleine", "boite pleine", "boite aux lettres pleine",
       "boite aux lettres est pleine", "quota depasse", "casella piena",
       "casella di posta piena", "buzon lleno", "recipient overquota", "overquotaperm$",
       "overquotatemp$",
       ("account is", "quota"), ("disk", "quota"), ("enough", "space"),
       ("mailbox", "exceeded", "limit"), ("mailbox", "full"), ("mailbox", "quota"),
       ("maildir", "quota"), ("over", "quota"), ("quota", "exceeded"),
       ("quota", "uberschritten"), ("quota", "ueberschritten"), ("quota", "overschreden"),
       ("postvak", "is vol$"), ("mailbox", "is vol$"), ("postfach", "ist voll"),
       ("boite aux lettres", "pleine"), ("boite de reception", "pleine"),
       ("inbox", "is full"), "recipient inbox full", "mailbox is full and can't accept"),
    _g("mesgtoobig", R.MESGTOOBIG,
       "message too big", "message file too big", "message too large", "message is too large",
       "message is too big", "message size exceeds", "message length exceeds",
       "max message size exceeded", "maximum message size", "maximum email size exceeded",
       "exceeded maximum inbound message size", "exceeded the maximum incoming message size",
       "message size limit", "exceeds size limit", "size limit exceeded",
       "message exceeds maximum size", "exceeds the maximum size",
       "exceeded google's message size limits", "exceeds google's message size limit",
       "email is too large", "taille limite du message", "message trop volumineux",
       "message trop gros", "nachricht zu gross", "nachricht ist zu gross",
       "bericht is te groot", "line limit exceeded", "message too big for system",
       "size limit$", "maxsizeerror$", "because it's too large", "because it is too large"),
    _g("exceedlimit", R.EXCEEDLIMIT,
       "message header size exceeds limit", "exceeds google's limit of",
       "bytes per individual header size", "exceeds google's header name limit",
       "header-limits$",
       "exceeds google's message header size limit", "message header size exceeds",
       "exceeded google's message header size limits", "recipsizelimit"),
    _g("suspend", R.SUSPEND,
       "is currently suspended", "temporary locked", "archived recipient",
       "boite du destinataire archivee", "email account that you tried to reach is disabled",
       "email account that you tried to reach is inactive", "has been suspended",
       "inactive account", "account is inactive", "account inactive",
       "invalid/inactive user", "is a deactivated mailbox", "is unavailable: user is terminated",
       "mailbox currently suspended", "mailbox disabled", "mailbox is disabled",
       "mailbox is frozen", "mailbox unavailable or access denied",
       "recipient rejected: temporarily inactive", "temporarily inactive",
       "recipient suspend the service", "account has been disabled", "account is disabled",
       "account disabled", "account has been deactivated", "account is deactivated",
       "account has been temporarily suspended", "this address no longer accepts mail",
       "user or domain is disabled", "user suspended", "user is inactive", "user disabled",
       "account is locked", "le compte du destinataire est bloque",
       "recipient account isblocked", "recipient account is blocked",
       "mailbox cannot be accessed", "access denied, banned recipient", "account expired",
       "account has expired", "postfach gesperrt", "postfach deaktiviert",
       "konto deaktiviert", "account is geblokkeerd", "mailbox is geblokkeerd",
       "compte desactive", "compte bloque", "disableduser$",
       ("delivery error: dd", "is no longer valid")),
    _g("hasmoved", R.HASMOVED,
       "has been replaced by", "recipient no longer on server", "no longer on server",
       "mailbox has moved", "address has moved", "user has moved",
       "has moved and is no longer"),
    _g("norelaying", R.NORELAYING,
       "relay access denied", "relaying denied", "relay denied", "relay not permitted",
       "relaying not permitted", "relaying not allowed", "relay not allowed", "no relaying",
       "unable to relay", "not permitted to relay", "not allowed to relay",
       "not an open relay", "insecure mail relay", "not configured to relay mail",
       "relaying mail to", "mail relay denied", "open relay not allowed",
       "open relay is not allowed", "we don't handle mail for", "we do not relay",
       "that domain isn't in my list of allowed rcpthost", "not local host", "not a gateway",
       "specified domain is not allowed", "as a relay", "email address is not verified",
       "requires authentication when attempting to send to a non-local",
       "relaying prohibited", "relay prohibited", "invalid credentials for relay",
       "is not authorized to send email directly to our servers", "notauthorizederror$"),
    _g("authfailure", R.AUTHFAILURE,
       "dmarc policy", "dmarc verification", "dmarc check", "dmarc fail", "dmarc validation",
       "dmarc authentication", "dmarc reject", "dmarc record", "failed dmarc",
       "fails dmarc", "does not pass dmarc", "dmarc sender invalid", "verification dmarc",
       "dmarcrejection", "spf check", "spf fail", "spf validation", "spf record",
       "spf settings", "spf policy", "spf sender invalid", "spf authentication",
       "spf violation", "failed spf", "fails spf", "due to spf", "spf.pobox.com",
       "sender policy framework", "spf (sender policy framework)",
       "senders to authenticate", "sender is unauthenticated", "unauthenticated email",
       "unauthenticated mail", "fails to pass authentication checks", "fails to pass spf",
       "does not have authentication information", "authentication checks (spf",
       "must pass either spf or dkim", "doesn't meet the required authentication level",
       "doesn't meet the authentication requirements", "dkim signature",
       "dkim sender invalid", "dkim check", "dkim fail", "dkim verification",
       "dkim validation", "dkim authentication", "dkim does not pass", "dkim = did not pass",
       "dkim did not pass", "dkim=fail", "authenticate with dkim", "authenticate with spf",
       "authenticate their email with", "aligned with either the authenticated spf",
       "add a dmarc record", "the spf record of the sending domain",
       "blocked for failing both spf and dkim", "invalid spf record",
       "inspect your spf settings", "spf/dns de votre nom de domaine",
       "reject due to spf policy", "sender authentication failed",
       ("spf", "not allowed to send mail")),
    _g("requireptr", R.REQUIREPTR,
       "ip name lookup failed", "ptr record", "ptr resource record", "ptr-record",
       "reverse dns", "rdns$", "reverse lookup", "reverse hostname",
       "cannot find your hostname", "cannot resolve your address",
       "client host rejected: cannot find your", "fix reverse dns",
       "forward dns entry does not point", "does not match the ip address of the hostname",
       "unresolvable relay host name", "generic dns ptr", "dns check failure - try again later",
       "rejected - no rdns", "no rdns", "invalid rdns", "mismatches client ip",
       "unverifyable sending ips", "unverifiable sending ips",
       "hosts with dynamic ip or generic dns", "ipv6autherror$",
       ("dns lookup failure:", "try again later")),
    _g("blocklist", R.BLOCKED,
       "blocked using", "spamhaus", "spamcop", "barracuda", "sorbs", "senderscore",
       "csi.cloudmark.com", "proofpoint.com/dnsbl", "dnsbl", "rbl$", "rbls$", "rbl reject",
       "rbl on", "blacklisted", "blacklist", "black list", "black listed", "blocklisted",
       "blocklist", "block list", "block listed", "blocked list", "banned sending ip",
       "bad sender ip", "sender ip address rejected", "extreme bad ip profile", "s3150$",
       "part of their network is on our block list",
       "not currently accepting mail from your ip", "dynamic ip", "dynamic/zombied",
       "zombied", "too many spams from your ip", "your ip address is listed",
       "your ip is listed", "ip is listed", "client host blocked", "client host rejected",
       "helo command rejected", "bad helo", "access denied, banned sender",
       "access denied, please try again later", "access denied, rejected by recipient",
       "using customer block list", "ip not in whitelist", "unusual rate of",
       "tosa@rx.t-online.de", "rx.t-online.de", "will be permanently deferred",
       "adresse ip source bloquee", "rejected due to listing in", "temporarily blacklisted",
       "rejecting open proxy", "open proxy", "you are sending spam", "currently sending spam",
       "looks suspiciously like spammer", "listed as abusive", "abuseat.org",
       "is blocked by earthlink", "abus detecte", "invalid ip for sending mail",
       "we do not accept mail from dynamic", "too many invalid recipients",
       "does not accept email over ipv6", "server access forbidden by your ip",
       "try again later, closing connection", "unsolicitedratelimiterror",
       "please use the smtp server of your isp", "ip address is block",
       "service refuse$", ("email blocked by", "barracudacentral"),
       ("access from ip address", "blocked"), ("mail server at", "is blocked"),
       ("your access ip", "has been rejected")),
    _g("badreputation", R.BADREPUTATION,
       "reputation", "temporarily deferred due to unexpected volume or user complaints",
       "temporarily deferred due to user complaints", "deferred due to user complaints",
       "due to user complaints"),
    _g("spamdetected", R.SPAMDETECTED,
       "spam detected", "detected as spam", "classified as spam", "identified as spam",
       "considered spam", "considered as spam", "considered unsolicited", "marked as spam",
       "scored as spam", "looks like spam", "look like spam", "looked like spam",
       "appears to be spam", "seems to be a spam", "rejected as spam", "spam message",
       "spam content", "spam score", "spam points", "spam-like", "spamlike", "spam filter",
       "spam check", "spam blocked", "spam refused", "spam rejection", "spam not accepted",
       "spam email", "spam probability", "probability of spam", "probable spam",
       "likely spam", "spamassassin", "spambouncer", "likely unsolicited",
       "appears to be unsolicited", "unsolicited bulk", "unsolicited mail",
       "unsolicited email", "unsolicited commercial", "bulk mail", "bulk email",
       "bulk.advertising", "content filter rejection", "rejected by content filter",
       "by content filtering", "message content rejected", "content rejected",
       "mail content denied", "rejecting banned content", "rejecting mail content",
       "unacceptable content", "suspected spam", "possible spam", "contains spam",
       "spam or virus", "spam/virus", "uribl", "surbl", "blacklisted url",
       "our system has detected that this message is", "our filters rate at and above",
       "recurrent pattern detection", "due to the nature of the content",
       "content or the links", "failed several antispam checks", "antispam checks",
       "anti-spam checks", "anti-spam policy", "spam block", "rejected due to spam",
       "suspicion of spam", "dt:spm$",
       "temporarily blocked by our filter", "judged to be spam", "als spam",
       "spamverdacht", "comme spam", "too many spam complaints", "too much spam",
       "we dont accept spam", "we don't accept spam", "spamming not allowed",
       "listed in work.drbl", "sender domain listed at", "mail score", "mail rejete",
       "message filtered. please see the faqs section on spam",
       "message filtered. refer to the troubleshooting", "block for spam",
       "unsolicitedmessageerror$",
       "blocked for abuse", "no spam please", ("rejected due to spam", "classification"),
       ("rejected due to spam", "content"), ("this message scored", "spam points"),
       ("spam", "exceeded")),
    _g("virusdetected", R.VIRUSDETECTED,
       "virus detected", "virus found", "contains a virus", "infected with a virus",
       "virus infected", "infected message", "malware", "potentially executable attachment",
       "has been used by recent viruses", "prohibited virus", "virus phishing",
       "malicious url", "malicious content", "message contains a virus", "virus gefunden",
       "viren gefunden"),
    _g("rejected_sender", R.REJECTED,
       "sender address rejected", "sender rejected", "sender was rejected", "sender denied",
       "sender verify failed", "sender verification failed", "invalid sender",
       "emetteur invalide", "sender domain is empty", "sender address has been blacklisted",
       "your email address has been blacklisted", "sender is in my black list",
       "sender is spammer", "sender not pre-approved", "domain of sender address",
       "sender domain must exist", "sender domain does not exist", "sender domain not found",
       "unknown sender", "bogus mail from", "empty envelope senders not allowed",
       "null sender is not allowed", "returned mail not accepted here", "batv",
       "backscatter protection", "unroutable sender address", "unrouteable sender address",
       "mail from not owned by user", "from: domain is invalid",
       "fully qualified email address required", "this server does not accept mail from",
       "you are not allowed to post to this mailing list", "not allowed to post",
       "sender isn't on the recipient's list of senders", "bad outbound sender",
       "access denied, spam abuse detected", "envelope blocked", "envelope rejected",
       "block policy for envelope from", "blocked senders", "mail sending denied",
       "sender address blocked", "no third-party dsns", "unsigned dsn",
       "can't determine purported responsible address", "without a valid sender domain",
       "sender not in allowed-senders list", "sender was not authenticated",
       "sender not authenticated for group", "unresolvable rfc.5321", "bouncedeny",
       "valid-address-filter", "syntax error: empty email address",
       "is not a registered gateway user", "not owned by user", "sender blacklisted",
       "absender abgelehnt", "absender unbekannt", "afzender geweigerd",
       "sender address has null mx", "sender domain has null mx",
       "badmailfrom",
       "does not accept mail from", "does not accept email from",
       "does not accept messages from", "sender address invalid",
       "expediteur refuse", "expediteur invalide",
       sender_side=True),
    _g("notaccept", R.NOTACCEPT,
       "does not accept mail", "does not accept email", "nullmx", "null mx",
       "mail receiving disabled", "no mx record found", "smtp protocol returned a permanent",
       "system not accepting network messages", "has no mail-enabled subscriptions",
       "account inbounds disabled", "name server: .: host not found",
       "accepts no mail", "domain does not receive mail"),
    _g("dns_temporary", R.NETWORKERROR,
       "host not found, try again", "temporary failure in name resolution",
       "malformed or unexpected name server reply", "malformed name server reply",
       "dns query failed", "unable to resolve route", "unrouteable mail domain",
       "temporary dns", "dns server failure", "servfail", "dns timeout"),
    _g("hostunknown", R.HOSTUNKNOWN,
       "host unknown", "unknown host", "host not found", "domain does not exist",
       "domain is not reachable", "domain must exist", "recipient domain must exist",
       "host or domain name not found", "domain name not found", "nxdomain",
       "mail domain mentioned in email address is unknown", "name or service not known",
       "no such domain", "unknown domain", "recipient address rejected: domain not found",
       "unrouteable address", "unroutable address", "the account or domain may not exist",
       "able to find the recipient domain", "nonexistentdomain", "nonexistent domain",
       "badrcptdomain$",
       "non-existent domain", "non existent domain", ("dns domain", "does not exist"),
       "domain not found", "point to non-existent hosts", "point to non existent hosts",
       "domain name in the email address is incorrect", "domain unknown",
       "couldn't find any host named", "could not find any host named", "no route found to domain",
       "domein bestaat niet", "domein onbekend",
       "domain existiert nicht", "domaine inexistant", "domaine introuvable",
       "domaine inconnu", "invalid x.400 address"),
    _g("userunknown", R.USERUNKNOWN,
       "user unknown", "unknown user", "unknown recipient", "recipient unknown",
       "unknown mailbox", "mailbox unknown", "address unknown", "unknown address",
       "unknown e-mail address", "unknown email address", "unknown local part",
       "unknown local-part", "no such user", "no such mailbox", "no such recipient",
       "no such address", "no such person", "no such account", "no such local user",
       "no mailbox here by that name", "no mailbox by that name", "no mailbox found",
       "no account by that name", "no mail box available for this user", "user not found",
       "user does not exist", "user doesn't exist", "user not exist", "user not known",
       "user not active", "user missing home directory", "recipient not found",
       "recipient does not exist", "recipient not exist", "recipient is not local",
       "recipient not ok", "recipient address rejected: user unknown",
       "recipient address rejected: unknown user", "recipient address rejected: invalid user",
       "recipient address rejected: userunknown",
       "recipient address rejected: invalid-recipient",
       "recipient address rejected: access denied",
       "recipient addresses rejected : access denied", "mailbox not found",
       "mailbox does not exist", "mailbox not present", "mailbox invalid",
       "mailbox is inactive", "mailbox is unavailable", "mailbox unavaiable",
       "invalid mailbox", "email address does not exist", "email address could not be found",
       "address does not exist", "address not present in directory",
       "destination addresses were unknown", "destination server rejected recipients",
       "is not a known user", "is not a valid mailbox", "is not an active address at this host",
       "not a valid recipient", "not a valid user", "not a local address",
       "no valid recipients, bye", "nessun utente simile", "no existe dicha persona",
       "no existe ese usuario", "the email account that you tried to reach does not exist",
       "the user's email name is not found", "there is no one at this address",
       "this email address is wrong or no longer valid", "badrecipientto", "badrcptto",
       "validrcptto", "this spectator does not exist", "this user doesn't have a",
       "doesn't have a yahoo", "utilisateur inconnu", "destinataire inconnu",
       "adresse inconnue", "destinataire invalide", "destinataire introuvable",
       "utilisateur introuvable", "adresse d au moins un destinataire invalide",
       "boite aux lettres inexistante", "compte inexistant", "utilisateur inexistant",
       "adresse inexistante", "invalid or unknown virtual user",
       "weil die adresse nicht gefunden wurde", "your envelope recipient has been denied",
       "recipnotfound", "recipientnotfound", "recipient notfound", "recipient not found",
       "bad destination mailbox address", "unknown recipient or mailbox unavailable",
       "inactive email address", "unknown or illegal alias", "not listed in domino directory",
       "not listed in public name & address book", "can't accept user", "sorry, no mailbox",
       "recipient refuses to accept your mail", "account does not exist",
       "this address does not exist", "address invalid", "address not found",
       "address couldn't be found", "address could not be found",
       "the email address you entered couldn't be found", "e-mail-adresse wurde nicht gefunden",
       "adresse wurde nicht gefunden", "e-mailadres dat u hebt ingevoerd",
       "adres dat u hebt ingevoerd", "que vous avez entree est introuvable",
       "requested action not taken: "
       "mailbox unavailable", "not our customer", "unknown account",
       "onbekende gebruiker", "gebruiker onbekend", "gebruiker bestaat niet",
       "onbekende ontvanger", "ontvanger onbekend", "ontvanger bestaat niet",
       "adres bestaat niet", "e-mailadres bestaat niet", "emailadres bestaat niet",
       "mailbox bestaat niet", "postvak bestaat niet", "onbekend e-mailadres",
       "onbekend emailadres", "onbekend adres", "benutzer unbekannt", "unbekannter benutzer",
       "unbekannter empfanger", "empfanger unbekannt", "adresse unbekannt",
       "unbekannte adresse", "benutzer nicht bekannt", "benutzer existiert nicht",
       "empfanger existiert nicht", "adresse existiert nicht", "postfach existiert nicht",
       "mailbox existiert nicht", "kein solcher benutzer", "unbekannte e-mail-adresse",
       "ungultiger empfanger", "ungultige empfangeradresse", "empfangeradresse unbekannt",
       "utente sconosciuto", "utente inesistente", "usuario desconocido",
       "usuario no existe", "no existe el usuario", "destinatario sconosciuto",
       "nonexistent user", "non-existent user", "non existent user", "nonexisting user",
       "nosuchuser$",
       ("account", "does not exist at the organization"), ("mailbox", "does not exist"),
       ("no", "in name directory"), ("rcpt", "does not exist"),
       ("recipient", "was not found in"), ("this user doesn't have a", "account"),
       ("user", "was not found"), ("user", "does not exist")),
    _g("failedstarttls", R.FAILEDSTARTTLS,
       "starttls is required", "must issue a starttls command first",
       "starttls may not be repeated", "tls required", "requires encryption (tls)",
       "requires tls", "route requires tls", "this route requires", "tls version 1.2",
       "high-strength ciphers", "failed mta-sts validation", "mta-sts", "starttls-not-supported",
       "certificate-expired", "tlsa-invalid", "dnssec-invalid", "certificate-host-mismatch",
       "use tls/ssl", "over a tls connection", "tls handshake", "starttls failed",
       "must use tls", "encryption required", "encryption needed",
       "configuration is invalid for this certificate"),
    _g("filtered", R.FILTERED,
       "account is protected by", "bounced address", "has restricted sms e-mail",
       "is not accepting any mail", "message filtered", "message rejected due to user rules",
       "not found recipient account", "recipient id refuse to receive mail",
       "only accepting mail from specific email addresses",
       "refused due to recipient preferences", "user refuses to receive this mail",
       "user reject", "you have been blocked by the recipient", "recipient has blocked",
       "sender is blocked by the recipient"),
    _g("notcompliantrfc", R.NOTCOMPLIANTRFC,
       "not rfc 5322 compliant", "rfc 5322 compliant", "rfc5322", "rfcmessagenoncompliant",
       "missing a valid address in the from: header", "multiple addresses in from: header",
       "missing a valid message-id", "duplicate header", "headers are not rfc compliant",
       "missing a valid messageid",
       "encoded-word syntax is not permitted", "unicode character in a disallowed header",
       "mail message is malformed", "must be rfc 5322 section", "blank from: addresses",
       "ip addresses are not allowed as a from", "not a valid rfc 5321 address",
       "not rfc compliant", "rfc 2822", "rfc2822", ("multiple", "header")),
    _g("contenterror", R.CONTENTERROR,
       "header size exceeds maximum permitted", "improper use of 8-bit data",
       "8-bit data in message header", "message header size, or recipient list, exceeds",
       "mime complexity exceeds", "routing loop detected -- too many received",
       "contain invalid mime headers", "improperly-formatted binary content",
       "unnecessary base64 encoding", "invalid characters", "bare lf", "bare linefeed",
       "bare line feed", "invalid mime", "malformed mime", "too many related errors",
       "invalid message content", "agent generated message depth exceeded",
       "x-dg-ref header is too long", "message contains invalid", "malformed message"),
    _g("policyviolation", R.POLICYVIOLATION,
       "policy violation", "policy reasons", "denied by policy", "local policy",
       "rejected for policy", "security policies", "organization policy",
       "organizational settings", "message given low priority", "header are not accepted",
       "header error", "messages with multiple addresses", "members-only list",
       "closed mailing list", "not subscribed to this group", "an illegal attachment",
       "content presents a potential security issue", "has a policy that prohibited",
       "containing images or other attachments", "using a mass mailer",
       "recipient is not accepting mail with", "content examination policy",
       "anti-spoofing policy", "attachment extension is forbidden", "host network not allowed",
       "does not allow external forwarding",
       "host network, not allowed", "esmtp no data before greeting", "captcha",
       "mail flow rule", "transport rule", "policy restrictions", "policy rejection",
       "policy-based rejection", "violates our policy", "against our policy"),
    _g("rejected_other", R.REJECTED,
       "delivery not authorized", "administrative prohibition",
       "rule imposed mailbox access for", "message refused", "not authorized to send to",
       "restriction check failed", "delivery restriction", "sendernotauthenticatedforgroup",
       "sendernotauthenticatedformailbox", "rst.authrequired", "not allowed to send to",
       sender_side=False),
    _g("toomanyconn", R.TOOMANYCONN,
       "too many connections", "too many concurrent", "too many sessions",
       "connection rate limit",
       "too many smtp sessions", "too many simultaneous", "too many open connections",
       "too many recipients", "too many rcpt", "connection limit", "connections limit",
       "concurrent connection", "maximum number of connections", "maximum connection",
       "max connections", "max message per connection", "trop de connexions",
       "too many errors from your ip", "exceeding outbound thread limit",
       "exceeds per-domain connection limit", "all available ips are at maximum connection",
       "zu viele verbindungen", "te veel verbindingen", ("too many", "session")),
    _g("speeding", R.SPEEDING,
       "rate limit", "rate limited", "rate-limit", "ratelimit", "rate limiting",
       "sending rate", "message rate", "too fast", "too quickly", "slow down",
       "try again slower", "excessive volume", "unexpected volume", "too many messages",
       "too much mail$", "throttled", "throttling", "throttle$", "exceeded the rate",
       "rate exceeded", "messages per hour", "messages per minute", "emails per hour",
       "sending limit", "hourly limit", "daily limit", "volume limit", "too many emails",
       "trop de messages", "zu viele nachrichten", "te veel berichten"),
    _g("blocked", R.BLOCKED,
       "was blocked by", "is blocked by", "blocked by", "go away",
       "you are not allowed to connect", "not allowed to connect",
       "not accepting connections", "refused - see http", "blocked - see", "blocked - http",
       "confirm this mail server", "your server requires confirmation",
       "has been rejected to submit", "your access to submit messages", "no access from mail",
       "is not allowed to send mail from", "not allowed to send mail from",
       "rejected based on", "ip blocked", "ip address blocked", "ip has been blocked",
       "ip address has been blocked", "this ip has been", "service refused, please try later",
       "mail from your ip", "your ip", "sending ip", "sender ip", "network is on our",
       "rejected because the sending mta", "geblokkeerd", "gesperrt", "bloquee",
       "bloque$"),
    _g("securityerror", R.SECURITYERROR,
       "authentication required", "authentication failure", "authentication failed",
       "authentication credentials invalid", "authentication turned on in your email client",
       "unauthenticated senders not allowed", "authentication is required",
       "you don't authenticate", "account not subscribed to ses",
       "is not authorized to perform ses", "executable files are not allowed",
       "client was not authenticated", "incorrect authentication data",
       "submitter failed to authenticate", "authentification requise",
       "authentification invalide", "application-specific password required",
       "username and password not accepted", "please log in with your web browser",
       "please log in through your web browser", "too many login attempts",
       "no identity changes permitted", "cannot achieve exchange server authentication",
       "verification failure", "is a dead domain", "authentication mechanism is too weak",
       "must authenticate", "auth required", "not authorized$", "security policy"),
    _g("systemfull", R.SYSTEMFULL,
       "mail system full", "insufficient system storage", "insufficient system resources",
       "system storage", "disk full", "queue full", "server is full", "system is full"),
    _g("mailererror", R.MAILERERROR,
       "procmail:", "bin/procmail", "bin/maildrop", "maildrop:", "command failed:",
       "command died with status", "command output:", "mailer error", "pipe to |",
       "x-unix", "exit code", "exited with"),
    # --- weak: generic wording, a specific status code wins over these ------------------
    _g("spam_weak", R.SPAMDETECTED, "spam$", "spammy", "junk mail", strong=False),
    _g("virus_weak", R.VIRUSDETECTED, "virus$", "viruses", strong=False),
    _g("userunknown_weak", R.USERUNKNOWN,
       "does not exist", "doesn't exist", "invalid address", "invalid recipient",
       "invalid user", "invalid mailbox path", "mailbox unavailable", "not a valid",
       "bad address", "bad recipient", "bad_recipient", "bad-recipient", "bad rcpt",
       "recipient rejected", "no valid recipients",
       "n'existe pas", "existiert nicht", "bestaat niet", "niet gevonden",
       "nicht gefunden", "introuvable", "inexistant", "sconosciuto", "desconocido",
       strong=False),
    _g("blocked_weak", R.BLOCKED, "blocked$", "blocking", "banned", "denied access",
       strong=False),
    _g("networkerror", R.NETWORKERROR,
       "connection refused", "connection reset", "connection dropped",
       "connection was dropped", "no route to host", "host is unreachable",
       "host unreachable", "network is unreachable", "hop count exceeded", "mail loop",
       "mail forwarding loop", "forwarding loop", "routing loop", "message looping",
       "in a routing loop", "too many hops", "loop count exceeded",
       "could not connect and send the mail to",
       "dns records for the destination computer could not be found", "lost connection",
       "connection closed", "connection lost", "broken pipe", "network error",
       "could not connect", "unable to connect", "failed to connect", "can't connect",
       "cannot connect", strong=False),
    _g("systemerror", R.SYSTEMERROR,
       "aliasing/forwarding loop broken", "can't create user output file",
       "could not load drd for domain", "internal error", "internal server error",
       "operation now in progress", "interrupted system call",
       "encountered an error while being processed", "it would create a mail loop",
       "local configuration error", "local error in processing", "loops back to myself",
       "loop was found in the mail exchanger", "mail system configuration error",
       "queue file write error", "there is no mdb", "remote server is misconfigured",
       "server configuration error", "service currently unavailable", "system config error",
       "temporary local problem", "timeout waiting for input", "transaction failed",
       "server error", "system error", "temporary server error", "temporary system problem",
       "temporary failure", "resources temporarily unavailable", "server busy",
       "service temporarily unavailable", "temporarily unavailable",
       "message failed to be replicated", "pfa agent busy", "suspiciousremoteservererror",
       "system incorrectly configured", "misconfigured", "configuration error",
       "mailing list expansion problem", "destination mailbox address ambiguous",
       "unable to process", "message is looping", "qq trouble", "temporarily rejected",
       "try again later", "temporary problem", "temporary error", "local error",
       ("unable to connect", "daemon"), strong=False),
    _g("expired", R.EXPIRED,
       "connection timed out", "could not find a gateway for",
       "delivery attempts will continue to be", "delivery expired", "delivery time expired",
       "failed to deliver to domain", "giving up on", "giving up", "have been failing for a",
       "has been delayed", "it has not been collected after", "message expired",
       "queue expired", "message timed out", "retry time not reached",
       "retry timeout exceeded", "server did not respond", "has been in the queue too long",
       "in the queue too long", "unable to deliver message after multiple retries",
       "was not reachable within the allowed queue period",
       "could not be delivered for more than", "delivery timeout", "timeout$", "timed out",
       "wasn't able to establish an smtp connection", "unable to establish an smtp connection",
       "message delayed", "not yet been delivered", "expired after", "no answer from host",
       "too long in queue", "expired$", ("could not be delivered for", "days"),
       strong=False),
    _g("syntaxerror", R.SYNTAXERROR,
       "syntax error", "bad sequence of commands", "unrecognized command",
       "command unrecognized", "command not recognized", "unimplemented command",
       "command not implemented", "smtp protocol violation", "protocol violation",
       "line too long", "invalid command", "send hello first", "ehlo/helo first",
       "helo/ehlo first", "mail first", "rcpt first", "no data after bdat",
       "optional argument not permitted", "helo/ehlo argument is invalid",
       "empty helo/ehlo argument", "helo / ehlo requires domain address", strong=False),
    _g("vacation", R.VACATION,
       "i am away on vacation", "i am away until", "i am out of the office",
       "i will be traveling for work", "out of office", "out of the office",
       "on vacation", "on holiday", "on annual leave", "automatic reply", "auto-reply",
       "autoreply", "ben afwezig", "afwezig tot", "niet aanwezig", "automatisch antwoord",
       "abwesend", "nicht im buro", "automatische antwort", "absent du bureau",
       "je suis absent", "reponse automatique", "en conge", strong=False,
       only_without_codes=True),
    _g("feedback", R.FEEDBACK, "feedback-type:", "abuse report", strong=False,
       only_without_codes=True),
)

# Words that are flags, not reasons: whom a rejection names, and when it came.
_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("names_us", (
        "spamhaus", "barracuda", "barracudacentral", "spamcop", "sorbs", "dnsbl", "rbl$",
        "rbls$", "blacklist", "blocklist", "block list", "black list", "s3150$",
        "banned sending ip", "sending ip", "sender ip", "your ip", "ip address",
        "client host", "dmarc", "spf", "dkim", "reputation", "sender domain",
        "sending domain", "your domain", "helo$", "ehlo$")),
    ("before_rcpt", (
        "in reply to mail from", "after mail from", "refused to talk to me",
        "after initial connection", "in reply to ehlo", "in reply to helo",
        "in reply to initial greeting", "after ehlo", "after helo")),
    ("senderish", (
        "sender", "envelope from", "mail from", "from address", "from header",
        "from domain", "return path", "batv$")),
)
_NGROUPS = len(_GROUPS)
_NAMES_US, _BEFORE_RCPT, _SENDERISH = range(_NGROUPS, _NGROUPS + len(_MARKERS))

# --- the text as words ------------------------------------------------------------------

_FOLD = str.maketrans({
    **dict.fromkeys("àáâãäåā", "a"), **dict.fromkeys("çč", "c"),
    **dict.fromkeys("èéêëē", "e"), **dict.fromkeys("ìíîïī", "i"), "ñ": "n",
    **dict.fromkeys("òóôõöøō", "o"), **dict.fromkeys("ùúûüū", "u"),
    **dict.fromkeys("ýÿ", "y"), "ß": "ss", "œ": "oe", "æ": "ae",
    # typographic punctuation and spaces separate words as their ASCII forms do
    **dict.fromkeys("’‘`´“”«»‐‑‒–—…\u00a0\u2007\u202f\u3000", " "), "\u200b": None,
})
# Letters and digits stay (and the bytes of other scripts); everything else separates.
_WORDS = bytes(c if (48 <= c <= 57 or 97 <= c <= 122 or c >= 128)
               else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
_MAX_TEXT = 4096


def _words(text: str) -> list[bytes]:
    """The text lower-cased, accent-folded and cut into words of letters and digits:
    whitespace, folding and punctuation no longer matter."""
    text = text[:_MAX_TEXT].lower()
    if not text.isascii():
        text = text.translate(_FOLD)
    return text.encode("utf-8", "ignore").translate(_WORDS).split()


# --- compiling: one trie of words over every phrase -------------------------------------
# Node: {word: node, b"": entries}. An entry is (group index, the phrases that must follow,
# as word tuples). A phrase's last word also matches with a common ending (limit ->
# limited, limiting, limits), unless the phrase ends in "$".

_Piece = tuple[tuple[bytes, ...], frozenset[bytes]]   # leading words, last word's forms
_Entry = tuple[int, tuple[_Piece, ...]]
_Node = dict[bytes, "_Node"]
_ENDINGS = (b"", b"s", b"es", b"d", b"ed", b"ing", b"er", b"ers")
_GAP_WORDS = 14


def _phrase_words(phrase: str) -> tuple[tuple[bytes, ...], bool]:
    exact = phrase.endswith("$")
    words = tuple(_words(phrase.rstrip("$")))
    if not words:
        raise ValueError(f"empty phrase: {phrase!r}")
    return words, exact


def _endings(word: bytes, exact: bool) -> tuple[bytes, ...]:
    return (b"",) if exact or not word.isalpha() else _ENDINGS


def _piece(phrase: str) -> _Piece:
    words, exact = _phrase_words(phrase)
    return words[:-1], frozenset(words[-1] + e for e in _endings(words[-1], exact))


def _compile(groups: tuple[tuple[int, tuple[Phrase, ...]], ...]) -> dict:
    root: dict = {}
    for index, phrases in groups:
        for phrase in phrases:
            pieces = (phrase,) if isinstance(phrase, str) else phrase
            head, exact = _phrase_words(pieces[0])
            rest = tuple(_piece(piece) for piece in pieces[1:])
            endings = _endings(head[-1], exact)
            for ending in endings:
                node = root
                for word in head[:-1] + (head[-1] + ending,):
                    node = node.setdefault(word, {})
                entries = node.setdefault(b"", [])
                if (index, rest) not in entries:
                    entries.append((index, rest))
    _freeze(root)
    return root


def _freeze(node: dict) -> None:
    for key, value in node.items():
        if key:
            _freeze(value)
        else:
            node[key] = tuple(value)


_ROOT = _compile(tuple((i, g.phrases) for i, g in enumerate(_GROUPS))
                 + tuple((_NGROUPS + i, m[1]) for i, m in enumerate(_MARKERS)))


def _follows(words: list[bytes], at: int, pieces: tuple[_Piece, ...]) -> bool:
    """Each piece occurs in order, each starting within _GAP_WORDS words of the last."""
    for lead, last in pieces:
        size = len(lead) + 1
        if last.isdisjoint(words[at:at + _GAP_WORDS + size]):   # the usual case, in C
            return False
        for start in range(at, min(at + _GAP_WORDS, len(words) - size + 1)):
            if words[start + size - 1] in last and tuple(words[start:start + size - 1]) == lead:
                at = start + size
                break
        else:
            return False
    return True


def _text_groups(words: list[bytes]) -> set[int]:
    """The indexes of every group (and marker) with a phrase in the words."""
    found: set[int] = set()
    get = _ROOT.get
    count = len(words)
    after = 0                      # the index after the word being looked at
    for word in words:
        after += 1
        node = get(word)
        if node is None:
            continue
        j = after
        while True:
            entries = node.get(b"")
            if entries is not None:
                for index, rest in entries:
                    if not rest or (index not in found and _follows(words, j, rest)):
                        found.add(index)
            if j >= count:
                break
            word = words[j]
            j += 1
            child = node.get(word)
            if child is None:
                # "550-5.1.1" continuation lines and stray codes inside a phrase
                if word.isdigit() and len(word) <= 3:
                    continue
                break
            node = child
    return found


# --- codes ------------------------------------------------------------------------------

# An enhanced status code: not inside an IP address, a version ("v5.1.1") or a longer
# dotted number; the subject is 0-7 (RFC 3463).
_STATUS_IN_TEXT = re.compile(
    r"(?<![\w.])(?<!version )(?<!release )([245])\.([0-7])\.(\d{1,3})(?!\d|\.\d)")
# A reply code: three digits alone (not part of an IP, a port, a date, an id or "554.30"),
# not a quantity ("450 seconds").
_REPLY_IN_TEXT = re.compile(
    r"(?<![\w.:/@#-])#?([245][0-5]\d)(?![\w.]\d|\w|\.\d|,\d|:\d"
    r"|\s*(?:sec|min|hour|day|byte|kb|mb|ms\b|%|times|messages|recipients))")
_STATUS_FIELD = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
_REPLY_CODES = frozenset({
    211, 214, 220, 221, 235, 250, 251, 252, 253,
    421, 422, 430, 432, 450, 451, 452, 453, 454, 455, 458, 459,
    500, 501, 502, 503, 504, 521, 523, 524, 525, 530, 533, 534, 535, 538,
    550, 551, 552, 553, 554, 555, 556,
})


def _vague(status: str) -> bool:
    """A status code that says little: x.0.0, x.y.0 and the ones sisimai distrusts."""
    _, subject, detail = status.split(".")
    return (detail == "0" or status in ("4.4.7", "4.7.0") or status.startswith("5.3.")
            or subject == "5")


def _status_in_text(text: str) -> str | None:
    first: str | None = None
    fallback: str | None = None
    for match in _STATUS_IN_TEXT.finditer(text):
        code = ".".join(match.groups())
        if code[0] == "2":
            fallback = fallback or code
            continue
        if not (code.endswith(".0.0") or code == "4.4.7"):
            return code
        first = first or code
    return first or fallback


def _reply_in_text(text: str, status: str | None) -> int | None:
    first: int | None = None
    success: int | None = None
    for match in _REPLY_IN_TEXT.finditer(text):
        code = int(match.group(1))
        if code not in _REPLY_CODES:
            continue
        if status is not None and str(code)[0] == status[0]:
            return code
        if code < 300:
            success = success or code
        elif first is None:
            first = code
            if status is None:
                return code
    return first or success


def extract_codes(text: str) -> tuple[int | None, str | None]:
    """The SMTP reply code and enhanced status code found in free text (e.g. 'smtp; 550
    5.1.1 <a@b>: Recipient address rejected' -> (550, '5.1.1'); '#550 5.1.1
    RESOLVER.ADR.RecipNotFound' -> (550, '5.1.1')); (None, None) when absent. Not taken
    for codes: IP addresses, dates, times, port numbers, version numbers, ids."""
    if not isinstance(text, str) or not text:
        return None, None
    text = text[: _MAX_TEXT * 2]
    status = _status_in_text(text)
    return _reply_in_text(text, status), status


def _status_field(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    match = _STATUS_FIELD.match(value[:64])
    if match is None:
        return None
    klass, subject, detail = match.groups()
    return f"{klass}.{int(subject)}.{int(detail)}"


def _prefer(field: str | None, found: str | None, reply: int | None) -> str | None:
    """Between the Status field and the code in the text (after sisimai's status.Prefer)."""
    if field is None or field == found:
        return found or field
    if found is None:
        return field
    if reply is not None and field[0] != found[0]:
        return field if str(reply)[0] == field[0] else found if str(reply)[0] == found[0] \
            else field
    if field[0] != found[0]:
        return field
    if _vague(field) and not _vague(found):
        return found
    if field == "5.1.1" and not (found.endswith(".0") or found.startswith("5.5.")):
        return found
    return field


# --- the status table -------------------------------------------------------------------

_STATUS_REASON: dict[str, Reason] = {
    "5.1.0": R.USERUNKNOWN, "5.1.1": R.USERUNKNOWN, "5.1.2": R.HOSTUNKNOWN,
    "5.1.3": R.USERUNKNOWN, "5.1.4": R.FILTERED, "5.1.6": R.HASMOVED, "4.1.6": R.HASMOVED,
    "5.1.7": R.REJECTED, "5.1.8": R.REJECTED, "4.1.7": R.REJECTED, "4.1.8": R.REJECTED,
    "5.1.9": R.SYSTEMERROR, "4.1.9": R.SYSTEMERROR, "5.1.10": R.NOTACCEPT,
    "5.2.0": R.FILTERED, "5.2.1": R.SUSPEND, "4.2.1": R.SUSPEND, "5.2.2": R.MAILBOXFULL,
    "4.2.2": R.MAILBOXFULL, "5.2.3": R.EXCEEDLIMIT, "4.2.3": R.EXCEEDLIMIT,
    "5.2.4": R.FILTERED, "4.2.4": R.FILTERED,
    "5.3.1": R.SYSTEMFULL, "4.3.1": R.SYSTEMFULL, "5.3.2": R.NOTACCEPT, "4.3.2": R.NOTACCEPT,
    "5.3.3": R.SYSTEMERROR, "4.3.3": R.SYSTEMERROR, "5.3.4": R.MESGTOOBIG,
    "4.3.4": R.MESGTOOBIG, "5.3.5": R.SYSTEMERROR, "4.3.5": R.SYSTEMERROR,
    "4.4.1": R.EXPIRED, "5.4.1": R.UNDEFINED, "4.4.2": R.NETWORKERROR,  # 5.4.1: by text
    "5.4.2": R.NETWORKERROR, "4.4.3": R.SYSTEMERROR, "5.4.3": R.SYSTEMERROR,
    "5.4.4": R.HOSTUNKNOWN, "4.4.4": R.NETWORKERROR, "4.4.5": R.SYSTEMFULL,
    "5.4.6": R.NETWORKERROR, "4.4.6": R.NETWORKERROR, "5.4.7": R.EXPIRED,
    "4.4.7": R.EXPIRED, "4.4.8": R.NETWORKERROR, "5.4.8": R.NETWORKERROR,
    "5.5.3": R.TOOMANYCONN, "4.5.3": R.TOOMANYCONN,
    "5.6.0": R.CONTENTERROR, "5.6.1": R.CONTENTERROR, "5.6.2": R.CONTENTERROR,
    "5.6.3": R.CONTENTERROR, "5.6.5": R.CONTENTERROR, "5.6.6": R.CONTENTERROR,
    "5.6.7": R.CONTENTERROR, "5.6.8": R.CONTENTERROR, "5.6.9": R.CONTENTERROR,
    "4.6.0": R.CONTENTERROR, "4.6.2": R.CONTENTERROR, "4.6.5": R.CONTENTERROR,
    "5.6.11": R.CONTENTERROR,
    "4.7.1": R.BLOCKED, "4.7.2": R.BLOCKED, "5.7.2": R.SECURITYERROR,
    "5.7.3": R.SECURITYERROR, "5.7.4": R.SECURITYERROR, "5.7.5": R.SECURITYERROR,
    "5.7.6": R.SECURITYERROR, "5.7.7": R.SECURITYERROR, "5.7.8": R.SECURITYERROR,
    "5.7.9": R.SECURITYERROR, "5.7.10": R.FAILEDSTARTTLS, "4.7.10": R.FAILEDSTARTTLS,
    "5.7.11": R.SECURITYERROR, "4.7.5": R.SECURITYERROR, "4.7.6": R.SECURITYERROR,
    "4.7.7": R.SECURITYERROR, "4.7.12": R.SECURITYERROR, "4.7.15": R.SECURITYERROR,
    "5.7.12": R.SECURITYERROR, "5.7.13": R.SUSPEND, "5.7.14": R.SECURITYERROR,
    "5.7.15": R.SECURITYERROR, "5.7.16": R.MESGTOOBIG, "4.7.16": R.MESGTOOBIG,
    "5.7.17": R.HASMOVED, "5.7.18": R.HASMOVED, "5.7.19": R.SECURITYERROR,
    "5.7.20": R.AUTHFAILURE, "5.7.21": R.AUTHFAILURE, "5.7.22": R.AUTHFAILURE,
    "5.7.23": R.AUTHFAILURE, "5.7.24": R.AUTHFAILURE, "4.7.24": R.AUTHFAILURE,
    "5.7.25": R.REQUIREPTR, "4.7.25": R.REQUIREPTR, "4.7.23": R.REQUIREPTR,
    "5.7.26": R.AUTHFAILURE, "4.7.26": R.AUTHFAILURE,
    # 5.7.27 is "sender address has null MX" (RFC 7505), and Gmail's "authenticate with
    # SPF": about our domain either way, never a reason to drop the recipient.
    "5.7.27": R.AUTHFAILURE, "4.7.27": R.AUTHFAILURE, "5.7.28": R.SPAMDETECTED,
    "4.7.28": R.SPEEDING, "5.7.29": R.AUTHFAILURE, "4.7.29": R.FAILEDSTARTTLS,
    "5.7.30": R.FAILEDSTARTTLS, "4.7.30": R.AUTHFAILURE, "4.7.32": R.AUTHFAILURE,
    "5.7.32": R.AUTHFAILURE, "4.7.40": R.AUTHFAILURE,
    # Exchange Online's own
    "5.7.509": R.AUTHFAILURE, "5.7.515": R.AUTHFAILURE, "5.7.510": R.BLOCKED,
    "5.7.511": R.BLOCKED, "5.7.513": R.BLOCKED, "4.7.650": R.BADREPUTATION,
    "4.7.652": R.TOOMANYCONN, "5.7.512": R.NOTCOMPLIANTRFC, "5.7.504": R.SUSPEND,
    "5.7.505": R.SUSPEND, "5.1.90": R.SPEEDING, "5.2.121": R.SPEEDING,
    "5.2.122": R.SPEEDING, "5.4.14": R.NETWORKERROR, "5.4.300": R.EXPIRED,
    "5.4.316": R.EXPIRED, "4.4.316": R.NETWORKERROR, "5.4.312": R.NETWORKERROR,
    "4.4.312": R.NETWORKERROR, "5.1.351": R.USERUNKNOWN,
}
_SUBJECT_FALLBACK = {"7": R.SECURITYERROR, "6": R.CONTENTERROR, "5": R.SYNTAXERROR,
                     "4": R.NETWORKERROR}
_REPLY_REASON: dict[int, Reason] = {
    451: R.SYSTEMERROR, 452: R.SYSTEMFULL, 500: R.SYNTAXERROR, 501: R.SYNTAXERROR,
    502: R.SYNTAXERROR, 503: R.SYNTAXERROR, 504: R.SYNTAXERROR, 521: R.NOTACCEPT,
    556: R.NOTACCEPT, 523: R.FAILEDSTARTTLS, 538: R.FAILEDSTARTTLS,
    524: R.SECURITYERROR, 525: R.SUSPEND, 530: R.SECURITYERROR, 534: R.SECURITYERROR,
    535: R.SECURITYERROR, 552: R.MAILBOXFULL, 422: R.SECURITYERROR, 432: R.SECURITYERROR,
    454: R.SECURITYERROR,
}

_NO_CODES_GROUPS = frozenset(i for i, g in enumerate(_GROUPS) if g.only_without_codes)
_DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_REJECTED_SENDER = frozenset({"5.1.7", "5.1.8", "4.1.7", "4.1.8"})
_NOT_ABOUT_US = frozenset({R.MAILBOXFULL, R.SUSPEND, R.FILTERED, R.HASMOVED})
_VAGUE_ABOUT_US = frozenset({R.UNDEFINED, R.ONHOLD, R.SECURITYERROR, R.SYSTEMERROR})


def classify(*, status: str | None = None, reply_code: int | None = None,
             diagnostic: str = "", action: str | None = None) -> Verdict:
    """status: RFC 3463 enhanced code as found ("5.1.1", may be None or malformed);
    reply_code: the SMTP reply code (550) if known; diagnostic: the Diagnostic-Code text or
    the free text around the recipient in a non-standard report (may be long, mixed case,
    folded over lines, may contain the code itself e.g. "550-5.1.1 The email account ...");
    action: RFC 3464 Action (failed, delayed, delivered, relayed, expanded) if known."""
    raw = diagnostic[:_MAX_TEXT] if isinstance(diagnostic, str) else ""
    act = action.strip().lower() if isinstance(action, str) else None

    field = _status_field(status)
    reply = reply_code if (isinstance(reply_code, int) and not isinstance(reply_code, bool)
                           and 200 <= reply_code <= 599) else None
    code = _prefer(field, _status_in_text(raw) if raw else None, reply)
    if reply is None and raw:
        reply = _reply_in_text(raw, code)

    if act in _DELIVERED_ACTIONS or (act is None and code is not None and code[0] == "2"
                                     and (reply is None or reply < 300)):
        return Verdict(R.DELIVERED, False, False)
    if code is not None and code[0] == "2":   # a success code on a failure says nothing
        code = None

    found = _text_groups(_words(raw)) if raw else set()
    if code is not None or reply is not None:
        found -= _NO_CODES_GROUPS
    best = min((i for i in found if i < _NGROUPS), default=None)
    group = _GROUPS[best] if best is not None else None
    by_status = _STATUS_REASON.get(code) if code is not None else None
    sender_side: bool | None = None

    if group is not None and group.strong:
        reason = group.reason
        if by_status is R.EXCEEDLIMIT and reason is R.MESGTOOBIG:
            reason = R.EXCEEDLIMIT
        sender_side = group.sender_side
    elif by_status is not None and by_status is not R.UNDEFINED:
        reason = by_status
        if code in _REJECTED_SENDER:
            sender_side = True
    elif group is not None:
        reason = group.reason
        sender_side = group.sender_side
    elif code == "5.3.0":
        reason = R.SYSTEMERROR
    elif code is not None and by_status is None \
            and code.split(".")[1] in _SUBJECT_FALLBACK:
        reason = _SUBJECT_FALLBACK[code.split(".")[1]]
    elif reply is not None and reply in _REPLY_REASON:
        reason = _REPLY_REASON[reply]
    else:
        reason = R.EXPIRED if act == "delayed" else R.UNDEFINED

    klass = code[0] if code is not None else (str(reply)[0] if reply is not None else None)
    before_rcpt = _BEFORE_RCPT in found
    if sender_side is None:
        sender_side = _SENDERISH in found if reason is R.REJECTED else reason in _SENDER_SIDE
    if not sender_side and code is not None and code.split(".")[1] == "7" \
            and _NAMES_US in found and reason not in _NOT_ABOUT_US:
        sender_side = True
    if not sender_side and before_rcpt and klass == "5" and reason in _VAGUE_ABOUT_US:
        sender_side = True

    if sender_side or before_rcpt or act == "delayed" or klass == "4":
        hard = False
    elif reason in _HARD:
        hard = True
    elif reason is R.NOTACCEPT:
        hard = klass == "5" or (klass is None and act == "failed")
    else:
        hard = False
    return Verdict(reason, hard, sender_side)


def _bench() -> None:   # pragma: no cover - the figures in the module docstring
    samples = [
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try"
        "\n 550-5.1.1 double-checking the recipient's email address for typos or\n 550-5.1.1"
        " unnecessary spaces. Learn more at\n 550 5.1.1  https://support.google.com/mail/?p="
        "NoSuchUser d2-20020a05600c34c200b0040e3a4a6b0esi1234567wmq.123 - gsmtp",
        "smtp; 550 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
        "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.25",
        "smtp; 421-4.7.28 [192.0.2.25 15] Gmail has detected an unusual rate of unsolicited "
        "mail originating from your IP address. To protect our users from spam, mail sent "
        "from your IP address has been temporarily rate limited.",
        "smtp; 550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com 2024-05-21T10:15:12.345Z]",
        "smtp; 552-5.2.2 The email account that you tried to reach is over quota. Please "
        "direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
        "smtp; 554 30 Sorry, your message to someone@yahoo.com cannot be delivered. This "
        "mailbox is disabled (554.30)",
        "smtp; 421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to "
        "unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com",
        "X-Postfix; host mx.example.nl[192.0.2.7] said: 550 5.1.1 <jan@example.nl>: "
        "Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT "
        "TO command)",
        "smtp; 550 5.7.26 This mail has been blocked because the sender is unauthenticated. "
        "Gmail requires all senders to authenticate with either SPF or DKIM.",
        "smtp; 450 4.2.0 <an@example.be>: Recipient address rejected: Greylisted, see "
        "https://postgrey.schweikert.ch/help/example.be.html",
        "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##",
        "X-Postfix; connect to mx.example.com[192.0.2.1]:25: Connection timed out",
        "SMTP error from remote mail server after RCPT TO:<piet@example.nl>: 550 5.1.1 "
        "<piet@example.nl>: Recipient address rejected: User unknown in relay recipient table",
        "host mx00.t-online.de[194.25.134.8] refused to talk to me: 554 IP=192.0.2.25 - A "
        "problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de "
        "to clarify.) (BL)",
        "smtp; 550 5.7.509 Access denied, sending domain EXAMPLE.ORG does not pass DMARC "
        "verification and has a DMARC policy of reject.",
        "smtp; 552 Mailbox quota exceeded",
        "Sorry, no mailbox here by that name. (#5.1.1)",
        "X-Postfix; Host or domain name not found. Name service error for name=exmple.com "
        "type=A: Host not found",
        "550 5.1.1 <marie@example.fr>: utilisateur inconnu",
        "smtp; 554 5.7.1 [CS01] Message rejected due to local policy. Please visit "
        "https://support.apple.com/en-us/HT204137",
    ]
    timer = time.process_time   # CPU time: the figure does not depend on what else runs

    def per_call(texts: list[str], rounds: int) -> float:
        best = float("inf")
        for _ in range(7):
            started = timer()
            for _ in range(rounds):
                for text in texts:
                    classify(diagnostic=text, action="failed")
            best = min(best, (timer() - started) / (rounds * len(texts)))
        return best * 1e6

    print(f"{per_call(samples, 200):.1f} us per classify(), mean over {len(samples)} "
          f"diagnostics of {min(map(len, samples))}-{max(map(len, samples))} characters")
    long = (" ".join(samples) * 3)[:_MAX_TEXT]
    print(f"{per_call([long], 300):.1f} us for a {len(long):,}-character diagnostic")
    started = timer()
    for _ in range(5):
        _compile(tuple((i, g.phrases) for i, g in enumerate(_GROUPS)))
    print(f"{(timer() - started) / 5 * 1e3:.0f} ms to build the trie")


if __name__ == "__main__":   # pragma: no cover
    _bench()
