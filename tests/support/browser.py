"""Headless Debian Chromium driven by Playwright's sync API, for tests that look at pages.

    from tests.support.browser import open_browser, shot

    with open_browser() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        shot(page, tmp_path, "home")  # -> tmp_path / "home.png", the full page

Playwright's own browser download cannot work here (no network but package registries),
so it drives Debian's `chromium` package at /usr/bin/chromium (the Makefile installs it).
The tests use it through the `browser`, `page` and `screenshots` fixtures of conftest.py,
which keep one Chromium for the whole session (`SharedBrowser`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "SharedBrowser", "open_browser", "shot"]

CHROMIUM = Path("/usr/bin/chromium")

# As root, with no network but loopback and the package registries. Playwright already
# passes most of these itself; they are repeated so that they hold whatever it does in a
# later release. It also makes a fresh, empty profile (--user-data-dir) for every launch
# and refuses one in `args`.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # Chromium will not start as root with its sandbox on
    "--disable-gpu",  # no GPU and no display: render in software, probe for neither
    "--disable-quic",  # no QUIC (UDP) attempts at the outside
    "--no-first-run",
    # Without these three, Chromium calls Google's update, variations and sync services at
    # every start; the closed network refuses them, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def open_browser() -> Iterator[Browser]:
    """Start Playwright and Chromium, headless; close both on the way out.

    The sync API must not be used inside a running asyncio loop (Playwright refuses): call
    this from plain sync code, as pytest runs a sync test.
    """
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install the Debian package chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page: Page, folder: Path, name: str) -> Path:
    """Save a full-page PNG of `page` as folder/name.png (folder made if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


class SharedBrowser:
    """One Chromium for many tests of one thread, out of asyncio's way between them.

    Playwright's sync API runs its own asyncio loop in a greenlet of this thread, and after
    every call it marks that loop as the thread's running loop (`wait_for_future` in
    playwright/_impl/_greenlets.py). While a browser is open, `asyncio.run()` anywhere in
    the thread then fails with "cannot be called from a running event loop": in any test
    that runs after the first browser test, for as long as the browser is kept. So the mark
    is taken off while no test uses the browser, and put back for each one that does
    (`lend()`). Playwright itself sets the mark the same way, with the same function.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._browser = self._stack.enter_context(open_browser())
        self._loop = asyncio.get_running_loop()  # Playwright's, marked by the launch
        asyncio._set_running_loop(None)

    @contextmanager
    def lend(self) -> Iterator[Browser]:
        """The browser, usable inside the block only."""
        asyncio._set_running_loop(self._loop)
        try:
            yield self._browser
        finally:
            asyncio._set_running_loop(None)

    def close(self) -> None:
        """Close Chromium and stop Playwright (which leaves no loop marked)."""
        asyncio._set_running_loop(self._loop)
        self._stack.close()
