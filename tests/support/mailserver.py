"""A real IMAP and POP3 server for the tests: Debian's dovecot, unprivileged, on loopback.

The return-path sources (mailer/feedback/sources.py) talk to mail servers the engine does
not control, so they are tested against the server most of them are: dovecot, started the
way tests/support/pgserver.py starts PostgreSQL. Everything lives in a fresh temporary
folder (configuration, sockets, logs, a certificate made here, the mailboxes): nothing
under /etc/dovecot or /run is read or written, and nothing is left behind.

* It listens on 127.0.0.1 only, on four free ports: IMAP (with STARTTLS), IMAPS, POP3
  (with STLS) and POP3S. The certificate is self-signed for localhost and 127.0.0.1;
  `cafile` is its PEM, so a client that trusts `cafile` verifies it like any other.
* Every dovecot process runs as one unprivileged user: as root (CI), the `dovecot` system
  user the package creates (or `nobody`); otherwise whoever runs the tests. dovecot then
  runs "rootless": logins are not chrooted and the mail belongs to that same user.
* `add_user()` makes a new mail account (a passwd-file of its own: dovecot looks at a
  changed passwd-file at most once a second), so each test has mailboxes of its own on
  the one server of the session.
* `client(user)` is a verified, logged-in IMAP connection for setting up and checking
  (APPEND, folders, flags) over the protocol, as a mail client would see them.

    server = start_mailserver()
    user = server.add_user()
    server.deliver(user, b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    url = server.url("imaps", user)          # imaps://t1%40example.be@127.0.0.1:PORT/INBOX
    ...
    server.stop()
"""

from __future__ import annotations

import atexit
import datetime
import imaplib
import ipaddress
import itertools
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["MailServer", "MailUser", "find_dovecot", "start_mailserver"]

HOST = "127.0.0.1"
DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}


def find_dovecot() -> str | None:
    """The dovecot binary (Debian: /usr/sbin/dovecot, from dovecot-core)."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.path.exists(p)),
        None)


@dataclass(frozen=True)
class MailUser:
    name: str  # the login, e.g. t3@example.be
    password: str
    maildir: Path  # where dovecot keeps its mail (Maildir++: INBOX is new/ and cur/)


class MailServer:
    """A running dovecot; `stop()` ends it and removes its folder."""

    def __init__(self, binary: str, base: Path, ports: dict[str, int],
                 account: pwd.struct_passwd, as_user: bool) -> None:
        self.binary, self.base, self.ports = binary, base, ports
        self.host = HOST
        self._account, self._as_user = account, as_user
        self.config = base / "dovecot.conf"
        self.log = base / "dovecot.log"
        self.passwd = base / "passwd"
        self.cafile = str(base / "cert.pem")
        self._numbers = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None

    # --- starting and stopping ---

    def _write_config(self) -> None:
        dh = "/usr/share/dovecot/dh.pem"
        name, uid, gid = self._account.pw_name, self._account.pw_uid, self._account.pw_gid
        group = _group_name(gid)
        p = self.ports
        self.config.write_text(f"""\
