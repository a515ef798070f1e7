"""/healthz: the database, the broker and the workers' heartbeats, answered without a
login, 503 when any of them fails, and nothing secret in the answer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.liveness import heartbeat_beat
from agents.models import WorkerHeartbeat
from tests.processes import free_port, start_worker, wait_until

pytestmark = pytest.mark.django_db


def get_health(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_healthz_is_ok_with_a_live_worker_heartbeat(client):
    heartbeat_beat()  # what a worker's heartbeat thread writes

    status, body = get_health(client)

    assert status == 200, body
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "broker": "ok",
        "workers": "ok",
    }
    assert body["checks"]["workers"]["detail"].startswith("1 worker alive")


def test_healthz_fails_when_the_newest_heartbeat_is_stale(client, settings):
    heartbeat_beat(now=timezone.now() - timedelta(seconds=settings.ROSTER_WORKER_STALE_AFTER + 5))

    status, body = get_health(client)

    assert status == 503
    assert body["status"] == "failing"
    workers = body["checks"]["workers"]
    assert workers["status"] == "failing"
    assert "no worker heartbeat in the last" in workers["detail"]
    # The other checks still ran and say so.
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "ok"


def test_healthz_fails_when_no_worker_ever_beat(client):
    status, body = get_health(client)

    assert status == 503
    assert "is a worker running?" in body["checks"]["workers"]["detail"]


def test_healthz_fails_quickly_when_the_broker_is_unreachable_and_hides_its_password(client):
    heartbeat_beat()
    closed_port = free_port()  # bound and released: nothing listens there
    with override_settings(CELERY_BROKER_URL=f"redis://:hunter2-secret@127.0.0.1:{closed_port}/0"):
        status, body = get_health(client)

    assert status == 503
    broker = body["checks"]["broker"]
    assert broker["status"] == "failing"
    assert "refused" in broker["detail"].lower()
    assert broker["duration_ms"] < 3000
    assert body["checks"]["workers"]["status"] == "ok"
    assert "hunter2" not in str(body)
    assert "redis://" not in str(body)


def test_healthz_needs_no_login_and_is_never_cached(client):
    response = client.get("/healthz")

    assert response.status_code in (200, 503)  # answered, not a redirect to the login
    assert "no-cache" in response["Cache-Control"]
    assert client.post("/healthz").status_code == 405


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_healthz_sees_a_real_worker_process_and_its_clean_exit(client, process_log_dir: Path):
    worker = start_worker(process_log_dir, concurrency=1)
    try:
        status, body = get_health(client)
        assert status == 200, body
        assert body["checks"]["workers"]["detail"].startswith("1 worker alive")
    finally:
        worker.stop()

    # A clean shutdown removes the worker's heartbeat: the office has no worker now.
    wait_until(lambda: not WorkerHeartbeat.objects.exists(), timeout=10, what="heartbeat removal")
    status, body = get_health(client)
    assert status == 503
    assert body["checks"]["workers"]["status"] == "failing"
