"""The agent API's settings: read once from the environment, failing loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def settings_of(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with `env`; print the cache config."""
    environment = {
        **os.environ,
        "ROSTER_VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "x",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    for name in ("ROSTER_CACHE_URL", "ROSTER_API_THROTTLE_RATE"):  # the host's own
        if name not in env:
            environment.pop(name, None)
    code = (
        "from office import settings as s; cache = s.CACHES['default']; "
        "print(cache['BACKEND'], cache['LOCATION'], s.ROSTER_API_THROTTLE_RATE)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60
    )


def test_cache_defaults_to_files_under_var_dir_without_redis(tmp_path: Path) -> None:
    result = settings_of(tmp_path, CELERY_BROKER_URL=f"sqlite:///{tmp_path}/broker.sqlite3")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.cache.backends.filebased.FileBasedCache",
        str(tmp_path / "cache"),
        "120/min",
    ]


def test_cache_defaults_to_the_redis_broker(tmp_path: Path) -> None:
    result = settings_of(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/12")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == [
        "django.core.cache.backends.redis.RedisCache",
        "redis://127.0.0.1:6379/12",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROSTER_API_THROTTLE_RATE": "fast"}, "ROSTER_API_THROTTLE_RATE must be"),
        ({"ROSTER_API_THROTTLE_RATE": "0/min"}, "ROSTER_API_THROTTLE_RATE must be"),
        ({"ROSTER_CACHE_URL": "nosuch://x"}, "ROSTER_CACHE_URL: Invalid cache schema nosuch"),
    ],
)
def test_bad_values_fail_at_start_with_the_variable_named(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = settings_of(tmp_path, **env)

    assert result.returncode != 0
    assert message in result.stderr
