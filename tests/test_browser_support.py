"""The browser harness (tests/support/browser.py and its fixtures) against a real server:
Chromium fills in and posts a form on loopback, and nothing leaves the machine."""

from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import shot

FORM = """<!doctype html><html><head><meta charset="utf-8"><title>Subscribe</title></head>
<body><h1>Subscribe</h1>
<form method="post" action="/subscribe">
  <label>Name <input name="name" required></label>
  <button type="submit">Subscribe</button>
</form></body></html>"""

THANKS = """<!doctype html><html><head><meta charset="utf-8"><title>Thanks</title></head>
<body><h1>Thanks</h1><p id="subscribed">{names}</p></body></html>"""


class SubscribeServer(ThreadingHTTPServer):
    """A form at /, a POST to /subscribe that records the name, and /thanks that lists the
    names recorded so far: the result page shows server-side state, not an echo."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SubscribeHandler)
        self.names: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class SubscribeHandler(BaseHTTPRequestHandler):
    server: SubscribeServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/":
            self._send(200, FORM)
        elif self.path == "/thanks":
            self._send(200, THANKS.format(names=html.escape(", ".join(self.server.names))))
        else:
            self._send(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        form = parse_qs(self.rfile.read(length).decode("utf-8"))
        self.server.names.append(form["name"][0])
        self.send_response(303)  # POST/redirect/GET, as a real subscribe page does
        self.send_header("Location", "/thanks")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows failures, not every request."""


@pytest.fixture
def server() -> Iterator[SubscribeServer]:
    server = SubscribeServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_form_post_reaches_server_and_result_page_shows_it(page: Page, server, screenshots):
    hosts: list[str | None] = []
    page.on("request", lambda request: hosts.append(urlsplit(request.url).hostname))

    page.goto(server.url + "/")
    page.get_by_label("Name").fill("Zoë <O'Brien>")
    form_png = shot(page, screenshots, "form")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(server.url + "/thanks")
    result_png = shot(page, screenshots, "thanks")

    assert server.names == ["Zoë <O'Brien>"]  # UTF-8 and markup survive the round trip
    expect(page.locator("#subscribed")).to_have_text("Zoë <O'Brien>")
    for png in (form_png, result_png):
        assert png.parent == screenshots
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert hosts and set(hosts) == {"127.0.0.1"}  # nothing but the server under test


@pytest.mark.parametrize("page_locale", ["nl-BE"])
def test_page_locale_sets_navigator_language_and_accept_language(page: Page, server):
    headers = page.goto(server.url + "/").request.all_headers()

    assert page.evaluate("navigator.language") == "nl-BE"
    assert headers["accept-language"].startswith("nl-BE")


def test_asyncio_run_works_in_a_test_after_a_browser_test():
    """The session's Chromium is still open here; its loop must not look like ours."""
    assert asyncio.run(asyncio.sleep(0, result="ran")) == "ran"
