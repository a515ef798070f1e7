"""The services under the office go away while it works: Redis (the broker, and every
message in it) is killed and started again while tasks are queued and running;
PostgreSQL drops every connection and refuses new ones for a while. The sweeper must
find what was lost, and the ledger must still bill each charged call exactly once."""

from __future__ import annotations

import os
import subprocess
import time

import psycopg
import pytest
from django.db import connection, connections

from office.models import TaskStatus
from office.services import task_submit
from tests.faults.audit import office_audit, tasks_settle
from tests.faults.conftest import bind_role

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

TASKS = 60


def submit(role, count: int) -> list[int]:
    return [
        task_submit(role=role, prompt=f"Summary {n}. [[sandbox latency=0.5]]").pk
        for n in range(count)
    ]


def test_redis_restarted_while_tasks_are_queued_and_running(fault_office, catalog, tally):
    role = bind_role(
        slug="redis-restart",
        model=catalog["openai/gpt-4.1-mini"],
        provider="openrouter",
        base_url=fault_office.sandbox.url + "/api/v1",
    )
    since = fault_office.log_position()
    workers = fault_office.workers(count=2, concurrency=4)
    try:
        task_ids = submit(role, TASKS)
        for _ in range(2):
            time.sleep(2)  # calls in flight, most tasks still queued in Redis
            fault_office.redis.restart(down_for=1.0)
        tally.add("Redis killed and restarted", 2)
        tasks = tasks_settle(task_ids, timeout=120)
        audit = office_audit(tasks=tasks, entries=fault_office.sandbox.requests(since=since))
    finally:
        workers.stop()
    tally.record("Redis restarts", audit)

    assert audit.problems == [], (audit.summary(), audit.problems[:5])
    assert audit.tasks == {TaskStatus.DONE: TASKS}, audit.summary()


def postgres_outage(down_for: float) -> str:
    """Take PostgreSQL away from the office for `down_for` seconds. Returns how.

    With ROSTER_FAULTS_POSTGRES_RESTART=1 (CI, where the suite owns the server) the
    cluster is really stopped and started. Otherwise (a shared development server) the
    test database alone goes: every connection to it is terminated and new ones are
    refused until it comes back, which is what a restart looks like to the office.
    """
    if os.environ.get("ROSTER_FAULTS_POSTGRES_RESTART") == "1":
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
        subprocess.run([*command, "stop", "--mode", "immediate"], check=True)
        time.sleep(down_for)
        subprocess.run([*command, "start"], check=True)
        connections.close_all()
        return "cluster restarted"
    settings = connection.settings_dict
    name = settings["NAME"]
    connections.close_all()
    admin = psycopg.connect(
        host=settings.get("HOST") or "127.0.0.1",
        port=settings.get("PORT") or 5432,
        user=settings.get("USER") or "postgres",
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        time.sleep(down_for)
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    return "test database cut off"


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="restarts PostgreSQL: runs where the suite uses it"
)
def test_postgres_goes_away_briefly(fault_office, catalog, tally):
    role = bind_role(
        slug="pg-restart",
        model=catalog["openai/gpt-4.1-mini"],
        provider="openrouter",
        base_url=fault_office.sandbox.url + "/api/v1",
    )
    since = fault_office.log_position()
    workers = fault_office.workers(count=2, concurrency=4)
    try:
        task_ids = submit(role, TASKS)
        for _ in range(2):
            time.sleep(2)
            how = postgres_outage(down_for=2.0)
        tally.add(f"PostgreSQL outage ({how})", 2)
        tasks = tasks_settle(task_ids, timeout=120)
        audit = office_audit(tasks=tasks, entries=fault_office.sandbox.requests(since=since))
    finally:
        workers.stop()
    tally.record("PostgreSQL outages", audit)

    assert audit.problems == [], (audit.summary(), audit.problems[:5])
    assert audit.tasks == {TaskStatus.DONE: TASKS}, audit.summary()
