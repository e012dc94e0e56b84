"""A real DNS server for the tests: Debian's dnsmasq, unprivileged, on a loopback port,
answering only the records a test gives it.

    records = Records()
    records.txt("example.be", "v=spf1 ip4:192.0.2.10 -all")
    records.txt("mail2026._domainkey.example.be", "v=DKIM1; k=rsa; p=MIIB…")  # cut in 255s
    records.txt("sel._domainkey.example.be", "part one", "part two")  # one record, 2 strings
    records.mx("example.be", "mx.example.be", 10)
    records.host("mx.example.be", "192.0.2.25")  # A (and the PTR dnsmasq derives)
    records.address("mail.example.be", "192.0.2.10")  # A only, no PTR
    records.ptr("192.0.2.10", "mail.example.be")
    with DnsServer(records) as dns:
        resolver = Resolver(dns.nameserver)  # "127.0.0.1:PORT"

dnsmasq is started with `--no-resolv --no-hosts --local=/#/`: it asks nobody upstream,
reads neither /etc/resolv.conf nor /etc/hosts, and is authoritative for every name, so a
name it was not given is NXDOMAIN (a name with other records: an empty answer), as from a
real zone. The records go in a configuration file of their own (`--conf-file`, instead of
/etc/dnsmasq.conf): only there does dnsmasq read quoted strings, so a string may hold a
comma (a DMARC rua= list) and the strings of one record stay as given. A string longer
than 255 bytes is cut into 255-byte strings by dnsmasq itself, as a DNS host that does it
right would.

As root (CI), dnsmasq binds its port and then runs as `nobody` (--user); otherwise as the
user running the tests. It listens on 127.0.0.1 only (UDP and TCP), on a free port; the
start waits until it answers a query, never for a fixed time. `--host-record` makes the
PTR too: use `address()` for an A record without one, `ptr()` for a PTR of your choice
(it wins over the derived one).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.support.waiting import wait_for

__all__ = ["DnsServer", "Records", "find_dnsmasq"]

HOST = "127.0.0.1"
PROBE = "dnsserver-ready.test"  # a name the server always answers, to know it is up


def find_dnsmasq() -> str | None:
    """The dnsmasq binary (Debian: /usr/sbin/dnsmasq, from dnsmasq-base)."""
    return shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq",) if os.access(p, os.X_OK)), None)


def _quoted(text: str) -> str:
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"no quotes, backslashes or newlines in a test record: {text!r}")
    return f'"{text}"'


@dataclass
class Records:
    """The zone a test serves, as dnsmasq configuration lines."""

    lines: list[str] = field(default_factory=list)

    def txt(self, name: str, *strings: str) -> Records:
        """One TXT record at `name` made of `strings` (call again for a second record)."""
        self.lines.append(f"txt-record={name},{','.join(_quoted(s) for s in strings)}")
        return self

    def mx(self, name: str, host: str, preference: int = 10) -> Records:
        self.lines.append(f"mx-host={name},{host},{preference}")
        return self

    def host(self, name: str, *addresses: str) -> Records:
        """A (and AAAA) records of `name`, and the PTR of each address to it."""
        self.lines.append(f"host-record={name},{','.join(addresses)}")
        return self

    def address(self, name: str, address: str) -> Records:
        """An A (or AAAA) record of `name` (and its subdomains) without a PTR."""
        self.lines.append(f"address=/{name}/{address}")
        return self

    def ptr(self, address: str, name: str) -> Records:
        reverse = ipaddress.ip_address(address).reverse_pointer
        self.lines.append(f"ptr-record={reverse},{name}")
        return self


def _free_port() -> int:
    """A port free for UDP and TCP on loopback now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the DNS server")


class DnsServer:
    """dnsmasq serving `records` on 127.0.0.1:`port` while in the `with` block."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None

    @property
    def nameserver(self) -> str:
        return f"{HOST}:{self.port}"

    def _command(self, binary: str, config: Path) -> list[str]:
        command = [binary, f"--port={self.port}", "--no-resolv", "--no-hosts",
                   f"--conf-file={config}", "--keep-in-foreground", "--pid-file=",
                   f"--listen-address={HOST}", "--bind-interfaces", "--local=/#/",
                   "--log-facility=-"]
        if os.geteuid() == 0:
            command.append("--user=nobody")
        return command

    def start(self) -> DnsServer:
        binary = find_dnsmasq()
        if binary is None:
            raise RuntimeError("dnsmasq not found: apt-get install dnsmasq-base (make test "
                               "does when run as root)")
        self._folder = Path(tempfile.mkdtemp(prefix="mailer-dns-"))
        self._folder.chmod(0o755)
        config = self._folder / "records.conf"
        config.write_text("\n".join([f"txt-record={PROBE},ready", *self.records.lines]) + "\n",
                          encoding="ascii")
        config.chmod(0o644)
        last = ""
        for _attempt in range(3):  # the port may be taken between choosing and binding it
            self.port = _free_port()
            log = (self._folder / "log").open("wb")
            self._process = subprocess.Popen(
                self._command(binary, config), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            try:
                wait_for(self._ready, f"dnsmasq answering on {self.nameserver}",
                         state=self._log)
                return self
            except AssertionError:
                last = self._log()
                self._end()
        self.stop()
        raise RuntimeError(f"dnsmasq did not start: {last}")

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError("dnsmasq stopped")
        query = dns.message.make_query(PROBE, "TXT")
        try:
            answer = dns.query.udp(query, HOST, port=self.port, timeout=0.5)
        except (dns.exception.Timeout, OSError):
            return False
        return answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)

    def _log(self) -> str:
        path = self._folder / "log" if self._folder else None
        text = path.read_text(errors="replace") if path and path.exists() else ""
        return text.strip()[-1500:] or "(nothing logged)"

    def _end(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        self._end()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
