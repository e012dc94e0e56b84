"""A throwaway PostgreSQL server for the tests, started as an unprivileged user.

postgres refuses to run as root, and the tests (and CI) run as root: the data directory
is made in a fresh temporary folder owned by the `postgres` system user (or `nobody`),
and initdb / pg_ctl run as that user. It listens on 127.0.0.1 only, on a free port, with
durability switched off for speed.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

__all__ = ["PgServer", "find_pg_bindir", "start_postgres"]


def find_pg_bindir() -> str | None:
    """The newest PostgreSQL server binaries on this machine."""
    env = os.environ.get("MAILER_TEST_PG_BINDIR")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[3]) if p.split("/")[3].isdigit() else 0)
    if found:
        return str(Path(found[-1]).parent)
    initdb = shutil.which("initdb")
    return str(Path(initdb).parent) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A running server; `url(db)` gives a SQLAlchemy URL for one of its databases."""

    def __init__(self, bindir: str, base: Path, port: int, user: pwd.struct_passwd | None):
        self.bindir, self.base, self.port, self._user = bindir, base, port, user
        self.datadir = base / "data"
        self.role = "postgres"
        self._stopped = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid,
                      "extra_groups": []}
        return subprocess.run([os.path.join(self.bindir, args[0]), *args[1:]],
                              capture_output=True, text=True, cwd=self.base,
                              env={**os.environ, "LC_ALL": "C"}, **kwargs)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.role}@127.0.0.1:{self.port}/{dbname}"

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.role,
                               dbname="postgres", autocommit=True, connect_timeout=5)

    def create_database(self, name: str, template: str | None = None) -> str:
        with self._connect() as conn:
            sql = f'CREATE DATABASE "{name}"'
            if template:
                sql += f' TEMPLATE "{template}"'
            conn.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        init = self._run("initdb", "-D", str(self.datadir), "-U", self.role, "-A", "trust",
                         "-E", "UTF8", "--locale=C", "-N")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-800:]}")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   "-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        started = self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.base / "log"),
                            "-o", options, "-w", "-t", "60", "start")
        if started.returncode != 0:
            log = (self.base / "log").read_text(errors="replace")[-1500:] \
                if (self.base / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()}\n{log}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self._connect().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PgServer:
    """Start a fresh server (stopped again at exit at the latest)."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (install postgresql-15 or "
                           "set MAILER_TEST_PG_BINDIR)")
    user = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if user is None:
            raise RuntimeError("Running as root and no postgres or nobody user to run as")
    base = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
    base.chmod(0o700)
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    last: Exception | None = None
    for _attempt in range(3):
        server = PgServer(bindir, base, _free_port(), user)
        try:
            server.start()
        except RuntimeError as exc:  # most likely the port was taken meanwhile
            last = exc
            server._run("pg_ctl", "-D", str(server.datadir), "-m", "immediate", "stop")
            shutil.rmtree(server.datadir, ignore_errors=True)
            continue
        atexit.register(server.stop)
        return server
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"Could not start PostgreSQL: {last}")
