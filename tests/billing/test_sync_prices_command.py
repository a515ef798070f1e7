"""`manage.py sync_prices`: a thin shell over billing.catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import CatalogModel, ModelPrice
from tests.billing.test_catalog import MARCH_FILE, loopback_catalog_server, row_counts

JUNE_SUMMARY = (
    "Synced 341 models: 341 new, 0 updated, 341 price versions added, 0 marked unavailable; "
    "4 unpriced (variable pricing or no price): openrouter/auto, openrouter/bodybuilder, "
    "openrouter/fusion, openrouter/pareto-code."
)


def run_sync(*args: str) -> str:
    out = StringIO()
    call_command("sync_prices", *args, stdout=out, no_color=True)
    return out.getvalue().strip()


@pytest.mark.django_db
def test_sync_from_file_prints_the_summary() -> None:
    output = run_sync("--file", str(settings.ROSTER_CATALOG_SNAPSHOT))

    assert output == JUNE_SUMMARY
    assert row_counts() == (341, 341, 341)


@pytest.mark.django_db
def test_second_sync_reports_nothing_new() -> None:
    run_sync("--file", str(MARCH_FILE))

    output = run_sync("--file", str(MARCH_FILE))

    assert output == (
        "Synced 196 models: 0 new, 0 updated, 0 price versions added, 0 marked unavailable."
    )
    assert ModelPrice.objects.count() == 196


@pytest.mark.django_db
def test_sync_from_url_fetches_the_catalog() -> None:
    routes = {"/api/v1/models": (200, "application/json", MARCH_FILE.read_bytes())}
    with loopback_catalog_server(routes) as base:
        output = run_sync("--url", f"{base}/api/v1/models")

    assert output.startswith("Synced 196 models: 196 new, 0 updated, 196 price versions added")
    assert CatalogModel.objects.filter(slug="openai/gpt-5.4-pro", is_available=True).exists()


@pytest.mark.django_db
def test_missing_file_is_a_command_error(tmp_path: Path) -> None:
    missing = tmp_path / "models.json"

    with pytest.raises(CommandError, match=rf"^Catalog file not found: {missing}$"):
        run_sync("--file", str(missing))

    assert row_counts() == (0, 0, 0)


@pytest.mark.django_db
def test_invalid_json_is_a_command_error(tmp_path: Path) -> None:
    broken = tmp_path / "models.json"
    broken.write_text("<html>Bad gateway</html>", encoding="utf-8")

    with pytest.raises(CommandError) as excinfo:
        run_sync("--file", str(broken))

    assert str(excinfo.value) == (
        f"Catalog file {broken} is not valid JSON: Expecting value at line 1 column 1"
    )
    assert row_counts() == (0, 0, 0)


@pytest.mark.django_db
def test_bad_entry_is_a_command_error_and_writes_nothing(tmp_path: Path) -> None:
    run_sync("--file", str(MARCH_FILE))
    payload = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text(encoding="utf-8"))
    payload["data"][40]["pricing"]["prompt"] = "free"
    bad = tmp_path / "models.json"
    bad.write_text(json.dumps(payload), encoding="utf-8")

    with pytest.raises(CommandError) as excinfo:
        run_sync("--file", str(bad))

    assert str(excinfo.value) == (
        "The catalog has 1 invalid entry problem; nothing was applied:\n"
        f"  entry 40 ({payload['data'][40]['id']}): price 'prompt' is not a decimal "
        "number: 'free'"
    )
    assert row_counts() == (196, 196, 196)


@pytest.mark.django_db
def test_unreachable_url_is_a_command_error() -> None:
    routes = {"/api/v1/models": (503, "text/plain", b"try later")}
    with loopback_catalog_server(routes) as base, pytest.raises(CommandError) as excinfo:
        run_sync("--url", f"{base}/api/v1/models")

    assert str(excinfo.value) == (
        f"The catalog at {base}/api/v1/models answered HTTP 503 Service Unavailable: try later"
    )
    assert row_counts() == (0, 0, 0)


def test_command_exits_with_status_1_and_the_message(tmp_path: Path) -> None:
    missing = tmp_path / "models.json"

    result = subprocess.run(
        [sys.executable, "manage.py", "sync_prices", "--file", str(missing)],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip() == f"CommandError: Catalog file not found: {missing}"
    assert result.stdout == ""
