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