# Written by tests/support/mailserver.py: a throwaway server, rootless, loopback only.
base_dir = {self.base}/run
state_dir = {self.base}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap pop3
listen = {HOST}
default_login_user = {name}
default_internal_user = {name}
default_internal_group = {group}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
ssl = yes
ssl_cert = <{self.base}/cert.pem
ssl_key = <{self.base}/key.pem
{f"ssl_dh = <{dh}" if os.path.exists(dh) else ""}
disable_plaintext_auth = no
# Wrong passwords are tested: no 2 s delay per failure (auth_failure_delay), and no
# growing penalty for 127.0.0.1 slowing down every later login (service anvil below).
auth_failure_delay = 0
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.base}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {p["imap"]}
  }}
  inet_listener imaps {{
    port = {p["imaps"]}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {p["pop3"]}
  }}
  inet_listener pop3s {{
    port = {p["pop3s"]}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth-worker {{
  user = {name}
}}
""")

    def start(self, timeout: float = 60.0) -> None:
        for folder in ("run", "state", "home", "passwd"):
            (self.base / folder).mkdir(exist_ok=True)
        _make_certificate(self.base)
        self._write_config()
        self._chown_tree()
        kwargs: dict = {}
        if self._as_user:
            kwargs = {"user": self._account.pw_uid, "group": self._account.pw_gid,
                      "extra_groups": []}
        self._process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config)], cwd=self.base,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/bin"), "LC_ALL": "C"},
            start_new_session=True, **kwargs)
        deadline = time.monotonic() + timeout
        waiting = set(self.ports.values())
        while waiting:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot stopped at start (exit {self._process.returncode}):"
                                   f" {self._why()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not listen within {timeout:.0f} s: "
                                   f"{self._why()}")
            waiting = {port for port in waiting if not _listens(port)}
            if waiting:
                time.sleep(0.05)

    def _why(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        if self._process is not None and self._process.poll() is not None \
                and self._process.stderr is not None:
            text += self._process.stderr.read().decode(errors="replace")
        return text.strip()[-1500:] or "(nothing logged)"

    def _chown_tree(self) -> None:
        if not self._as_user:
            return
        uid, gid = self._account.pw_uid, self._account.pw_gid
        for folder, dirs, files in os.walk(self.base):
            os.chown(folder, uid, gid)
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, gid)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # the master stops its children and exits
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(self.base, ignore_errors=True)

    # --- accounts and mail ---

    def add_user(self, password: str | None = None) -> MailUser:
        """A new account `tN@example.be` with empty mailboxes."""
        number = next(self._numbers)
        user = MailUser(f"t{number}@example.be", password or f"pw-{number}-geheim",
                        self.base / "home" / f"t{number}@example.be" / "Maildir")
        staged = self.passwd / f".{user.name}"
        staged.write_text(f"{user.name}:{{PLAIN}}{user.password}::::::\n")
        if self._as_user:
            os.chown(staged, self._account.pw_uid, self._account.pw_gid)
        staged.replace(self.passwd / user.name)  # complete when dovecot first opens it
        return user

    def url(self, scheme: str, user: MailUser, folder: str | None = "INBOX") -> str:
        """`imaps://t1%40example.be@127.0.0.1:PORT/INBOX` (no folder for POP3)."""
        path = f"/{quote(folder)}" if folder and scheme.startswith("imap") else ""
        return f"{scheme}://{quote(user.name, safe='')}@{HOST}:{self.ports[scheme]}{path}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)

    def client(self, user: MailUser) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS connection (certificate verified); the caller logs out."""
        conn = imaplib.IMAP4_SSL(HOST, self.ports["imaps"], ssl_context=self.context(),
                                 timeout=60)
        conn.login(user.name, user.password)
        return conn

    def deliver(self, user: MailUser, *messages: bytes, folder: str = "INBOX") -> None:
        """Put messages into a folder over IMAP (APPEND), as a delivery would."""
        conn = self.client(user)
        try:
            for data in messages:
                typ, said = conn.append(_q(folder), "", None, data)
                if typ != "OK":
                    raise RuntimeError(f"APPEND to {folder} failed: {said}")
        finally:
            conn.logout()

    def messages(self, user: MailUser, folder: str = "INBOX") -> list[bytes] | None:
        """The messages of a folder in UID order (None when the folder does not exist),
        read with BODY.PEEK so nothing about them changes."""
        conn = self.client(user)
        try:
            typ, _ = conn.select(_q(folder), readonly=True)
            if typ != "OK":
                return None
            typ, data = conn.uid("SEARCH", "ALL")
            uids = data[0].split() if data and data[0] else []
            found = []
            for uid in uids:
                typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                found += [part[1] for part in data if isinstance(part, tuple)]
            return found
        finally:
            conn.logout()

    def flags(self, user: MailUser, folder: str = "INBOX") -> list[str]:
        """The flags of each message in a folder, in UID order, e.g. ['\\\\Seen']."""
        conn = self.client(user)
        try:
            conn.select(_q(folder), readonly=True)
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            return [(d.decode() if isinstance(d, bytes) else "") for d in data if d]
        finally:
            conn.logout()


def _q(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _listens(port: int) -> bool:
    """True once something accepts connections on the port."""
    try:
        with socket.create_connection((HOST, port), timeout=5):
            return True
    except OSError:
        return False


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _make_certificate(folder: Path) -> None:
    """A self-signed certificate for localhost and 127.0.0.1 (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailer test IMAP server")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile = folder / "key.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)


def _account() -> tuple[pwd.struct_passwd, bool]:
    """Who the dovecot processes run as, and whether we must switch to that user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()), False
    for name in ("dovecot", "nobody"):
        try:
            return pwd.getpwnam(name), True
        except KeyError:
            continue
    raise RuntimeError("Running as root and no dovecot or nobody user to run dovecot as")


def start_mailserver() -> MailServer:
    """Start a fresh dovecot (stopped again at exit at the latest)."""
    binary = find_dovecot()
    if binary is None:
        raise RuntimeError("dovecot not found: install the Debian packages dovecot-imapd "
                           "and dovecot-pop3d (make test does when run as root)")
    account, as_user = _account()
    last: Exception | None = None
    for _attempt in range(3):  # a port may be taken between choosing and binding it
        base = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        base.chmod(0o755)
        server = MailServer(binary, base, dict(zip(DEFAULT_PORTS, _free_ports(4),
                                                   strict=True)), account, as_user)
        try:
            server.start()
        except RuntimeError as exc:
            last = exc
            server.stop()
            continue
        atexit.register(server.stop)
        return server
    raise RuntimeError(f"Could not start dovecot: {last}")
