"""`public_url`: https, and answering the one-click POST a mailbox provider sends.

The probe is what Gmail's unsubscribe button sends (RFC 8058): a POST of
`List-Unsubscribe=One-Click` to /u/TOKEN, here with a token of the right form that is
nobody's (random bytes: its signature cannot match), so no one is unsubscribed. The
engine answers it like any unknown link, with its 404 page; a proxy in front that turns
POSTs away (405), asks for a login (401/403), redirects (3xx) or fails (5xx) shows up.

The host is looked up with the doctor's resolver; TLS is verified against this machine's
CAs (SSL_CERT_FILE / SSL_CERT_DIR point OpenSSL at others). Not reaching it is a
warning: the doctor may run where the public address is not reachable (offline, or
inside the network the proxy serves).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import secrets
import socket
import ssl
from urllib.parse import urlsplit

from mailer.doctor.findings import GMAIL_ONE_CLICK, Finding
from mailer.doctor.resolver import DnsFailure, Resolver

__all__ = ["check_public_url", "probe_token"]

BODY = b"List-Unsubscribe=One-Click"


def probe_token() -> str:
    """46 characters of base64url, as a real token has: random, so nobody's."""
    return base64.urlsafe_b64encode(secrets.token_bytes(34)).decode().rstrip("=")


class _Https(http.client.HTTPSConnection):
    """An HTTPS connection to an address the doctor resolved, checked for the URL's host."""

    def __init__(self, host: str, address: str, port: int, **kwargs: object) -> None:
        super().__init__(host, port, **kwargs)  # type: ignore[arg-type]
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_public_url(public_url: str, resolver: Resolver, *, timeout: float) -> list[Finding]:
    parts = urlsplit(public_url)
    host = parts.hostname or ""
    name = host if host and host != "localhost" and not _is_address(host) \
        else "nieuws.example.be"
    fix_https = (f'In mailer.toml: public_url = "https://{name}", '
                 "served by a reverse proxy with a certificate in front of `mailer serve` "
                 "(docs/web.md).")
    if parts.scheme != "https":
        return [Finding("public_url", "fail", f"public_url is {public_url}: not https, so "
                        "the List-Unsubscribe URL of every mail is not one-click "
                        "(RFC 8058 requires an https URI).", GMAIL_ONE_CLICK, fix_https)]
    if not host:
        return [Finding("public_url", "fail", f"public_url {public_url} names no host.",
                        GMAIL_ONE_CLICK, fix_https)]
    findings = [Finding("public_url", "ok", f"public_url is https ({public_url}).")]
    return findings + [_probe(parts.path.rstrip("/"), host, parts.port or 443, resolver,
                              timeout)]


def _probe(base: str, host: str, port: int, resolver: Resolver, timeout: float) -> Finding:
    path = f"{base}/u/{probe_token()}"
    where = f"https://{host}{'' if port == 443 else f':{port}'}{path.rsplit('/', 1)[0]}/…"
    unreachable = ("Mailbox providers reach it from the internet; if this machine cannot "
                   "(offline, or inside the network behind the proxy), check from "
                   "elsewhere. " + GMAIL_ONE_CLICK)
    try:
        addresses = resolver.addresses(host)
    except DnsFailure as exc:
        return Finding("one_click", "warn", f"{host} was not looked up: {exc}.", unreachable,
                       "")
    if not addresses:
        return Finding("one_click", "fail", f"{host} (public_url) has no address in DNS: "
                       "no link in any mail works.", GMAIL_ONE_CLICK,
                       f"Publish {host}. IN A ADDRESS-OF-YOUR-PROXY")
    errors = []
    for address in addresses:
        connection = _Https(host, address, port, timeout=timeout,
                            context=ssl.create_default_context())
        try:
            connection.request("POST", path, body=BODY, headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "mailer-doctor (one-click probe, RFC 8058)"})
            status = connection.getresponse().status
        except ssl.SSLCertVerificationError as exc:
            return Finding("one_click", "fail", f"POST {where}: the certificate is not valid "
                           f"for {host} ({exc.verify_message}).", "Providers' one-click POSTs "
                           f"fail on it, and browsers warn people. {GMAIL_ONE_CLICK}",
                           f"Give the proxy a valid certificate for {host} (e.g. Let's "
                           "Encrypt).")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{address}: {' '.join((str(exc) or type(exc).__name__).split())}")
            continue
        finally:
            connection.close()
        return _answer(status, where)
    return Finding("one_click", "warn", f"POST {where} did not get through "
                   f"({'; '.join(errors)}).", unreachable,
                   "Check that `mailer serve` runs and the proxy passes POST /u/… to it.")


def _answer(status: int, where: str) -> Finding:
    what = f"POST {where} (a one-click unsubscribe with an unknown token) answers {status}"
    if status >= 500:
        return Finding("one_click", "fail", f"{what}: the server fails.", GMAIL_ONE_CLICK,
                       "Look at the log of `mailer serve` and of the proxy.")
    if status in (401, 403, 405):
        return Finding("one_click", "fail", f"{what}: POSTs do not reach the engine.",
                       GMAIL_ONE_CLICK, "Let the proxy pass POST /u/… to `mailer serve` "
                       "without a login (docs/web.md).")
    if 300 <= status < 400:
        return Finding("one_click", "warn", f"{what}: a redirect, which providers do not "
                       "follow with the POST.", GMAIL_ONE_CLICK,
                       "Serve /u/… at public_url itself (no redirect to another host or "
                       "path).")
    return Finding("one_click", "ok", f"{what}, as the engine does for a link that is "
                   "nobody's: one-click unsubscribe is reachable.")
