"""SPF (RFC 7208): the record of the envelope domain, evaluated for the sending address.

`evaluate(resolver, domain, ip)` does what a receiver's check_host() does, and also
walks the terms a receiver would skip after the first match, so the count of DNS
look-ups is the one any address can cost: include, a, mx, ptr, exists and redirect
count one each, at every level, and a record that needs more than 10 is a permerror
(section 4.6.4), as are more than 2 look-ups that find nothing ("void", 4.6.4), two SPF
records at one name (4.5), and a term that does not parse.

Macros (section 7) are expanded for the sender bounces+…@domain and the address checked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mailer.doctor.resolver import Resolver

__all__ = ["LOOKUP_LIMIT", "Evaluation", "SpfError", "Term", "evaluate", "parse", "spf_records"]

LOOKUP_LIMIT = 10
VOID_LIMIT = 2
_WALK_LIMIT = 60  # look-ups at most, however broken the tree: the walk ends there
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfError(Exception):
    """A permerror: the record cannot be evaluated."""


@dataclass(frozen=True)
class Term:
    text: str
    qualifier: str  # + - ~ ?   ("" for a modifier)
    name: str  # mechanism or modifier name, lower case
    target: str = ""  # domain-spec, address or modifier value
    cidr4: int | None = None
    cidr6: int | None = None


def spf_records(resolver: Resolver, domain: str) -> list[str]:
    """The SPF records at `domain`: TXT records starting with v=spf1, their strings joined
    (RFC 7208 3.3)."""
    found = []
    for strings in resolver.txt(domain):
        text = b"".join(strings).decode("ascii", "replace")
        if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 "):
            found.append(text)
    return found


def parse(record: str) -> list[Term]:
    """The terms of a record, or SpfError for the first that is not valid."""
    terms = []
    for text in record.split()[1:]:
        modifier = _MODIFIER.fullmatch(text)
        if modifier:
            terms.append(Term(text, "", modifier.group(1).lower(), modifier.group(2)))
            continue
        qualifier = text[0] if text[0] in _RESULTS else "+"
        body = text[1:] if text[0] in _RESULTS else text
        name = re.split(r"[:/]", body, maxsplit=1)[0].lower()
        rest = body[len(name):]
        if name not in _MECHANISMS:
            raise SpfError(f"'{text}' is not an SPF mechanism")
        terms.append(_mechanism(text, qualifier, name, rest))
    return terms


def _mechanism(text: str, qualifier: str, name: str, rest: str) -> Term:
    bad = SpfError(f"'{text}' is not valid SPF")
    if name == "all":
        if rest:
            raise bad
        return Term(text, qualifier, name)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise bad
        try:
            network = ipaddress.ip_network(rest[1:], strict=False)
        except ValueError:
            raise bad from None
        if network.version != (4 if name == "ip4" else 6):
            raise bad
        return Term(text, qualifier, name, str(network))
    target, cidr4, cidr6 = rest, None, None
    if name in ("a", "mx"):
        match = re.fullmatch(r"(:[^/]+)?(?:/(\d{1,2}))?(?://(\d{1,3}))?", rest)
        if match is None:
            raise bad
        target = match.group(1) or ""
        cidr4 = int(match.group(2)) if match.group(2) else None
        cidr6 = int(match.group(3)) if match.group(3) else None
        if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
            raise bad
    if target and (not target.startswith(":") or len(target) < 2):
        raise bad
    if name in ("include", "exists") and not target:
        raise bad
    return Term(text, qualifier, name, target[1:], cidr4, cidr6)


@dataclass
class Evaluation:
    """What a receiver finds for one domain and one address (`ip` None: only the walk)."""

    domain: str
    records: list[str]
    result: str = "none"  # pass fail softfail neutral none permerror temperror
    matched: str = ""  # the term that decided, e.g. "ip4:192.0.2.0/24 (in include:_spf.x)"
    lookups: int = 0
    void: int = 0
    problems: list[str] = field(default_factory=list)  # each one a permerror
    per_term: list[tuple[str, int]] = field(default_factory=list)  # top-level look-ups
    all_qualifier: str | None = None  # of the top record's `all`
    ptr_used: bool = False


class _Walk:
    def __init__(self, resolver: Resolver, ip: IPAddress | None, sender: str) -> None:
        self.resolver, self.ip, self.sender = resolver, ip, sender
        self.lookups = self.void = 0
        self.problems: list[str] = []
        self.ptr_used = False
        self.chain: list[str] = []

    def lookup(self) -> bool:
        """Count a look-up; False once the walk has gone far enough."""
        self.lookups += 1
        return self.lookups <= _WALK_LIMIT

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def check_host(self, domain: str, top: Evaluation | None = None) -> tuple[str, str]:
        """(result, matched term) for `domain`; permerrors are noted in `problems`."""
        domain = domain.lower().rstrip(".")
        if domain in self.chain:
            self.problem(f"include:/redirect= loop at {domain}")
            return "permerror", ""
        records = spf_records(self.resolver, domain)
        if top is not None:
            top.records = records
        if not records:
            return "none", ""
        if len(records) > 1:
            self.problem(f"{domain} has {len(records)} SPF records (one is allowed)")
            return "permerror", ""
        try:
            terms = parse(records[0])
        except SpfError as exc:
            self.problem(f"{domain}: {exc}")
            return "permerror", ""
        self.chain.append(domain)
        try:
            return self._terms(domain, terms, top)
        finally:
            self.chain.pop()

    def _terms(self, domain: str, terms: list[Term], top: Evaluation | None) -> tuple[str, str]:
        result, matched = "", ""
        redirect = None
        for term in terms:
            before = self.lookups
            if term.name == "redirect":
                redirect = term
                continue
            if not term.qualifier:
                continue  # exp= and unknown modifiers change no result
            if term.name == "all" and top is not None:
                top.all_qualifier = term.qualifier
            hit = self._match(term, domain)
            if top is not None and self.lookups > before:
                top.per_term.append((term.text, self.lookups - before))
            if hit == "permerror" and not result:
                result, matched = "permerror", term.text
            elif hit is True and not result:
                result, matched = _RESULTS[term.qualifier], term.text
        if redirect is not None and not any(t.name == "all" for t in terms):
            before = self.lookups
            if self.lookup():
                target = self._expand(redirect.target, domain)
                outcome, inner = self.check_host(target)
                if outcome == "none":
                    self.problem(f"redirect={target}: {target} has no SPF record")
                    outcome = "permerror"
                if not result:
                    result, matched = outcome, f"{inner} (via redirect={target})"
            if top is not None:
                top.per_term.append((redirect.text, self.lookups - before))
        return result or "neutral", matched

    def _match(self, term: Term, domain: str) -> bool | str:
        ip = self.ip
        if term.name == "all":
            return True
        if term.name in ("ip4", "ip6"):
            return ip is not None and ip in ipaddress.ip_network(term.target)
        if not self.lookup():
            return False
        target = self._expand(term.target, domain) if term.target else domain
        if term.name == "include":
            outcome, inner = self.check_host(target)
            if outcome == "none":
                self.problem(f"include:{target}: {target} has no SPF record")
                return "permerror"
            if outcome in ("permerror", "temperror"):
                return "permerror"
            return outcome == "pass"
        if term.name == "a":
            return self._in(self._addresses(target), term)
        if term.name == "mx":
            hosts = [h for _, h in self.resolver.mx(target) if h != "."]
            if not hosts:
                self.void += 1
            if len(hosts) > 10:
                self.problem(f"mx:{target} has {len(hosts)} MX hosts (10 at most)")
            found = [a for host in hosts[:10] for a in self.resolver.addresses(host)]
            return self._in(found, term)
        if term.name == "exists":
            if ip is None and "%" in term.target:
                return False  # depends on the address: counted, not asked
            found = self.resolver.addresses(target, ("A",))
            if not found:
                self.void += 1
            return bool(found)
        # ptr (deprecated, RFC 7208 5.5): a verified name of the address in `target`
        self.ptr_used = True
        if ip is None:
            return False
        for name in self.resolver.ptr(str(ip))[:10]:
            if (name == target or name.endswith("." + target)) \
                    and str(ip) in self.resolver.addresses(name):
                return True
        return False

    def _addresses(self, name: str) -> list[str]:
        found = self.resolver.addresses(name)
        if not found:
            self.void += 1
        return found

    def _in(self, addresses: list[str], term: Term) -> bool:
        ip = self.ip
        if ip is None:
            return False
        for text in addresses:
            address = ipaddress.ip_address(text)
            if address.version != ip.version:
                continue
            prefix = term.cidr4 if ip.version == 4 else term.cidr6
            if prefix is None:
                prefix = address.max_prefixlen
            network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            if ip in network:
                return True
        return False

    def _expand(self, spec: str, domain: str) -> str:
        """Macro expansion (RFC 7208 7): %{s l o d i p v h} with digits, r and delimiters."""
        if "%" not in spec:
            return spec
        local, _, sender_domain = self.sender.rpartition("@")
        ip = self.ip
        if ip is None:
            address = "0.0.0.0"
        elif ip.version == 4:
            address = str(ip)
        else:
            address = ".".join(ip.exploded.replace(":", ""))
        values = {"s": self.sender, "l": local or "postmaster", "o": sender_domain,
                  "d": domain, "i": address, "p": "unknown", "h": sender_domain,
                  "v": "in-addr" if ip is None or ip.version == 4 else "ip6"}

        def macro(match: re.Match[str]) -> str:
            whole = match.group(0)
            if whole in ("%%", "%_", "%-"):
                return {"%%": "%", "%_": " ", "%-": "%20"}[whole]
            letter, digits, reverse, delimiters = match.groups()
            value = values.get(letter.lower())
            if value is None:
                raise SpfError(f"'{whole}' is not an SPF macro")
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits):] if int(digits) else parts
            return ".".join(parts)

        try:
            return re.sub(r"%%|%_|%-|%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}", macro, spec)
        except SpfError as exc:
            self.problem(str(exc))
            return spec


def evaluate(resolver: Resolver, domain: str, ip: str | None, *,
             sender: str | None = None) -> Evaluation:
    """check_host() for `ip` (None: only count) at `domain`, for the envelope sender
    `sender` (default postmaster@domain). DnsFailure propagates: a temperror."""
    evaluation = Evaluation(domain=domain, records=[])
    walk = _Walk(resolver, ipaddress.ip_address(ip) if ip else None,
                 sender or f"postmaster@{domain}")
    result, matched = walk.check_host(domain, top=evaluation)
    evaluation.result, evaluation.matched = result, matched
    evaluation.lookups, evaluation.void = walk.lookups, walk.void
    evaluation.problems = walk.problems
    evaluation.ptr_used = walk.ptr_used
    if walk.lookups > LOOKUP_LIMIT:
        evaluation.problems.append(f"it needs {walk.lookups} DNS look-ups "
                                   f"(the limit is {LOOKUP_LIMIT})")
    if walk.void > VOID_LIMIT:
        evaluation.problems.append(f"{walk.void} of its look-ups find nothing "
                                   f"(the limit is {VOID_LIMIT})")
    if evaluation.problems and result != "none":
        evaluation.result = "permerror"
    return evaluation



# -- the findings ---------------------------------------------------------------------------

def _mechanism_for(ip: str) -> str:
    return f"ip{ipaddress.ip_address(ip).version}:{ip}"


def suggested(records: list[str], ips: list[str]) -> str:
    """The one record to publish: the existing ones merged, each sending address added
    before the end; `+all`/`?all` become `~all` (`-all` stays), and a new record is the
    addresses and `~all` (DMARC decides what happens to the rest)."""
    terms: list[str] = []
    ending = redirect = ""
    for record in records:
        for text in record.split()[1:]:
            name = text.lstrip("+-~?").lower()
            if name == "all":
                ending = "-all" if "-all" in (text, ending) else "~all"
            elif name.startswith("redirect="):
                redirect = redirect or text
            elif text not in terms:
                terms.append(text)
    for ip in ips:
        mechanism = _mechanism_for(ip)
        if mechanism not in terms and "+" + mechanism not in terms:
            terms.append(mechanism)
    if not ips and not records:
        terms.append("ip4:YOUR.SENDING.ADDRESS")
    return " ".join(["v=spf1", *terms, ending or redirect or "~all"])
