"""Shared fixtures and the secret canary scan. Test settings (environment defaults) live in
office/settings_test.py; the canaries and the scans themselves in tests/canary.py."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.canary import CanaryLogHandler, RunScan

if TYPE_CHECKING:
    from tests.processes import Sandbox

_RUN_SCAN = pytest.StashKey[RunScan]()
_PROCESS_LOG_DIR = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def process_log_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Where the processes the tests start write their output (scanned after the run)."""
    path = tmp_path_factory.mktemp("process-logs")
    request.config.stash[_PROCESS_LOG_DIR] = path
    return path


@pytest.fixture(scope="session")
def sandbox(process_log_dir: Path) -> Iterator[Sandbox]:
    """The sandbox provider as a real process on a free loopback port."""
    from tests.processes import Sandbox

    box = Sandbox(process_log_dir)
    yield box
    box.process.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which database and broker this run uses (CI must show PostgreSQL and Redis)."""
    from urllib.parse import urlsplit

    from django.conf import settings

    db = settings.DATABASES["default"]
    broker = urlsplit(settings.CELERY_BROKER_URL)
    return [
        f"roster database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or db['NAME']}",
        f"roster broker: {broker.scheme}://{broker.hostname or ''}{broker.path}",
    ]


# --- secret canary scan (tests/canary.py) -------------------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    """Watch every record logged in this process, as the office's handlers (configured by
    django.setup(), which pytest-django has run by now) would write it."""
    root = logging.getLogger()
    handler = CanaryLogHandler(filters=[f for h in root.handlers for f in h.filters])
    root.addHandler(handler)
    session.config.stash[_RUN_SCAN] = RunScan(log_handler=handler)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    scan = item.config.stash.get(_RUN_SCAN, None)
    if scan is not None:
        scan.log_handler.current_test = item.nodeid
        # A test that reconfigures logging (dictConfig) drops the root's handlers.
        root = logging.getLogger()
        if scan.log_handler not in root.handlers:
            root.addHandler(scan.log_handler)


@pytest.fixture(scope="session")
def canary_scan(request: pytest.FixtureRequest) -> RunScan:
    """The run's canary scan, for fixtures that are about to drop data (clean_broker)."""
    return request.config.stash[_RUN_SCAN]


def _uses_database(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in ("_django_db_helper", "live_server")
    )


@pytest.fixture(autouse=True)
def canary_database_scan(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the database, before its rows are rolled back (or flushed,
    for transactional tests), look for canaries in every text column. A hit fails it."""
    scan = request.config.stash.get(_RUN_SCAN, None)
    if scan is None or not _uses_database(request):
        yield
        return
    # Set up the database now, so that it is torn down after this fixture's scan.
    request.getfixturevalue("_django_db_helper")
    yield
    hits = scan.scan_database(test=request.node.nodeid)
    if hits:
        lines = "\n".join(f"  {hit.describe()}" for hit in hits)
        pytest.fail(f"secret canary in the database after this test:\n{lines}", pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down (processes stopped, logs closed): scan the logs of
    the processes the tests started, the test artifacts and Redis; a hit fails the run."""
    scan = session.config.stash.get(_RUN_SCAN, None)
    if scan is None or hasattr(session.config, "workerinput"):  # an xdist worker
        return
    from django.conf import settings

    started = time.perf_counter()
    scan.finish()
    log_dir = session.config.stash.get(_PROCESS_LOG_DIR, None)
    if log_dir is not None:
        scan.scan_files(log_dir)
    artifacts = os.environ.get("ROSTER_TEST_ARTIFACTS", "")
    if artifacts:
        scan.scan_files(Path(artifacts), text_only=True)
    cache = settings.CACHES["default"]
    urls = [
        settings.CELERY_BROKER_URL,
        settings.ROSTER_RATE_LIMIT_REDIS_URL,
        cache["LOCATION"] if "redis" in cache["BACKEND"].lower() else "",
    ]
    for url in dict.fromkeys(urls):
        if url.startswith(("redis://", "rediss://")):
            scan.scan_redis(url)
    scan.end_seconds = time.perf_counter() - started
    if scan.failed and session.exitstatus in (
        pytest.ExitCode.OK,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    scan = terminalreporter.config.stash.get(_RUN_SCAN, None)
    if scan is None or hasattr(terminalreporter.config, "workerinput"):
        return
    if scan.failed:
        terminalreporter.write_sep("=", "secret canary scan FAILED", red=True, bold=True)
        for hit in scan.hits:
            terminalreporter.write_line(hit.describe())
        for problem in scan.problems:
            terminalreporter.write_line(problem)
    terminalreporter.write_line(scan.summary(), red=scan.failed)
