"""The SPF, DKIM and DMARC findings: what receivers check before they take a message."""

from __future__ import annotations

import base64
import binascii
from datetime import date

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailer.doctor.dmarc import aligned, find_record, organisational, tags
from mailer.doctor.findings import (
    GMAIL_ALIGNMENT,
    GMAIL_DKIM,
    GMAIL_DMARC,
    GMAIL_DMARC_REJECT,
    GMAIL_SPF,
    GMAIL_SPF_HARDFAIL,
    GMAIL_SPF_SUSPICIOUS,
    GMAIL_UNAUTHENTICATED,
    MICROSOFT,
    YAHOO_DMARC,
    YAHOO_UNAUTHENTICATED,
    Finding,
    each,
    zone_txt,
)
from mailer.doctor.resolver import Resolver
from mailer.doctor.setup import Identity, Key, Setup
from mailer.doctor.spf import LOOKUP_LIMIT, evaluate, suggested

__all__ = ["check_dkim", "check_dmarc", "check_spf"]

# -- SPF -------------------------------------------------------------------------------------

def check_spf(setup: Setup, resolver: Resolver, ips: list[str]) -> list[Finding]:
    return each("spf", "SPF", setup.bounce_domains, lambda d: _spf(d, resolver, ips))


def _spf(domain: str, resolver: Resolver, ips: list[str]) -> list[Finding]:
    sender = f"bounces+token@{domain}"
    walk = evaluate(resolver, domain, ips[0] if ips else None, sender=sender)
    records = walk.records
    fix = zone_txt(domain, suggested(sorted(records), ips))  # the same whatever the order
    auth = f"{GMAIL_SPF} {YAHOO_UNAUTHENTICATED} {MICROSOFT}"
    if not records:
        return [Finding("spf", "fail", f"{domain} (the envelope domain, bounces+…@{domain}) "
                        "has no SPF record.", auth, fix)]
    findings = []
    if len(records) > 1:
        return [Finding("spf", "fail", f"{domain} has {len(records)} SPF records: receivers "
                        "take none of them (permerror, RFC 7208 4.5).",
                        f"{auth} {GMAIL_SPF_SUSPICIOUS}",
                        "Merge them into one record:\n" + fix)]
    if walk.problems:
        detail = "; ".join(walk.problems)
        repair = fix
        if walk.lookups > LOOKUP_LIMIT:
            costly = ", ".join(f"{term} ({count})" for term, count in walk.per_term)
            repair = ("Bring it to 10 look-ups or fewer: replace an include: by the "
                      "ip4:/ip6: ranges it stands for, or drop those of services that no "
                      f"longer send for you. The look-ups, term by term: {costly}. The "
                      f"record now, with the sending address:\n{fix}")
        findings.append(Finding("spf", "fail", f"The SPF record of {domain} is broken: "
                                f"{detail} (permerror: it passes for nobody).",
                                f"{auth} {GMAIL_SPF_SUSPICIOUS}", repair))
    if walk.all_qualifier == "+":
        findings.append(Finding("spf", "fail", f"The SPF record of {domain} ends in +all: "
                                "every server on the internet may send as you.",
                                f"{GMAIL_SPF_SUSPICIOUS} Spam filters count +all against "
                                "the domain, and it authenticates spoofed mail.", fix))
    elif walk.all_qualifier == "?":
        findings.append(Finding("spf", "warn", f"The SPF record of {domain} ends in ?all "
                                "(neutral): it says nothing about other senders.",
                                "Receivers treat neutral like no SPF at all for servers "
                                "that are not listed.", fix))
    elif walk.all_qualifier is None and not any(t.startswith("redirect=")
                                                for t in records[0].split()):
        findings.append(Finding("spf", "warn", f"The SPF record of {domain} has no all "
                                "term: other servers get neutral.",
                                "End it with ~all or -all so receivers know the list is "
                                "complete.", fix))
    if walk.ptr_used:
        findings.append(Finding("spf", "warn", f"The SPF record of {domain} uses ptr, which "
                                "RFC 7208 (5.5) says not to use: it is slow and some "
                                "receivers skip it.", GMAIL_SPF_SUSPICIOUS, fix))
    if walk.problems:
        return findings
    if not ips:
        findings.append(Finding("spf", "warn", f"{domain} has an SPF record ({records[0]}), "
                                "but the address mail leaves from is not known, so whether "
                                "it covers it was not checked.",
                                "Give it with --sending-ip.", ""))
        return findings
    for ip in ips:
        result = evaluate(resolver, domain, ip, sender=sender)
        if result.result == "pass":
            findings.append(Finding("spf", "ok", f"SPF of {domain} passes for {ip} "
                                    f"({result.matched}; {result.lookups} of "
                                    f"{LOOKUP_LIMIT} DNS look-ups)."))
            continue
        hard = result.result == "fail"
        findings.append(Finding(
            "spf", "fail", f"SPF of {domain} does not cover {ip}, the address mail leaves "
            f"from: the result is {result.result}"
            + (f" ({result.matched})." if result.matched else "."),
            (GMAIL_SPF_HARDFAIL + " " if hard else "") + auth,
            f"Add {_mechanism(ip)} (or your relay's include:) to the record:\n{fix}"))
    return findings


