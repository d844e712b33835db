"""A real browser for UI tests: Playwright driving Debian's chromium (scripts/install-system.sh
installs it; Playwright's own browser downloads are never used), headless, on loopback only.

``browser_page`` is a fixture yielding a fresh page; import it into a test module to use it.
Every request that is not for a loopback address is aborted, so a test cannot reach (or depend
on) anything outside this machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Actions and expectations wait this long (ms) by default: the UI is a single-page app that
# loads its bundle and then the run from the API.
TIMEOUT_MS = 30_000


def _loopback_only(blocked: list[str]) -> Callable[[Route], None]:
    def handle(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    return handle


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A page of a fresh headless chromium; the browser is closed at the end of the test."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as exc:  # a dev dependency: `pip install -e '.[dev]'`
        raise RuntimeError(f"playwright is not installed ({exc}); install the dev extras") from exc
    if not shutil.which(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-system.sh")

    expect.set_options(timeout=TIMEOUT_MS)
    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", _loopback_only(blocked))
            yield context.new_page()
            context.close()
        finally:
            browser.close()
    assert not blocked, f"the page tried to leave loopback: {blocked}"
