"""The relay: it answers, offers STARTTLS, shows a certificate valid for its name, and
offers AUTH only once the connection is encrypted.

It is talked to as the transport would (mailer/delivery/transports.py): the EHLO name the
transport presents, the certificate verified against the system's CAs or the URL's
`?cafile=`, the password the secret `smtp_password`. The address comes from the doctor's
resolver, the certificate is checked for the name in the URL. Nothing is sent: the
session ends after the login (or after STARTTLS when no user is configured).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl

from mailer.delivery.transports import Relay
from mailer.doctor.findings import GMAIL_TLS, Finding
from mailer.doctor.resolver import DnsFailure, Resolver
from mailer.doctor.setup import Setup

__all__ = ["check_relays"]

_CANNOT_SEND = "Mail cannot leave: every delivery is deferred, then fails."


class _Smtp(smtplib.SMTP):
    """smtplib's client, connected to an address the doctor resolved (not the system's
    resolver), while TLS is checked against the relay's name."""

    def __init__(self, address: str, **kwargs: object) -> None:
        self._address = address
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class _SmtpTls(smtplib.SMTP_SSL, _Smtp):
    """Implicit TLS (smtps://), to the resolved address."""

    def __init__(self, address: str, **kwargs: object) -> None:
        self._address = address
        smtplib.SMTP_SSL.__init__(self, **kwargs)  # type: ignore[arg-type]


def check_relays(setup: Setup, resolver: Resolver, *, password: str | None,
                 timeout: float) -> list[Finding]:
    if setup.local_transport and not setup.relays:
        return [Finding("relay", "warn", f"[delivery] transport is {setup.local_transport}: "
                        "messages are written to a folder, nobody gets them.", "",
                        'In mailer.toml, [delivery]: transport = '
                        '"smtp://user@relay.example.be:587" (the password is the secret '
                        "smtp_password).")]
    return [_probe(relay, setup.helo, resolver, password, timeout) for relay in setup.relays]


def _context(relay: Relay) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=relay.cafile)


def _probe(relay: Relay, helo: str, resolver: Resolver, password: str | None,
           timeout: float) -> Finding:
    name = relay.describe()
    try:
        addresses = resolver.addresses(relay.host)
    except DnsFailure as exc:
        return Finding("relay", "fail", f"{name}: {exc}.", _CANNOT_SEND, "")
    if not addresses:
        return Finding("relay", "fail", f"{name}: {relay.host} has no address.", _CANNOT_SEND,
                       "Check the host in [delivery] transport.")
    errors = []
    for address in addresses:
        try:
            return _session(relay, address, helo, password, timeout)
        except (OSError, smtplib.SMTPException) as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                return _certificate(relay, exc)
            errors.append(f"{address}: {_describe(exc)}")
    return Finding("relay", "fail", f"{name} cannot be reached ({'; '.join(errors)}).",
                   _CANNOT_SEND, "Check host and port in [delivery] transport, and that "
                   "this machine may connect out to it.")


def _certificate(relay: Relay, exc: ssl.SSLCertVerificationError) -> Finding:
    trust = f"the CA in {relay.cafile}" if relay.cafile else "this machine's CAs"
    return Finding("relay", "fail", f"{relay.describe()}: the certificate is not valid for "
                   f"{relay.host} ({exc.verify_message}; checked against {trust}).",
                   f"{_CANNOT_SEND} The transport verifies the certificate, as it must "
                   "before it sends the password.",
                   f"Name the relay as its certificate does in [delivery] transport, give "
                   f"the relay a certificate for {relay.host}, or for a private CA add "
                   "?cafile=/path/to/ca.pem to the URL.")


def _session(relay: Relay, address: str, helo: str, password: str | None,
             timeout: float) -> Finding:
    name = relay.describe()
    context = _context(relay)
    if relay.implicit_tls:
        client: _Smtp = _SmtpTls(address, local_hostname=helo, timeout=timeout,
                                 context=context)
    else:
        client = _Smtp(address, local_hostname=helo, timeout=timeout)
    client._host = relay.host  # what smtplib checks the certificate for
    try:
        client.connect(relay.host, relay.port)
        code, reply = client.ehlo()
        if code != 250:
            return Finding("relay", "fail", f"{name} refused our EHLO {helo}: {code} "
                           f"{reply.decode(errors='replace')}.", _CANNOT_SEND,
                           'Set [sending] helo_name to a name the relay accepts.')
        notes = []
        if not relay.implicit_tls:
            if not relay.starttls:
                notes.append("plain SMTP (tls=none)")
                return _plain(relay, address, notes)
            if not client.has_extn("starttls"):
                return Finding("relay", "fail", f"{name} does not offer STARTTLS.",
                               f"{_CANNOT_SEND} The transport will not send in the clear "
                               f"(the password and the subscribers' data). {GMAIL_TLS}",
                               "Switch STARTTLS on at the relay, or use its TLS port: "
                               f"smtps://{relay.host}:465.")
            early_auth = client.has_extn("auth")
            client.starttls(context=context)
            client.ehlo()
            if early_auth:
                notes.append("AUTH offered before STARTTLS too (a password could be sent "
                             "in the clear by a careless client)")
        version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else "TLS"
        if relay.user:
            if not client.has_extn("auth"):
                return Finding("relay", "fail", f"{name} offers no AUTH after STARTTLS, and "
                               f"the transport logs in as {relay.user}.", _CANNOT_SEND,
                               "Drop the user from [delivery] transport if the relay "
                               "takes mail from this machine without a login.")
            if password:
                try:
                    client.login(relay.user, password)
                except smtplib.SMTPAuthenticationError as exc:
                    return Finding("relay", "fail", f"{name} refuses the login of "
                                   f"{relay.user}: {exc.smtp_code} "
                                   f"{exc.smtp_error.decode(errors='replace')}.",
                                   _CANNOT_SEND, "Check the user in [delivery] transport "
                                   "and the secret smtp_password.")
                notes.append(f"login as {relay.user} accepted")
            else:
                notes.append(f"login as {relay.user} not tried: no smtp_password")
        status = "warn" if any("before STARTTLS" in n for n in notes) else "ok"
        what = (f"{name} ({address}) answers, with {version} and a certificate valid for "
                f"{relay.host}" + (f"; {'; '.join(notes)}" if notes else "") + ".")
        return Finding("relay", status, what,
                       "" if status == "ok" else "Receivers never see this hop, but the "
                       "password can leak on it.",
                       "" if status == "ok" else "Set the relay to offer AUTH only after "
                       "STARTTLS (Postfix: smtpd_tls_auth_only = yes).")
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _plain(relay: Relay, address: str, notes: list[str]) -> Finding:
    name = relay.describe()
    if ipaddress.ip_address(address).is_loopback:
        return Finding("relay", "ok", f"{name} answers ({', '.join(notes)}, on this "
                       "machine: nothing crosses a network).")
    return Finding("relay", "fail", f"{name} is spoken to in the clear (tls=none) across the "
                   "network.", f"The password and the subscribers' data cross the network "
                   f"unencrypted. {GMAIL_TLS}",
                   f"Drop ?tls=none from [delivery] transport (STARTTLS), or use "
                   f"smtps://{relay.host}:465.")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join((str(exc) or type(exc).__name__).split())
