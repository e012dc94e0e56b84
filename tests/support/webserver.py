"""The web app served by a real uvicorn on loopback, in a thread, for the tests.

    with WebServer(create_app(project)) as web:
        response = web.request("POST", "/u/TOKEN", body=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})

Requests go over a real TCP connection with the stdlib's http.client: what a mail
provider's one-click POST or a browser sends is what the app gets.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

__all__ = ["Response", "WebServer", "free_port"]


def free_port() -> int:
    """A loopback port free now (for a server whose address must be known before it
    starts, e.g. the public_url that mails link to)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebServer:
    def __init__(self, app: object, *, port: int = 0,
                 forwarded_allow_ips: list[str] | None = None) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                     access_log=False, lifespan="on", proxy_headers=True,
                                     server_header=False,
                                     forwarded_allow_ips=forwarded_allow_ips or ["127.0.0.1"])
        self.server = uvicorn.Server(self.config)
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> WebServer:
        self._thread.start()
        deadline = time.monotonic() + 60  # a generous bound: it takes a moment when idle
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()},
                            reply.read())
        finally:
            conn.close()
