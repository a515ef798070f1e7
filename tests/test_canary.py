"""The secret canary scan (tests/canary.py) finds a planted canary wherever it looks.

Every plant here is removed before the test ends (rolled back, deleted, or kept out of
the run's own logs), so the run's scans stay clean.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from agents.redaction import KEY_PATTERN, RedactSecretsFilter
from office.models import Role
from tests import canary
from tests.canary import (
    CANARIES,
    MARKER,
    CanaryLogHandler,
    database_query,
    database_scan,
    file_scan,
    files_under,
    redis_scan,
)
from tests.factories import CredentialFactory, TaskFactory

ROOT = Path(__file__).resolve().parents[1]


def test_canaries_are_unique_key_shaped_and_carry_the_marker():
    assert len(set(CANARIES)) == len(CANARIES)
    for one in CANARIES:
        assert MARKER in one
        # None hides inside another, so a hit names exactly one canary.
        assert not [other for other in CANARIES if other != one and one in other]
    assert all(KEY_PATTERN.fullmatch(one) for one in CANARIES if one != canary.PLAIN_KEY)
    assert not KEY_PATTERN.search(canary.PLAIN_KEY)
    assert canary.SANDBOX_KEY.startswith("sandbox")  # the sandbox provider accepts it


# --- the database -------------------------------------------------------------------------


@pytest.mark.django_db
def test_database_scan_names_table_column_row_and_canary():
    # The credential's own row holds only ciphertext and the last four characters.
    CredentialFactory(raw_secret=canary.OPENROUTER_KEY)
    query = database_query(connection)
    assert database_scan(connection, query) == []

    with transaction.atomic():
        role = Role.objects.create(
            slug="leaky", name="Leaky", system_prompt=f"use {canary.ANTHROPIC_KEY} please"
        )
        task = TaskFactory(role=role, urls=[f"https://example.com/?key={canary.GEMINI_KEY}"])
        hits = database_scan(connection, query)
        transaction.set_rollback(True)

    assert {(hit.canary, hit.where) for hit in hits} == {
        (canary.ANTHROPIC_KEY, f"table office_role, column system_prompt, row pk {role.pk}"),
        (canary.GEMINI_KEY, f"table office_task, column urls, row pk {task.pk}"),  # JSON
    }


@pytest.mark.django_db
def test_database_scan_covers_every_text_column_of_the_apps_and_django():
    tables = {table.table: table.columns for table in database_query(connection).tables}

    assert "error" in tables["office_task"]
    assert "secret_encrypted" in tables["agents_credential"]
    assert "entries" in tables["agents_ratewindow"]  # JSON
    assert "username" in tables["auth_user"]
    assert "session_data" in tables["django_session"]


# --- logs and files -----------------------------------------------------------------------


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("agents.test", logging.DEBUG, __file__, 1, message, args, None)


def test_log_handler_reports_a_canary_in_a_message_or_an_exception():
    # A handler of its own, fed directly: a record logged for real would reach the run's.
    handler = CanaryLogHandler()
    handler.current_test = "tests/test_canary.py::example"
    handler.handle(_record("calling with %s", canary.PLAIN_KEY))
    failing = _record("the call failed")
    try:
        raise RuntimeError(f"refused {canary.OPENAI_KEY}")
    except RuntimeError:
        failing.exc_info = sys.exc_info()
    handler.handle(failing)
    handler.handle(_record("nothing to see"))

    assert handler.records == 3
    assert [(hit.canary, hit.where) for hit in handler.hits] == [
        (canary.PLAIN_KEY, "log record of 'agents.test' during tests/test_canary.py::example"),
        (canary.OPENAI_KEY, "log record of 'agents.test' during tests/test_canary.py::example"),
    ]


def test_log_handler_sees_records_through_the_offices_redaction():
    handler = CanaryLogHandler(filters=[RedactSecretsFilter()])
    handler.handle(_record("key-shaped: %s", canary.OPENROUTER_KEY))  # masked
    handler.handle(_record("no known shape: %s", canary.PLAIN_KEY))  # not masked

    assert [hit.canary for hit in handler.hits] == [canary.PLAIN_KEY]


def test_file_scan_finds_plain_and_base64_canaries_and_skips_binaries(tmp_path):
    (tmp_path / "worker.log").write_text(f"INFO ok\nERROR bad key {canary.SANDBOX_KEY}\n")
    body = base64.b64encode(json.dumps({"args": ["x", canary.GEMINI_KEY]}).encode()).decode()
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "message.json").write_text(json.dumps({"body": body}))
    (tmp_path / "clean.log").write_text("nothing here but the word canary\n")
    (tmp_path / "shot.png").write_bytes(b"\x89PNG\0\0" + canary.PLAIN_KEY.encode())

    hits = [hit for path in files_under(tmp_path, text_only=True) for hit in file_scan(path)]

    assert [(hit.canary, Path(hit.where.split()[1]).name) for hit in hits] == [
        (canary.GEMINI_KEY, "message.json"),
        (canary.SANDBOX_KEY, "worker.log"),
    ]
    assert "(base64)" in hits[0].where
    assert f"bad key {canary.SANDBOX_KEY}" in hits[1].excerpt
    assert len(list(files_under(tmp_path))) == 4  # binaries too, unless text_only


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture
def scanned_redis() -> str:
    """The Redis the run's end scans (a Redis broker); these tests need one."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        pytest.skip("the broker is not Redis (CI runs these with CELERY_BROKER_URL=redis://...)")
    return url


