"""Fixtures for the browser tests: Debian's Chromium driven by Playwright (sync API)
against pytest-django's live server, with a real worker and the sandbox provider.

Screenshots go to $ROSTER_TEST_ARTIFACTS, or to `test-artifacts/` under pytest's base
temporary folder; the run's summary prints where.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.factories import PASSWORD, UserFactory
from tests.processes import OfficeProcess, start_worker

CHROMIUM = Path("/usr/bin/chromium")
# The flags the issue asks for: no sandbox (containers, root), no GPU, and none of
# Chromium's own network chatter (updates, sync), which must not slow or skew a test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Explicit waits everywhere, never sleeps: every expectation fails after this long.
WAIT_MS = 20_000

_ARTIFACTS = pytest.StashKey[Path]()
_CALL_FAILED = pytest.StashKey[bool]()


def make_person(*, kind: str, username: str | None = None) -> User:
    """A member of the group `kind` (admin, manager, staff: docs/people.md) with the
    factories' password."""
    return UserFactory(username=username or kind, groups=[kind])


@pytest.fixture(scope="session")
def artifacts_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots are saved; printed at the end of the run."""
    configured = os.environ.get("ROSTER_TEST_ARTIFACTS", "")
    path = Path(configured) if configured else tmp_path_factory.getbasetemp() / "test-artifacts"
    path = path.resolve() / "browser"
    path.mkdir(parents=True, exist_ok=True)
    request.config.stash[_ARTIFACTS] = path
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = terminalreporter.config.stash.get(_ARTIFACTS, None)
    if path is not None:
        shots = sorted(path.glob("*.png"))
        terminalreporter.write_sep("-", "browser test artifacts")
        terminalreporter.write_line(f"{len(shots)} screenshot(s) in {path}")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for one test module, stopped after it.

    Its sync API keeps an asyncio loop running on this thread while it is started, which
    Django takes for an async context: it would refuse the tests' own (synchronous) ORM
    calls. So Django is told to allow them for as long as the loop lives, and no longer:
    the loop and the allowance end with the module, before any other test runs.
    """
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; browser tests may not be skipped in CI")
        pytest.skip(message)
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as driver:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, django_db_blocker: object, clean_broker: None, process_log_dir: Path
) -> Iterator[OfficeProcess]:
    """One real worker for the module (no beat: these tests need no schedule)."""
    process = start_worker(process_log_dir, concurrency=2)
    yield process
    process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Kept on the test item so the page fixture can tell, at teardown, that the test failed.
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture
def page(
    browser: Browser, live_server, artifacts_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser context (no cookies, so no login) on the live server. A failing
    test leaves a screenshot of where it stood: <test>-failure.png."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    tab = context.new_page()
    yield tab
    if request.node.stash.get(_CALL_FAILED, False):
        tab.screenshot(path=artifacts_dir / f"{_file_name(request)}-failure.png", full_page=True)
    context.close()


def _file_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")


@pytest.fixture
def screenshot(artifacts_dir: Path, request: pytest.FixtureRequest):
    """`screenshot(page, "name")` saves the whole page as <test>-<name>.png."""
    test = _file_name(request)

    def take(page: Page, name: str) -> Path:
        path = artifacts_dir / f"{test}-{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take


def log_in(page: Page, *, username: str) -> None:
    """Log in through the login form, by its labels (templates may be restyled)."""
    page.goto("/accounts/login/")
    page.get_by_label(re.compile("username", re.I)).fill(username)
    page.get_by_label(re.compile("password", re.I)).fill(PASSWORD)
    page.get_by_role("button", name=re.compile(r"log ?in|sign ?in", re.I)).click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
