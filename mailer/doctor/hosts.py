"""The addresses and names receivers look at: where mail leaves from (with its PTR), the
EHLO name, and the MX of the envelope domain that bounces and unsub+ mail go to."""

from __future__ import annotations

import ipaddress
import re
import socket

from mailer.config import helo_problem
from mailer.doctor.findings import (
    GMAIL_PTR,
    UNKNOWN_SENDER_DOMAIN,
    YAHOO_IP,
    Finding,
    each,
    zone_line,
)
from mailer.doctor.resolver import DnsFailure, Resolver
from mailer.doctor.setup import Setup

__all__ = ["check_ehlo", "check_mx", "check_ptr", "sending_addresses"]

# Reverse names that look handed out by an access provider: receivers (and Spamhaus's
# PBL) take such an address for a home connection, not a mail server.
_GENERIC = re.compile(r"(\d{1,3}[-.]){3}\d{1,3}|dynamic|dhcp|pool|dsl|cable|dial|ppp|client",
                      re.IGNORECASE)


def _local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or ip.is_unspecified


def _outward_address(version: int) -> str | None:
    """The address this machine's packets to the internet leave from (the source the
    routing table picks; connecting a UDP socket sends nothing)."""
    family, probe = ((socket.AF_INET, "192.0.2.1") if version == 4
                     else (socket.AF_INET6, "2001:db8::1"))
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def sending_addresses(setup: Setup, resolver: Resolver,
                      given: list[str]) -> tuple[list[str], list[Finding]]:
    """The addresses receivers see mail come from, and a finding that says how they were
    found: those given (--sending-ip); else each relay's addresses as resolved; for a relay
    on this machine (a local MTA that delivers itself), this machine's outward address."""
    if given:
        return given, [Finding("sending_ip", "ok", f"Mail leaves from {', '.join(given)} "
                               "(given with --sending-ip).")]
    if not setup.relays:
        return [], []
    found: list[str] = []
    notes: list[Finding] = []
    for relay in setup.relays:
        try:
            addresses = resolver.addresses(relay.host)
        except DnsFailure as exc:
            notes.append(Finding("sending_ip", "fail", f"The relay {relay.host} was not "
                                 f"looked up: {exc}.", "Mail cannot leave.",
                                 "Check the host name in [delivery] transport."))
            continue
        if not addresses:
            notes.append(Finding("sending_ip", "fail", f"The relay {relay.host} has no "
                                 "address in DNS.", "Mail cannot leave.",
                                 "Check the host name in [delivery] transport."))
            continue
        if all(_local(a) for a in addresses):
            outward = [a for a in (_outward_address(4), _outward_address(6))
                       if a and ipaddress.ip_address(a).is_global]
            if not outward:
                notes.append(Finding("sending_ip", "warn", f"The relay {relay.host} is this "
                                     "machine, whose public address could not be found (it "
                                     "is behind NAT, or offline): SPF and PTR were not "
                                     "checked for it.", "",
                                     "Give the address mail leaves from: mailer doctor "
                                     "--sending-ip ADDRESS"))
                continue
            notes.append(Finding("sending_ip", "ok", f"The relay {relay.host} is this "
                                 f"machine: mail leaves from {', '.join(outward)}."))
            found += outward
        else:
            public = [a for a in addresses if not _local(a)]
            notes.append(Finding("sending_ip", "ok", f"Mail leaves through {relay.host} "
                                 f"({', '.join(public)}); if your provider sends from "
                                 "other addresses, give them with --sending-ip."))
            found += public
    return list(dict.fromkeys(found)), notes


def check_ptr(setup: Setup, resolver: Resolver, ips: list[str]) -> list[Finding]:
    findings = []
    name = setup.helo or "mail." + (setup.dkim_domains or ["example.be"])[0]
    for ip in ips:
        reverse = ipaddress.ip_address(ip).reverse_pointer
        why = f"{GMAIL_PTR} {YAHOO_IP}"
        try:
            names = resolver.ptr(ip)
        except DnsFailure as exc:
            findings.append(Finding("ptr", "fail", f"The PTR of {ip} was not looked up: "
                                    f"{exc}.", why, ""))
            continue
        kind = "AAAA" if ":" in ip else "A"
        forward = zone_line(name, kind, ip)
        if not names:
            findings.append(Finding("ptr", "fail", f"{ip} has no PTR record (reverse DNS).",
                                    why, "Ask whoever runs the address (your hosting "
                                    "provider: the reverse zone is theirs) for\n"
                                    f"{zone_line(reverse, 'PTR', name + '.')}\nand publish\n"
                                    f"{forward}"))
            continue
        try:
            confirmed = [n for n in names if ip in resolver.addresses(n)]
        except DnsFailure as exc:
            findings.append(Finding("ptr", "fail", f"{names[0]} (the PTR of {ip}) was not "
                                    f"looked up: {exc}.", why, ""))
            continue
        if not confirmed:
            findings.append(Finding("ptr", "fail", f"{ip} has the PTR {', '.join(names)}, but "
                                    f"{names[0]} does not resolve back to {ip} (no forward "
                                    "confirmation).", why,
                                    f"Publish\n{zone_line(names[0], kind, ip)}"))
            continue
        if _GENERIC.search(confirmed[0].split(".")[0]):
            findings.append(Finding("ptr", "warn", f"{ip} has the PTR {confirmed[0]}, which "
                                    "looks like an access provider's generic name.",
                                    f"{YAHOO_IP} Filters take generic names for home "
                                    "connections.", "Ask the provider for\n"
                                    f"{zone_line(reverse, 'PTR', name + '.')}"))
            continue
        findings.append(Finding("ptr", "ok", f"{ip} has the PTR {confirmed[0]}, which "
                                "resolves back to it."))
    return findings


