"""Headers and limits every response and request of the web app gets.

- A strict Content-Security-Policy: nothing runs (no script at all), styles and images
  come from this site only (plus the organisation's logo, if it is elsewhere), forms post
  to this site only, and no other site may frame a page (clickjacking).
- `Referrer-Policy: no-referrer`: the token in a page's address must not travel to the
  organisation's website when someone follows a link.
- No caching of pages that carry a token; HSTS when the public address is https.
- Request bodies over `max_body` bytes get 413, whether they say their length or not.

Which address a request came from is uvicorn's business: it believes X-Forwarded-For only
from the trusted proxies (`[web] trusted_proxies`), see `mailer serve`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "client_ip", "client_key"]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def client_key(ip: str | None) -> str:
    """Whom a per-client count counts: an IPv4 address, or an IPv6 /64 (one household or
    server gets a whole /64, and would otherwise have 2^64 addresses to rotate through)."""
    if ip is None:
        return "?"
    if ":" in ip:
        try:
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
        except ValueError:
            return ip
    return ip


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


class _TooLarge(HTTPException):
    """Raised while the app reads a body that grew past the limit: Starlette answers 413."""

    def __init__(self) -> None:
        super().__init__(413, "Request too large.")


class SecurityHeaders:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, *, max_body: int, public_url: str,
                 logo_url: str = "") -> None:
        self.app = app
        self.max_body = max_body
        images = " ".join(filter(None, ["'self'", _origin(logo_url)]))
        policy = ("default-src 'none'; style-src 'self'; img-src " + images + "; "
                  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        headers = [
            (b"content-security-policy", policy.encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), "
                                    b"interest-cohort=()"),
        ]
        if public_url.startswith("https://"):
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body
                except ValueError:
                    too_large = True
                if too_large:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {name for name, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b"Request too large.\n"
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *self.headers]})
        await send({"type": "http.response.body", "body": body})
