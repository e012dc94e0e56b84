"""`mailer serve` as a user runs it: it serves, it stops on SIGTERM, and a taken port is
one line and exit 1."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

from tests.support.waiting import wait_for
from tests.support.webserver import free_port


def healthz(server: subprocess.Popen[bytes], port: int) -> bool:
    """True once /healthz answers ok (with the security headers); False while nothing
    listens yet; the server's stderr if it ended."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok"
            assert "content-security-policy" in r.headers
            return True
    except OSError:
        assert server.poll() is None, server.stderr.read().decode()
        return False


def test_mailer_serve_serves_and_stops_cleanly(run, project):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mailer", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: healthz(server, port), "mailer serve to answer on /healthz",
                 interval=0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    # uvicorn shuts down gracefully, then ends by the signal it got (systemd counts
    # SIGTERM as a clean stop)
    assert server.returncode in (0, -signal.SIGTERM), err.decode()
    assert f"Serving on http://127.0.0.1:{port}" in err.decode()
    assert "Traceback" not in err.decode()


def test_a_taken_port_is_one_line_and_exit_1(run, project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: Cannot listen on 127.0.0.1:{port}")