def check_ehlo(setup: Setup, resolver: Resolver) -> list[Finding]:
    name = setup.helo
    fix = 'In mailer.toml, [sending]: helo_name = "mail.example.be" (a name of this machine ' \
          "that resolves)."
    if not name:
        return [Finding("ehlo", "warn", "No EHLO name could be worked out (no helo_name, no "
                        "fully qualified machine name, no domain).", "", fix)]
    problem = helo_problem(name)
    if problem:
        return [Finding("ehlo", "fail", f"The EHLO name is {problem}",
                        "Relays and receivers refuse or score it (Gmail 501-5.5.4 "
                        "\"HELO/EHLO argument invalid\").", fix)]
    try:
        addresses = resolver.addresses(name)
    except DnsFailure as exc:
        return [Finding("ehlo", "fail", f"The EHLO name {name} was not looked up: {exc}.",
                        "", fix)]
    if not addresses:
        return [Finding("ehlo", "warn", f"The EHLO name {name} does not resolve.",
                        "Relays with Postfix's reject_unknown_helo_hostname answer 450 4.7.1 "
                        "\"Helo command rejected: Host not found\"; filters score it.",
                        f"Publish\n{zone_line(name, 'A', 'ADDRESS-OF-THIS-MACHINE')}\nor "
                        + fix)]
    local = any(_on_this_machine(resolver, relay.host) for relay in setup.relays)
    note = (" The relay on this machine greets receivers with its own name (Postfix: "
            "myhostname): make that the PTR name." if local else "")
    return [Finding("ehlo", "ok", f"The EHLO name {name} resolves ({', '.join(addresses)})."
                    + note)]


def _on_this_machine(resolver: Resolver, host: str) -> bool:
    try:
        addresses = resolver.addresses(host)
    except DnsFailure:
        return False
    return bool(addresses) and all(_local(a) for a in addresses)


def check_mx(setup: Setup, resolver: Resolver) -> list[Finding]:
    return each("mx", "The MX", setup.bounce_domains, lambda d: [_mx(d, resolver)])


def _mx(domain: str, resolver: Resolver) -> Finding:
    what = f"bounces+…@{domain} and unsub+…@{domain}"
    why = (f"Bounces, complaints and mail unsubscribes go to {what}: when they cannot be "
           f"delivered, nobody is taken off the list. {UNKNOWN_SENDER_DOMAIN}")
    fix = (f"{zone_line(domain, 'MX', f'10 mx.{domain}.')}\n"
           f"{zone_line('mx.' + domain, 'A', 'ADDRESS-OF-YOUR-MAIL-SERVER')}\n"
           f"and a mailbox (or catch-all) there that `mailer bounces process` reads "
           "(docs/feedback.md).")
    records = resolver.mx(domain)
    if records and all(host == "." for _, host in records):
        return Finding("mx", "fail", f"{domain} has a null MX (RFC 7505): it says it takes no "
                       f"mail, so {what} cannot arrive.", why, fix)
    if not records:
        if resolver.addresses(domain):
            return Finding("mx", "warn", f"{domain} has no MX record: mail for {what} goes "
                           f"to the address of {domain} itself (RFC 5321 5.1), if it takes "
                           "mail there.", why, fix)
        return Finding("mx", "fail", f"{domain} has no MX record (and no address): {what} "
                       "cannot be delivered.", why, fix)
    hosts = [host for _, host in records if host != "."]
    reachable = [host for host in hosts if resolver.addresses(host)]
    if not reachable:
        return Finding("mx", "fail", f"The MX hosts of {domain} ({', '.join(hosts)}) have no "
                       "address.", why, "\n".join(zone_line(h, "A", "ADDRESS") for h in hosts))
    if len(reachable) < len(hosts):
        missing = [h for h in hosts if h not in reachable]
        return Finding("mx", "warn", f"Some MX hosts of {domain} have no address: "
                       f"{', '.join(missing)}.", why,
                       "\n".join(zone_line(h, "A", "ADDRESS") for h in missing))
    listed = ", ".join(f"{host} ({preference})" for preference, host in records)
    return Finding("mx", "ok", f"{domain} takes mail at {listed}: {what} can reach you.")
