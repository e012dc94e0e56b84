"""DMARC (RFC 7489): the organisational domain, the record, and alignment.

The organisational domain is the registrable domain under the Public Suffix List: the
`publicsuffixlist` package ships the list inside it (no download at run time; a newer
release of the package brings a newer list). news.example.be → example.be,
bounce.example.co.uk → example.co.uk.
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList

from mailer.doctor.resolver import Resolver

__all__ = ["aligned", "find_record", "organisational", "tags"]


@cache
def _list() -> PublicSuffixList:
    return PublicSuffixList()


def organisational(domain: str) -> str:
    """The organisational domain of `domain` (itself when it is one, or a public suffix)."""
    domain = domain.lower().rstrip(".")
    return _list().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str = "r") -> bool:
    """Whether two domains are aligned: the same (strict, "s") or the same organisational
    domain (relaxed, "r", the default)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else organisational(a) == organisational(b)


def tags(record: str) -> dict[str, str]:
    """The tag=value pairs of a DMARC or DKIM record (names lower case, values stripped)."""
    found: dict[str, str] = {}
    for part in record.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip():
            found.setdefault(name.strip().lower(), value.strip())
    return found


def find_record(resolver: Resolver, from_domain: str) -> tuple[str, list[str]]:
    """(where, records): the DMARC records at _dmarc.FROM, else at _dmarc.ORGANISATIONAL
    (RFC 7489 6.6.3); `where` is the name that was used (the first asked if none)."""
    names = [f"_dmarc.{from_domain}"]
    org = organisational(from_domain)
    if org != from_domain:
        names.append(f"_dmarc.{org}")
    for name in names:
        records = [b"".join(strings).decode("ascii", "replace")
                   for strings in resolver.txt(name)]
        records = [r for r in records if r.replace(" ", "").startswith("v=DMARC1")]
        if records:
            return name, records
    return names[-1], []