def _mechanism(ip: str) -> str:
    return f"ip{6 if ':' in ip else 4}:{ip}"


# -- DKIM ------------------------------------------------------------------------------------

def _new_selector() -> str:
    return f"mail{date.today().year}"


def check_dkim(setup: Setup, resolver: Resolver) -> list[Finding]:
    if not setup.keys:
        domains = setup.dkim_domains or ["example.be"]
        commands = "\n".join(f"mailer dkim keygen --domain {d} --selector "
                             f"{_new_selector()} --configure" for d in domains)
        return [Finding("dkim", "fail", "Messages are not DKIM-signed: [sending] has no "
                        "DKIM key.", f"{GMAIL_DKIM} {YAHOO_UNAUTHENTICATED} {MICROSOFT}",
                        f"{commands}\nthen publish the TXT record it prints.")]
    findings = []
    for key in setup.keys:
        if key.problem:
            findings.append(Finding("dkim", "fail", f"The DKIM key {key.path} (selector "
                                    f"{key.selector}) cannot be used: {key.problem}",
                                    "Sending stops at the first message: nothing can be "
                                    "signed.", "Fix the key file, or take the key out of "
                                    "[sending] in mailer.toml."))
            continue
        for domain in setup.dkim_domains:
            name = f"{key.selector}._domainkey.{domain}"
            findings += each("dkim", "The DKIM key", [name],
                             lambda n, key=key: _dkim(n, key, resolver))
    usable = [k for k in setup.keys if not k.problem]
    if usable and all(k.algorithm == "ed25519" for k in usable):
        domain = setup.dkim_domains[0] if setup.dkim_domains else "example.be"
        findings.append(Finding("dkim", "warn", "Every DKIM key is ed25519: Gmail, "
                                "Microsoft and many filters cannot verify ed25519 yet and "
                                "see the mail as unsigned.", GMAIL_DKIM,
                                "Add an RSA key beside it (RFC 8463): mailer dkim keygen "
                                f"--domain {domain} "
                                f"--selector {_new_selector()} --configure"))
    return findings


def _public_key(value: str) -> str:
    return "".join(value.split())