def test_redis_scan_checks_names_and_values_of_every_type(scanned_redis):
    import redis

    client = redis.Redis.from_url(scanned_redis)
    prefix = f"canary-test:{uuid.uuid4().hex}"
    message = base64.b64encode(json.dumps([[canary.OPENAI_KEY], {}]).encode())
    plants = {
        f"{prefix}:string": lambda key: client.set(key, f"x {canary.OPENROUTER_KEY}"),
        f"{prefix}:hash": lambda key: client.hset(key, "field", canary.ANTHROPIC_KEY),
        f"{prefix}:list": lambda key: client.rpush(key, json.dumps({"body": message.decode()})),
        f"{prefix}:set": lambda key: client.sadd(key, canary.GEMINI_KEY),
        f"{prefix}:zset": lambda key: client.zadd(key, {canary.SANDBOX_KEY: 1}),
        f"{prefix}:stream": lambda key: client.xadd(key, {"secret": canary.PLAIN_KEY}),
        f"{prefix}:{canary.PLAIN_KEY}": lambda key: client.set(key, "in the name"),
    }
    try:
        for key, plant in plants.items():
            plant(key)
        scan = redis_scan(scanned_redis)
    finally:
        client.delete(*plants)
        client.close()

    found = {hit.where.split(" key ")[1].split()[0]: hit.canary for hit in scan.hits}
    assert found == {
        repr(f"{prefix}:string".encode()): canary.OPENROUTER_KEY,
        repr(f"{prefix}:hash".encode()): canary.ANTHROPIC_KEY,
        repr(f"{prefix}:list".encode()): canary.OPENAI_KEY,  # base64, as Celery sends it
        repr(f"{prefix}:set".encode()): canary.GEMINI_KEY,
        repr(f"{prefix}:zset".encode()): canary.SANDBOX_KEY,
        repr(f"{prefix}:stream".encode()): canary.PLAIN_KEY,
        repr(f"{prefix}:{canary.PLAIN_KEY}".encode()): canary.PLAIN_KEY,
    }
    assert scan.keys >= len(plants)


# --- a whole run --------------------------------------------------------------------------

LEAKY_TESTS = """
import logging

import pytest

from office.models import Role
from tests.canary import PLAIN_KEY, SANDBOX_KEY


@pytest.mark.django_db
def test_leaks_into_the_database():
    Role.objects.create(slug="leaky", name="Leaky", system_prompt=SANDBOX_KEY)


@pytest.mark.django_db(transaction=True)
def test_leaks_into_the_database_for_good():
    Role.objects.create(slug="leaky", name="Leaky", system_prompt=PLAIN_KEY)


def test_leaks_into_a_process_log(process_log_dir):
    (process_log_dir / "worker-leaky.log").write_text("starting with " + PLAIN_KEY)


def test_leaks_into_the_log():
    logging.getLogger("agents.leaky").warning("calling with %s", PLAIN_KEY)


def test_keeps_to_itself():
    pass
"""


@pytest.fixture
def leaky_run(tmp_path):
    """Runs test_leaky.py (above) with this suite's hooks, in a pytest of its own with its
    own SQLite database; returns (exit code, output)."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "CELERY_BROKER_URL", "ROSTER_TEST_ARTIFACTS")
        and not name.startswith("PYTEST_")
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "office.settings_test",
        "ROSTER_VAR_DIR": str(tmp_path / "var"),
        # Only the plugin it needs: hypothesis, schemathesis and faker take seconds to load.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }

    def run(*args: str) -> tuple[int, str]:
        command = [sys.executable, "-m", "pytest", "-p", "pytest_django.plugin", "-q", *args]
        command += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base"), "test_leaky.py"]
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        return done.returncode, done.stdout + done.stderr

    return run


def test_a_leak_into_a_tests_database_fails_that_test(leaky_run):
    # No migrations: the tables are all these tests need.
    code, output = leaky_run("--no-migrations", "-k", "database")

    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert "2 passed, 3 deselected, 2 errors" in output, output
    for test, key in (
        ("test_leaks_into_the_database", canary.SANDBOX_KEY),
        ("test_leaks_into_the_database_for_good", canary.PLAIN_KEY),  # before the flush
    ):
        assert f"ERROR at teardown of {test}" in output
        assert f"{key} in table office_role, column system_prompt, row pk" in output
    assert "2 tests' databases scanned" in output


def test_a_leak_into_logs_fails_the_run_though_every_test_passed(leaky_run):
    code, output = leaky_run("-k", "log or itself")

    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert "3 passed, 2 deselected" in output, output
    assert "secret canary scan FAILED" in output
    assert f"{canary.PLAIN_KEY} in file " in output
    assert "worker-leaky.log (plain)" in output
    leak = f"{canary.PLAIN_KEY} in log record of 'agents.leaky' during test_leaky.py"
    assert leak in output
    assert "0 tests' databases scanned, 2 hits" in output
