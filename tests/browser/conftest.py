"""The operator console in a real browser: Debian's Chromium driven by Playwright, against the whole app
(the local host on Azurite, with the fake Entra ID, Dynamics, Twilio and Slack, as in tests/e2e).

Chromium is ``/usr/bin/chromium`` or ``CHROMIUM_PATH``; never a browser Playwright downloads. Without it
(or without the ``playwright`` package) the tests skip and say why; with ``CI`` set they fail instead,
so a CI machine that lost its browser does not pass in silence.

To add a view's test: take ``console`` (a page opened on the app with the master key), call
``console.tab("Polls")``, read the page through ``console.page`` (Playwright's Page) and end with
``console.screenshot()``. ``console.stack`` is the app and its fakes (tests/e2e/conftest.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import start_azurite
from tests.e2e.conftest import MASTER_KEY, Stack, running_stack
from tests.support.app import REPO_ROOT

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
WAIT_MS = 20_000  # for the page to show what the app does behind it: queues, callbacks, refreshes


def chromium_path() -> Path:
    return Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")


def missing(reason: str) -> None:
    """Skip with ``reason``; on CI (``CI`` set), fail with it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run: make test installs both)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if not path.exists():
        missing(f"no Chromium at {path}: apt-get install chromium, or set CHROMIUM_PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed: pip install -r requirements-dev.txt")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(path), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The app on an Azurite of its own, giving work up after a few seconds of failures, so that a
    dead letter can be made within a test."""
    azurite = start_azurite()
    try:
        with running_stack(tmp_path_factory.mktemp("console"), azurite, QUEUE_MAX_ATTEMPTS="0",
                           RETRY_BACKOFF_BASE_SECONDS="0.5", RETRY_BACKOFF_CAP_SECONDS="1",
                           RETRY_MAX_AGE_SECONDS="4") as stack:
            yield stack
    finally:
        azurite.stop()


@dataclass
class Console:
    page: Any  # playwright.sync_api.Page
    stack: Stack
    name: str

    def open(self) -> Console:
        """The console as an operator opens it: the master key in ``?code=`` once."""
        self.page.goto(f"{self.stack.base_url}/api/ops/console?code={MASTER_KEY}")
        self.page.wait_for_selector("#queues .queue", timeout=WAIT_MS)  # the counters answered
        return self

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def status(self) -> Any:
        return self.page.locator("#status")

    def screenshot(self) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def console(browser: Any, console_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Console]:
    """A fresh page (its own sessionStorage) on the console; the page's script errors fail the test (not the
    browser's note of each HTTP error answer: the page handles those itself, a 404 of a missing route say)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error"
            and not message.text.startswith("Failed to load resource") else None)
    try:
        yield Console(page, console_stack, re.sub(r"[^\w.-]", "_", request.node.name)).open()
    finally:
        context.close()
    assert not errors, f"the console page reported errors: {errors}"