def _dkim(name: str, key: Key, resolver: Resolver) -> list[Finding]:
    assert key.record is not None
    expected = _public_key(tags(key.record)["p"])
    fix = zone_txt(name, key.record)
    why = f"{GMAIL_DKIM} {YAHOO_UNAUTHENTICATED} {MICROSOFT}"
    published = resolver.txt(name)
    values = [b"".join(strings).decode("ascii", "replace") for strings in published]
    if not values:
        return [Finding("dkim", "fail", f"{name} has no TXT record: the signature of "
                        f"{key.path} cannot be verified.", why, fix)]
    found = [_public_key(tags(v).get("p", "")) for v in values]
    if len(values) > 1:
        split = expected not in found and any(p and expected.startswith(p) for p in found)
        what = (f"{name} holds the key split over {len(values)} TXT records instead of one "
                "record of several strings: each record alone is a broken key."
                if split else
                f"{name} has {len(values)} TXT records: verifiers take one of them at random "
                "(RFC 6376 3.6.2.2) and the signature fails whenever it is the wrong one.")
        return [Finding("dkim", "fail", what, why,
                        "Delete them and publish one record, as strings of at most 255 "
                        f"bytes:\n{fix}")]
    record, public = tags(values[0]), found[0]
    strings = published[0]
    long = [len(s) for s in strings if len(s) > 255]
    if long:
        return [Finding("dkim", "fail", f"{name} has a string of {long[0]} bytes: a TXT "
                        "string holds 255 at most.", why, fix)]
    if record.get("v", "DKIM1") != "DKIM1":
        return [Finding("dkim", "fail", f"{name} is not a DKIM key record (v={record['v']}).",
                        why, fix)]
    if not public:
        return [Finding("dkim", "fail", f"{name} publishes no key (p= is empty: the key is "
                        "revoked).", why, fix)]
    if public != expected:
        if expected.startswith(public):
            what = (f"{name} publishes only the first {len(public)} of the key's "
                    f"{len(expected)} characters: the record was cut at "
                    f"{len(values[0])} bytes, as a DNS host does that takes one string of at "
                    "most 255 bytes.")
            fixed = ("Publish it as several strings of at most 255 bytes (a DNS panel that "
                     f"takes one long value cuts it itself):\n{fix}")
        else:
            what = (f"{name} publishes another key than {key.path}: signatures made with "
                    "it fail (the key was replaced, or the record is for another one).")
            fixed = f"Replace the record:\n{fix}"
        return [Finding("dkim", "fail", what, why, fixed)]
    kind = record.get("k", "rsa").lower()
    if kind != key.algorithm:
        return [Finding("dkim", "fail", f"{name} says k={kind}, the key is {key.algorithm}.",
                        why, fix)]
    if "h" in record and "sha256" not in record["h"].lower().split(":"):
        return [Finding("dkim", "fail", f"{name} allows only h={record['h']}: mailer signs "
                        "with sha256.", why, fix)]
    findings = []
    if "y" in [f.strip().lower() for f in record.get("t", "").split(":")]:
        findings.append(Finding("dkim", "warn", f"{name} is in test mode (t=y): receivers "
                                "may treat signed mail as unsigned.", GMAIL_DKIM,
                                "Drop t=y:\n" + fix))
    bits = _bits(public)
    if key.algorithm == "rsa" and bits is not None and bits < 1024:
        return [Finding("dkim", "fail", f"The key at {name} is RSA {bits} bits: receivers "
                        "ignore RSA keys under 1024 bits (RFC 8301).", why,
                        "Make a 2048-bit key: mailer dkim keygen --domain "
                        f"{name.split('._domainkey.')[1]} --selector NEW --configure")]
    if key.algorithm == "rsa" and bits is not None and bits < 2048:
        findings.append(Finding("dkim", "warn", f"The key at {name} is RSA {bits} bits: "
                                "2048 is advised (Gmail and RFC 8301 recommend it; 1024 is "
                                "the least receivers accept).", GMAIL_DKIM,
                                "Make a 2048-bit key under a new selector, publish it, "
                                "then switch: mailer dkim keygen --domain "
                                f"{name.split('._domainkey.')[1]} --selector NEW --configure"))
    size = f"RSA {bits} bits" if key.algorithm == "rsa" else "ed25519"
    findings.append(Finding("dkim", "ok", f"{name} publishes the key in {key.path} ({size}, "
                            f"{len(strings)} string{'s' if len(strings) != 1 else ''} of at "
                            "most 255 bytes)."))
    return findings


def _bits(public: str) -> int | None:
    try:
        key = load_der_public_key(base64.b64decode(public))
    except (ValueError, TypeError, binascii.Error):
        return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


# -- DMARC -----------------------------------------------------------------------------------

def check_dmarc(setup: Setup, resolver: Resolver) -> list[Finding]:
    return each("dmarc", "DMARC", setup.from_domains, lambda d: _dmarc(d, setup, resolver))


