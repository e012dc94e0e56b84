"""The doctor's DNS: dnspython, asking the system's resolver or the one given.

`Resolver(nameserver="127.0.0.1:5353")` asks that server only (the tests point it at the
dnsmasq they start; an operator can ask the domain's own name server to see a change
before caches expire). Answers are kept for the run, so a name asked by two checks costs
one query.

A name that does not exist, or has no record of the type, is an empty answer; a server
that does not answer (time-out, SERVFAIL, REFUSED) is a `DnsFailure`: the doctor cannot
tell, and neither can a receiver asking the same servers (it defers the mail).
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from mailer.errors import MailerError

__all__ = ["DnsFailure", "Resolver", "parse_nameserver"]


class DnsFailure(Exception):
    """The DNS gave no usable answer (no server answered, or it answered with an error)."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """"ADDRESS", "ADDRESS:PORT" or "[IPv6]:PORT" as (address, port)."""
    text = text.strip()
    port = 53
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: give [ADDRESS]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        address, _, number = text.partition(":")
        if not number.isdigit():
            raise ValueError(f"{text!r}: the port is not a number")
        port = int(number)
    else:
        address = text
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port")
    return address, port


class Resolver:
    """Look-ups for the checks. `nameserver`: "ADDRESS[:PORT]"; None: the system's."""

    def __init__(self, nameserver: str | None = None, *, timeout: float = 5.0) -> None:
        if nameserver:
            address, port = parse_nameserver(nameserver)
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [address]
            self._resolver.port = port
            self.describe = f"{address}:{port}" if port != 53 else address
        else:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise MailerError("This machine has no DNS resolver configured "
                                  "(/etc/resolv.conf).", hint="Give one: mailer doctor "
                                  "--nameserver ADDRESS") from None
            self.describe = ", ".join(str(n) for n in self._resolver.nameservers) \
                or "the system's resolver"
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._answers: dict[tuple[str, str], tuple[object, ...]] = {}
        self.queries = 0

    def _ask(self, name: str, kind: str) -> tuple[object, ...]:
        key = (name.lower().rstrip("."), kind)
        if key in self._answers:
            return self._answers[key]
        self.queries += 1
        try:
            answer = self._resolver.resolve(key[0] + ".", kind, search=False,
                                            raise_on_no_answer=False)
            records: tuple[object, ...] = tuple(answer.rrset or ())
        except dns.resolver.NXDOMAIN:
            records = ()
        except dns.resolver.NoNameservers as exc:
            raise DnsFailure(f"no name server answered for {key[0]} {kind} "
                             f"({_reason(exc)})") from None
        except dns.exception.Timeout:
            raise DnsFailure(f"the look-up of {key[0]} {kind} timed out "
                             f"(asked {self.describe})") from None
        except (dns.exception.DNSException, ValueError) as exc:
            raise DnsFailure(f"the look-up of {key[0]} {kind} failed: {exc}") from None
        self._answers[key] = records
        return records

    def txt(self, name: str) -> list[list[bytes]]:
        """Each TXT record at `name` as its list of character-strings."""
        return [list(r.strings) for r in self._ask(name, "TXT")]  # type: ignore[attr-defined]

    def addresses(self, name: str, kinds: tuple[str, ...] = ("A", "AAAA")) -> list[str]:
        """The IPv4 and IPv6 addresses of `name` (`localhost` is loopback, as RFC 6761 has
        it, and an address literal is itself)."""
        literal = _literal(name)
        if literal is not None:
            return [literal]
        if name.lower().rstrip(".") == "localhost":
            return [a for a, kind in (("127.0.0.1", "A"), ("::1", "AAAA")) if kind in kinds]
        found = []
        for kind in kinds:
            found += [r.address for r in self._ask(name, kind)]  # type: ignore[attr-defined]
        return found

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, host) of each MX record, by preference; "." is a null MX."""
        records = self._ask(name, "MX")
        return sorted((r.preference, r.exchange.to_text(omit_final_dot=True) or ".")  # type: ignore[attr-defined]
                      for r in records)

    def ptr(self, address: str) -> list[str]:
        """The names the reverse zone gives for `address`."""
        reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        return [r.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
                for r in self._ask(reverse, "PTR")]


def _literal(name: str) -> str | None:
    text = name.strip("[]")
    try:
        return str(ipaddress.ip_address(text.removeprefix("IPv6:")))
    except ValueError:
        return None


def _reason(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    for error in errors:
        text = str(error[-1]) if isinstance(error, tuple) else str(error)
        if text:
            return text
    return "SERVFAIL or REFUSED"
