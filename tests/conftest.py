"""Shared fixtures. Test settings (environment defaults) live in office/settings_test.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def process_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture(scope="session")
def sandbox(process_log_dir: Path) -> Iterator["Sandbox"]:  # noqa: F821
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