def _dmarc(from_domain: str, setup: Setup, resolver: Resolver) -> list[Finding]:
    org = organisational(from_domain)
    where, records = find_record(resolver, from_domain)
    suggestion = zone_txt(f"_dmarc.{org}", f"v=DMARC1; p=none; rua=mailto:dmarc@{org}")
    if not records:
        asked = f"_dmarc.{from_domain}" + (f" nor _dmarc.{org}" if org != from_domain else "")
        return [Finding("dmarc", "fail", f"{from_domain} has no DMARC record (no {asked}).",
                        f"{GMAIL_DMARC} {YAHOO_DMARC} {MICROSOFT}",
                        f"{suggestion}\n(once the reports show all your mail passes, go to "
                        "p=quarantine)")]
    if len(records) > 1:
        return [Finding("dmarc", "fail", f"{where} has {len(records)} DMARC records: "
                        "receivers ignore them all (RFC 7489 6.6.3).",
                        f"{GMAIL_DMARC} {MICROSOFT}",
                        f"Keep one:\n{zone_txt(where, records[0])}")]
    record = tags(records[0])
    findings = []
    policy = record.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        fixed = records[0].rstrip("; ") + "; p=none" if not policy else \
            records[0].replace(f"p={record['p']}", "p=none")
        findings.append(Finding("dmarc", "fail", f"{where} sets no valid policy "
                                f"(p={record.get('p', '')!s}).", f"{GMAIL_DMARC} {MICROSOFT}",
                                zone_txt(where, fixed)))
    elif policy == "none":
        findings.append(Finding("dmarc", "warn", f"{where} has p=none: receivers accept "
                                "it, but it asks them to let through mail that fails, so "
                                "anyone can still send as you.",
                                "Gmail, Yahoo and Microsoft accept p=none from bulk "
                                "senders; it protects nobody.",
                                "Once the reports show all your mail passes:\n"
                                + zone_txt(where, records[0].replace(
                                    f"p={record['p']}", "p=quarantine"))))
    else:
        findings.append(Finding("dmarc", "ok", f"{where}: p={policy}."))
    if not record.get("rua"):
        findings.append(Finding("dmarc", "warn", f"{where} asks for no reports (no rua=): "
                                "you will not see what fails or who sends as you.",
                                "The aggregate reports are how you find a forgotten "
                                "sender before you tighten p=.",
                                zone_txt(where, records[0].rstrip("; ")
                                         + f"; rua=mailto:dmarc@{org}")))
    else:
        findings += _report_rights(where, org, record["rua"], resolver)
    for identity in setup.identities:
        if identity.from_domain == from_domain:
            findings.append(_alignment(identity, record, setup, policy))
    return findings


def _report_rights(where: str, org: str, rua: str, resolver: Resolver) -> list[Finding]:
    """A report address at another organisation must agree to take the reports
    (RFC 7489 7.1: a record at ORG._report._dmarc.THEIRS)."""
    findings = []
    for uri in rua.split(","):
        address = uri.strip().removeprefix("mailto:").split("!")[0]
        theirs = address.rpartition("@")[2].lower()
        if not theirs or organisational(theirs) == org:
            continue
        name = f"{org}._report._dmarc.{theirs}"
        agreed = any(b"".join(s).decode("ascii", "replace").startswith("v=DMARC1")
                     for s in resolver.txt(name))
        if not agreed:
            findings.append(Finding("dmarc", "warn", f"{where} sends reports to {address}, "
                                    f"but {theirs} has not agreed to take reports for {org}: "
                                    "receivers send none.", "RFC 7489 7.1.",
                                    "Ask the report service to publish (in its own zone):\n"
                                    + zone_txt(name, "v=DMARC1")))
    return findings


def _alignment(identity: Identity, record: dict[str, str], setup: Setup,
               policy: str) -> Finding:
    adkim, aspf = record.get("adkim", "r").lower(), record.get("aspf", "r").lower()
    signed = any(not k.problem for k in setup.keys)
    dkim_ok = signed and aligned(identity.from_domain, identity.dkim_domain, adkim)
    spf_ok = aligned(identity.from_domain, identity.bounce_domain, aspf)
    mode = {"r": "relaxed", "s": "strict"}
    subject = (f"From {identity.from_domain} ({identity.label}): DKIM d={identity.dkim_domain}"
               f"{'' if signed else ' (no key)'}, envelope {identity.bounce_domain}")
    if dkim_ok and spf_ok:
        return Finding("dmarc", "ok", f"{subject}: both aligned ({mode.get(adkim, adkim)} "
                       f"DKIM, {mode.get(aspf, aspf)} SPF).")
    org = organisational(identity.from_domain)
    fix = (f'In mailer.toml, [sending]: domain = "{identity.from_domain}" (DKIM d=) and '
           f'bounce_domain = "{identity.bounce_domain if spf_ok else "bounce." + org}" '
           f"(an envelope domain under {org}, with its MX and SPF), and publish the DKIM "
           f"key under {identity.from_domain}.")
    if dkim_ok or spf_ok:
        missing = "the envelope domain" if dkim_ok else "DKIM d="
        return Finding("dmarc", "warn", f"{subject}: only {'DKIM' if dkim_ok else 'SPF'} is "
                       f"aligned; {missing} is not under {org}, so DMARC rests on one "
                       "mechanism (a forwarder that breaks it makes the mail fail).",
                       MICROSOFT, fix)
    why = GMAIL_ALIGNMENT + " " + MICROSOFT
    if policy in ("quarantine", "reject"):
        why = f"{GMAIL_DMARC_REJECT} {YAHOO_DMARC} " + why
    return Finding("dmarc", "fail", f"{subject}: neither is aligned with the From domain "
                   f"(organisational domain {org}), so DMARC fails for every message.",
                   f"{why} {GMAIL_UNAUTHENTICATED}", fix)
