"""Fixtures that run the office for real: the sandbox provider, Celery worker and beat
processes against the test database and the configured broker (SQLite file by default,
Redis in CI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from agents.models import Credential, RoleBinding
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel
from office.models import Role
from tests.canary import SANDBOX_KEY, RunScan
from tests.processes import OfficeProcess, start_beat, start_worker

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def clean_broker(canary_scan: RunScan) -> None:
    """Drop messages a previous run left on a Redis broker (the SQLite one is per run).
    What the tests before these wrote there is scanned for canaries first."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        canary_scan.scan_redis(url)
        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def office_processes(
    django_db_setup: None, django_db_blocker: object, clean_broker: None, process_log_dir: Path
) -> Iterator[dict[str, OfficeProcess]]:
    """A worker and beat for the module's tests."""
    worker = start_worker(process_log_dir)
    beat = start_beat(process_log_dir)
    yield {"worker": worker, "beat": beat}
    worker.stop()
    beat.stop()


SNAPSHOT_MODELS = (
    "openai/gpt-4.1-mini",
    "anthropic/claude-haiku-4.5",
    "google/gemini-2.5-flash-lite",
    "deepseek/deepseek-v4-pro",
)


def snapshot_pricing(slug: str) -> dict[str, str]:
    """The catalog strings of a model, straight from the bundled snapshot file."""
    data = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())["data"]
    return next(entry["pricing"] for entry in data if entry["id"] == slug)


@pytest.fixture
def catalog(transactional_db: None) -> dict[str, CatalogModel]:
    """The snapshot's entries for the models these tests use, synced the real way."""
    payload = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())
    payload["data"] = [entry for entry in payload["data"] if entry["id"] in SNAPSHOT_MODELS]
    catalog_sync(entries=catalog_parse(payload))
    return {model.slug: model for model in CatalogModel.objects.all()}


def bind_role(
    *,
    slug: str,
    model: CatalogModel,
    provider: str,
    base_url: str,
    secret: str = SANDBOX_KEY,
    system_prompt: str = "You are a test role.",
) -> Role:
    role = Role.objects.create(slug=slug, name=slug.title(), system_prompt=system_prompt)
    credential: Credential = credential_create(
        label=f"{slug} credential",
        provider=provider,
        base_url=base_url,
        raw_secret=secret,
        is_simulated=True,
    )
    RoleBinding.objects.create(role=role, model=model, credential=credential, max_tokens=256)
    return role
