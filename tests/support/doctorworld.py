"""A sender set up right, for `mailer doctor`: its zone, its relay, its web server, its key.

The tests of the doctor (tests/test_doctor.py) and its benchmark (bench/doctor_bench.py)
start from this and break one thing at a time:

* the domain example.be, whose list nieuwsbrief sends From nieuws@example.be, signed
  with d=example.be (selector mail2026, an RSA key made here), envelope
  bounces+…@bounce.example.be;
* mail leaves from 192.0.2.10 (a documentation address: `--sending-ip`, since the relay is
  on loopback), whose PTR is mail.example.be, which resolves back to it and is the EHLO
  name;
* the relay: tests/support/smtpserver.py with STARTTLS, its certificate for localhost
  (the transport trusts it with ?cafile=), AUTH after STARTTLS only, a password;
* public_url https://nieuws.example.be:PORT: the real web app under uvicorn with TLS, a
  certificate for nieuws.example.be from a CA made here (the doctor trusts it through
  SSL_CERT_FILE, as OpenSSL does);
* the zone, served by dnsmasq (tests/support/dnsserver.py): SPF with an include, the DKIM
  key, DMARC p=quarantine with reports, MX for the bounce domain, PTR and A records.

    world = World.make(tmp_path)
    world.zone.spf = [("v=spf1 +all",)]                  # break something
    with world.running() as env:                         # DNS, relay and web up
        result = run_doctor(env)                         # the CLI in-process, --json
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailer.cli import cli
from mailer.content.dkim import private_pem, txt_record
from mailer.project import Project
from mailer.scaffold import create_project
from mailer.web.app import create_app
from tests.support.dnsserver import DnsServer, Records
from tests.support.smtpserver import SmtpServer
from tests.support.webserver import WebServer

__all__ = ["DOMAIN", "SENDING_IP", "World", "Zone", "arguments", "make_rsa_key", "run_doctor"]

DOMAIN = "example.be"
BOUNCE_DOMAIN = "bounce.example.be"
SELECTOR = "mail2026"
SENDING_IP = "192.0.2.10"
HELO = "mail.example.be"
WEB_HOST = "nieuws.example.be"
RELAY_USER, RELAY_PASSWORD = "mailer", "relay-secret"


def make_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass
class Zone:
    """The records of example.be and its names. Each field is a list of TXT records (each
    a tuple of strings) or a switch; change them before `running()`."""

    dkim_value: str
    spf: list[tuple[str, ...]] = field(default_factory=lambda: [
        ("v=spf1 include:_spf.example.be ~all",)])
    spf_include: list[tuple[str, ...]] = field(default_factory=lambda: [
        (f"v=spf1 ip4:{SENDING_IP} ip4:198.51.100.0/24 -all",)])
    dkim: list[tuple[str, ...]] | None = None  # None: the key's record, as one value
    dmarc: list[tuple[str, ...]] = field(default_factory=lambda: [
        ("v=DMARC1; p=quarantine; rua=mailto:dmarc@example.be",)])
    mx: bool = True
    ptr: str | None = HELO  # the PTR of SENDING_IP
    helo_address: str = SENDING_IP  # what HELO resolves to
    extra: Records = field(default_factory=Records)  # more records a test adds

    def records(self) -> Records:
        records = Records(list(self.extra.lines))
        for name, values in ((BOUNCE_DOMAIN, self.spf), ("_spf.example.be", self.spf_include),
                             (f"{SELECTOR}._domainkey.{DOMAIN}",
                              self.dkim if self.dkim is not None else [(self.dkim_value,)]),
                             (f"_dmarc.{DOMAIN}", self.dmarc)):
            for strings in values:
                records.txt(name, *strings)
        if self.mx:
            records.mx(BOUNCE_DOMAIN, f"mx.{DOMAIN}", 10)
            records.host(f"mx.{DOMAIN}", "198.51.100.25")
        records.address(HELO, self.helo_address)
        records.address(WEB_HOST, "127.0.0.1")
        if self.ptr:
            records.ptr(SENDING_IP, self.ptr)
        return records


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _web_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for WEB_HOST: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mailer test CA"))
          .issuer_name(_name("mailer test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(WEB_HOST)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(WEB_HOST)]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "web.pem", folder / "web.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class World:
    folder: Path  # the project
    key: rsa.RSAPrivateKey
    zone: Zone
    env: dict[str, str]  # MAILER_* settings the doctor runs with
    starttls: bool = True  # whether the relay offers STARTTLS
    implicit_tls: bool = False  # TLS from the first byte instead (smtps://)
    relay_host: str = "localhost"  # the name the transport gives the relay
    https: bool = True  # whether public_url is https (else http, and no web server)

    @classmethod
    def make(cls, tmp: Path, key: rsa.RSAPrivateKey | None = None) -> World:
        folder = tmp / "news"
        create_project(folder)
        key = key or make_rsa_key()
        world = cls(folder, key, Zone(dkim_value=txt_record(key)), {})
        world.set_key(key)
        world.env.update({
            "MAILER_CONFIG": str(folder / "mailer.toml"),
            "MAILER_SENDING__DOMAIN": DOMAIN, "MAILER_SENDING__BOUNCE_DOMAIN": BOUNCE_DOMAIN,
            "MAILER_SENDING__HELO_NAME": HELO, "MAILER_SENDING__DKIM_SELECTOR": SELECTOR,
            "MAILER_SENDING__DKIM_KEY": "dkim/key.pem",
            "MAILER_SMTP_PASSWORD": RELAY_PASSWORD})
        result = CliRunner().invoke(cli, ["--config", str(folder / "mailer.toml"), "lists",
                                          "sync"], env=world.env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return world

    def set_key(self, key: rsa.RSAPrivateKey) -> None:
        """Sign with `key` (the zone keeps publishing what it published)."""
        path = self.folder / "dkim" / "key.pem"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(private_pem(key))
        path.chmod(0o600)
        self.key = key

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, str]]:
        """DNS, relay and web server up; yields the environment to run the doctor in."""
        env = dict(self.env)
        with contextlib.ExitStack() as stack:
            dns = stack.enter_context(DnsServer(self.zone.records()))
            smtp = stack.enter_context(SmtpServer(
                starttls=self.starttls and not self.implicit_tls,
                implicit_tls=self.implicit_tls, auth=(RELAY_USER, RELAY_PASSWORD)))
            scheme = "smtps" if self.implicit_tls else "smtp"
            env["MAILER_DELIVERY__TRANSPORT"] = (
                f"{scheme}://{RELAY_USER}@{self.relay_host}:{smtp.port}?cafile={smtp.cafile}")
            if self.https:
                ca, cert, key = _web_certificate(self.folder)
                web = WebServer(create_app(Project.load(str(self.folder / "mailer.toml"))))
                web.config.ssl_certfile, web.config.ssl_keyfile = str(cert), str(key)
                stack.enter_context(web)
                env["MAILER_PUBLIC_URL"] = f"https://{WEB_HOST}:{web.port}"
                env["SSL_CERT_FILE"] = str(ca)
            else:
                env["MAILER_PUBLIC_URL"] = f"http://{WEB_HOST}"
            env["DOCTOR_NAMESERVER"] = dns.nameserver
            yield env


def arguments(env: dict[str, str], *more: str) -> list[str]:
    return ["doctor", "--json", "--nameserver", env["DOCTOR_NAMESERVER"],
            "--sending-ip", SENDING_IP, "--timeout", "10", *more]


def run_doctor(env: dict[str, str], *more: str) -> tuple[int, dict]:
    """`mailer doctor --json` in this process, in `env` (set in os.environ meanwhile, where
    OpenSSL reads SSL_CERT_FILE): (exit code, the report)."""
    result = CliRunner().invoke(cli, arguments(env, *more), env=env, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)
