"""Per-credential rate limits against a real Redis and the real database, including
several OS processes competing for the same credential's slots.

Redis: the broker's server when CELERY_BROKER_URL is Redis, else ROSTER_TEST_REDIS_URL
(default redis://127.0.0.1:6379/15). Only the limiter's own keys (roster:ratelimit:*)
are ever deleted there. Without a reachable Redis (and a broker that is not Redis) the
Redis cases are skipped.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from agents.models import Credential, RateWindow
from agents.ratelimit import (
    KEY_PREFIX,
    DatabaseRateLimiter,
    RateLimitError,
    RedisRateLimiter,
    rate_limiter,
    rate_slot_acquire,
    rate_tokens_adjust,
    redis_keys,
)
from tests.agents.rate_hammer import hammer
from tests.canary import OPENROUTER_KEY
from tests.factories import CredentialFactory
from tests.processes import free_port
from tests.processes import test_database_url as shared_database_url

BACKENDS = ["redis", "database"]


def _redis_url() -> str:
    if django_settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return django_settings.CELERY_BROKER_URL
    return os.environ.get("ROSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _delete_limiter_keys(client: redis.Redis) -> None:
    for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=500):
        client.delete(key)


def _limiter_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match=f"{KEY_PREFIX}:*", count=500))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A reachable Redis with no limiter keys, before and after the test (credential ids
    restart with every test database, so old keys would count against new credentials)."""
    url = _redis_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        if url == django_settings.CELERY_BROKER_URL:
            raise
        pytest.skip(f"no Redis at {url} (set ROSTER_TEST_REDIS_URL)")
    _delete_limiter_keys(client)
    yield url
    _delete_limiter_keys(client)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, settings: Any) -> str:
    """Each test runs once on Redis and once on the database, through the settings."""
    name: str = request.param
    settings.ROSTER_RATE_LIMIT_BACKEND = name
    settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS = 0
    if name == "redis":
        settings.ROSTER_RATE_LIMIT_REDIS_URL = request.getfixturevalue("redis_url")
    return name


def _logged_requests(backend: str, credential: Credential) -> int:
    """How many grants the backend holds for a credential."""
    if backend == "redis":
        log_key = redis_keys(credential_id=credential.pk)[0]
        return int(redis.Redis.from_url(_redis_url()).zcard(log_key))
    window = RateWindow.objects.filter(pk=credential.pk).first()
    return len(window.entries) if window else 0


# --- one process --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_credential_without_limits_is_granted_without_writing_anything(backend, redis_client):
    credential = CredentialFactory()

    decisions = [rate_slot_acquire(credential=credential, tokens=10**9) for _ in range(50)]

    assert all(d.granted and d.wait_seconds == 0 and d.grant_id == "" for d in decisions)
    rate_tokens_adjust(credential=credential, grant_id="", granted_tokens=10**9, actual_tokens=0)
    assert _limiter_keys(redis_client) == []
    assert not RateWindow.objects.exists()


@pytest.mark.django_db
def test_n_requests_per_minute_then_a_refusal_that_names_the_limit(backend):
    credential = CredentialFactory(label="free-tier", requests_per_minute=3)

    decisions = [rate_slot_acquire(credential=credential, tokens=100) for _ in range(5)]

    assert [d.granted for d in decisions] == [True, True, True, False, False]
    assert len({d.grant_id for d in decisions[:3]}) == 3
    for refused in decisions[3:]:
        assert 0 < refused.wait_seconds <= 60
        assert refused.reason == "3 requests/minute reached for credential 'free-tier'"
        assert refused.grant_id == ""
    # Refusals counted nothing.
    assert _logged_requests(backend, credential) == 3


@pytest.mark.django_db
def test_the_margin_holds_a_slot_a_little_beyond_the_minute(backend, settings):
    settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS = 1.5
    credential = CredentialFactory(requests_per_minute=1)

    rate_slot_acquire(credential=credential, tokens=0)
    refused = rate_slot_acquire(credential=credential, tokens=0)

    assert 60 < refused.wait_seconds <= 61.5


@pytest.mark.django_db
def test_tokens_beyond_what_is_left_are_refused_and_adjust_refunds_the_unused_part(backend):
    credential = CredentialFactory(label="tpm", tokens_per_minute=1000)

    def acquire(tokens: int):
        return rate_slot_acquire(credential=credential, tokens=tokens)

    def adjust(decision, granted: int, actual: int) -> None:
        rate_tokens_adjust(
            credential=credential,
            grant_id=decision.grant_id,
            granted_tokens=granted,
            actual_tokens=actual,
        )

    first = acquire(600)
    assert first.granted
    refused = acquire(500)
    assert not refused.granted
    assert 0 < refused.wait_seconds <= 60
    assert refused.reason == (
        "1,000 tokens/minute reached for credential 'tpm' "
        "(600 counted in the last minute, this call may use up to 500)"
    )
    second = acquire(400)
    assert second.granted
    assert not acquire(1).granted

    adjust(first, 600, 100)  # 500 of the first call's worst case were not used
    assert acquire(500).granted
    assert not acquire(1).granted

    adjust(first, 600, 0)  # already adjusted: a repeat changes nothing
    assert not acquire(1).granted

    adjust(second, 400, 0)
    assert acquire(400).granted
    assert not acquire(1).granted


@pytest.mark.django_db
def test_an_underestimate_is_counted_when_adjusted(backend):
    credential = CredentialFactory(tokens_per_minute=1000)
    call = rate_slot_acquire(credential=credential, tokens=100)

    rate_tokens_adjust(
        credential=credential, grant_id=call.grant_id, granted_tokens=100, actual_tokens=900
    )

    assert not rate_slot_acquire(credential=credential, tokens=101).granted
    assert rate_slot_acquire(credential=credential, tokens=100).granted


@pytest.mark.django_db
def test_both_limits_reached_names_both(backend):
    credential = CredentialFactory(label="both", requests_per_minute=1, tokens_per_minute=100)
    assert rate_slot_acquire(credential=credential, tokens=60).granted

    refused = rate_slot_acquire(credential=credential, tokens=60)

    assert not refused.granted
    assert refused.reason.startswith("1 request/minute reached for credential 'both'; ")
    assert "100 tokens/minute reached for credential 'both'" in refused.reason


@pytest.mark.django_db
def test_a_call_needing_more_tokens_than_a_minute_allows_can_never_run(backend, redis_client):
    credential = CredentialFactory(label="small", tokens_per_minute=4000)

    with pytest.raises(RateLimitError) as caught:
        rate_slot_acquire(credential=credential, tokens=8192)

    assert caught.value.permanent
    assert "8,192 tokens" in caught.value.message
    assert "'small'" in caught.value.message
    assert "4,000 tokens/minute" in caught.value.message
    assert _limiter_keys(redis_client) == []
    assert not RateWindow.objects.exists()


@pytest.mark.django_db
def test_negative_token_counts_are_refused(backend):
    credential = CredentialFactory(tokens_per_minute=10)

    with pytest.raises(ValueError, match="tokens"):
        rate_slot_acquire(credential=credential, tokens=-1)
    with pytest.raises(ValueError, match="token"):
        rate_tokens_adjust(
            credential=credential, grant_id="abc", granted_tokens=5, actual_tokens=-1
        )


@pytest.mark.django_db
def test_the_database_backend_refuses_to_count_inside_a_transaction(settings):
    """A count inside the caller's transaction would hold the lock during the request,
    and vanish if that transaction rolled back after the request had left."""
    settings.ROSTER_RATE_LIMIT_BACKEND = "database"
    credential = CredentialFactory(requests_per_minute=5)

    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        rate_slot_acquire(credential=credential, tokens=1)


# --- the window moves -----------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.django_db
def test_the_database_window_slides_by_the_clock():
    clock = FakeClock(1000.0)
    limiter = DatabaseRateLimiter(window_seconds=60, clock=clock)
    credential = CredentialFactory(label="slow", requests_per_minute=3)

    def acquire_at(now: float):
        clock.now = now
        return limiter.acquire(credential=credential, tokens=1)

    assert acquire_at(1000).granted
    assert acquire_at(1010).granted
    assert acquire_at(1020).granted
    assert acquire_at(1030).wait_seconds == 30.0
    assert acquire_at(1059.9995).wait_seconds == 0.001  # rounded up, never early
    assert acquire_at(1060).granted  # the grant at 1000 has aged out
    assert acquire_at(1061).wait_seconds == 9.0  # next out: the grant at 1010
    # Refusals wrote nothing; the grant dropped what had aged out.
    assert [entry[0] for entry in RateWindow.objects.get().entries] == [
        1010_000000,
        1020_000000,
        1060_000000,
    ]


@pytest.mark.django_db
def test_the_database_token_window_slides_and_aged_out_grants_refund_nothing():
    clock = FakeClock(0.0)
    limiter = DatabaseRateLimiter(window_seconds=60, clock=clock)
    credential = CredentialFactory(tokens_per_minute=1000)

    first = limiter.acquire(credential=credential, tokens=600)
    clock.now = 30
    assert limiter.acquire(credential=credential, tokens=400).granted
    refused = limiter.acquire(credential=credential, tokens=500)
    assert refused.wait_seconds == 30.0  # when the first call's 600 leave the window

    clock.now = 61
    limiter.adjust(
        credential=credential, grant_id=first.grant_id, granted_tokens=600, actual_tokens=0
    )

    assert not limiter.acquire(credential=credential, tokens=601).granted
    assert limiter.acquire(credential=credential, tokens=600).granted


@pytest.mark.django_db
def test_the_redis_window_slides_on_the_server_clock(redis_url, redis_client):
    limiter = RedisRateLimiter(url=redis_url, window_seconds=1.0)
    credential = CredentialFactory(label="slow", requests_per_minute=3)

    assert all(limiter.acquire(credential=credential, tokens=1).granted for _ in range(3))
    refused = limiter.acquire(credential=credential, tokens=1)
    assert not refused.granted
    assert 0 < refused.wait_seconds <= 1.0

    time.sleep(refused.wait_seconds)
    assert limiter.acquire(credential=credential, tokens=1).granted

    # The keys expire about a window after the last decision.
    log_key, tokens_key = redis_keys(credential_id=credential.pk)
    assert 0 < redis_client.pttl(log_key) <= 2000
    assert 0 < redis_client.pttl(tokens_key) <= 2000
    time.sleep(2.1)
    assert _limiter_keys(redis_client) == []


@pytest.mark.django_db
def test_redis_grants_that_aged_out_refund_nothing(redis_url):
    limiter = RedisRateLimiter(url=redis_url, window_seconds=2.0)
    credential = CredentialFactory(tokens_per_minute=1000)

    first = limiter.acquire(credential=credential, tokens=600)
    time.sleep(1.0)
    assert limiter.acquire(credential=credential, tokens=400).granted
    refused = limiter.acquire(credential=credential, tokens=1)
    time.sleep(refused.wait_seconds)  # the first call has left the window, the second not

    limiter.adjust(
        credential=credential, grant_id=first.grant_id, granted_tokens=600, actual_tokens=0
    )

    assert not limiter.acquire(credential=credential, tokens=601).granted
    assert limiter.acquire(credential=credential, tokens=600).granted


# --- many processes -----------------------------------------------------------------------

PROCESSES = 3
# Says in the test id which database the processes share: the SQLite test file, or
# PostgreSQL.
DATABASE_ID = (
    "database-sqlite-file"
    if django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    else "database-" + django_settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
)


def _run_hammers(*, environ: dict[str, str], credential: Credential, tokens: int) -> list[dict]:
    """Start PROCESSES spawned processes that hammer the same credential for 1.5 s after
    all of them are ready; return what each reports."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    environ = {"DATABASE_URL": shared_database_url(), **environ}
    processes = [
        context.Process(
            target=hammer,
            kwargs={
                "environ": environ,
                "credential_id": credential.pk,
                "tokens": tokens,
                "seconds": 1.5,
                "barrier": barrier,
                "results": results,
            },
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=180) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [report["error"] for report in reports if "error" in report]
    assert not errors, errors
    return reports


def _backend_environ(name: str) -> dict[str, str]:
    if name == "redis":
        return {"ROSTER_RATE_LIMIT_BACKEND": "redis", "ROSTER_RATE_LIMIT_REDIS_URL": _redis_url()}
    return {"ROSTER_RATE_LIMIT_BACKEND": "database"}


def _database_is_shared_by_processes() -> None:
    """SQLite runs against the test database file (never in memory), which every
    process opens; PostgreSQL is shared by nature."""
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        assert "memory" not in name
        assert Path(name).is_file()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("limit", "tokens", "expected"),
    [
        ({"requests_per_minute": 20}, 1, 20),
        ({"tokens_per_minute": 1000}, 30, 33),
    ],
    ids=["rpm", "tpm"],
)
@pytest.mark.parametrize(
    "name",
    [pytest.param("redis", id="redis"), pytest.param("database", id=DATABASE_ID)],
)
def test_processes_together_get_exactly_the_limit(name, limit, tokens, expected, request):
    if name == "redis":
        request.getfixturevalue("redis_url")
    else:
        _database_is_shared_by_processes()
    credential = CredentialFactory(label="shared", **limit)

    reports = _run_hammers(environ=_backend_environ(name), credential=credential, tokens=tokens)

    # 1.5 s of hammering sits inside one window: the limit, exactly, across processes.
    assert sum(report["granted"] for report in reports) == expected
    assert all(report["waits"] for report in reports), "each process was refused too"
    waits = [wait for report in reports for wait in report["waits"]]
    assert all(0 < wait <= 61 for wait in waits)
    reasons = set().union(*(report["reasons"] for report in reports))
    assert all("reached for credential 'shared'" in reason for reason in reasons)


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "broker", "redis_override", "expected"),
    [
        ("auto", "redis://127.0.0.1:6379/3", "", ("redis", "redis://127.0.0.1:6379/3")),
        ("auto", "rediss://cache.example:6380/0", "", ("redis", "rediss://cache.example:6380/0")),
        ("auto", "sqlite:///var/broker.sqlite3", "", ("database", None)),
        ("auto", "amqp://guest@rabbit//", "", ("database", None)),
        (
            "auto",
            "sqlite:///var/broker.sqlite3",
            "redis://limits:6379/1",
            ("redis", "redis://limits:6379/1"),
        ),
        ("database", "redis://127.0.0.1:6379/3", "", ("database", None)),
        (
            "redis",
            "sqlite:///var/broker.sqlite3",
            "redis://limits:6379/1",
            ("redis", "redis://limits:6379/1"),
        ),
    ],
)
def test_the_backend_follows_the_broker_unless_configured(
    settings, configured, broker, redis_override, expected
):
    settings.ROSTER_RATE_LIMIT_BACKEND = configured
    settings.CELERY_BROKER_URL = broker
    settings.ROSTER_RATE_LIMIT_REDIS_URL = redis_override
    settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS = 1.0

    limiter = rate_limiter()

    kind, url = expected
    if kind == "redis":
        assert isinstance(limiter, RedisRateLimiter)
        assert limiter.url == url
    else:
        assert isinstance(limiter, DatabaseRateLimiter)
    assert limiter.window_us == 61_000_000


def test_redis_without_a_redis_url_is_a_configuration_error(settings):
    settings.ROSTER_RATE_LIMIT_BACKEND = "redis"
    settings.CELERY_BROKER_URL = "sqlite:///var/broker.sqlite3"
    settings.ROSTER_RATE_LIMIT_REDIS_URL = ""

    with pytest.raises(ImproperlyConfigured, match="ROSTER_RATE_LIMIT_REDIS_URL"):
        rate_limiter()


def test_an_unknown_backend_is_a_configuration_error(settings):
    settings.ROSTER_RATE_LIMIT_BACKEND = "memcached"

    with pytest.raises(ImproperlyConfigured, match="auto, redis, database"):
        rate_limiter()


@pytest.mark.django_db
def test_redis_down_is_a_clear_error_not_unlimited(settings):
    port = free_port()  # nothing listens there
    settings.ROSTER_RATE_LIMIT_BACKEND = "redis"
    settings.ROSTER_RATE_LIMIT_REDIS_URL = f"redis://:hunter2@127.0.0.1:{port}/12"
    credential = CredentialFactory(requests_per_minute=5, tokens_per_minute=500)

    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        rate_slot_acquire(credential=credential, tokens=10)

    assert time.monotonic() - started < 10
    assert not caught.value.permanent
    assert caught.value.message.startswith(
        f"The rate limiter cannot reach Redis at 127.0.0.1:{port}/12: "
    )
    assert "hunter2" not in caught.value.message
    with pytest.raises(RateLimitError):
        rate_tokens_adjust(
            credential=credential, grant_id="abc", granted_tokens=10, actual_tokens=1
        )


# --- admin --------------------------------------------------------------------------------


def _post_credential(admin_client, **limits: str):
    return admin_client.post(
        reverse("admin:agents_credential_add"),
        {
            "label": "Free tier",
            "provider": "openrouter",
            "base_url": "",
            "secret": OPENROUTER_KEY,
            "requests_per_minute": "",
            "tokens_per_minute": "",
            **limits,
        },
    )


@pytest.mark.django_db
def test_the_admin_sets_limits_and_lists_them(admin_client):
    response = _post_credential(admin_client, requests_per_minute="3", tokens_per_minute="")

    assert response.status_code == 302, response.content.decode()[:2000]
    credential = Credential.objects.get()
    assert (credential.requests_per_minute, credential.tokens_per_minute) == (3, None)
    listing = admin_client.get(reverse("admin:agents_credential_changelist")).content.decode()
    assert "Requests per minute" in listing
    assert "Tokens per minute" in listing
    assert '<td class="field-requests_per_minute">3</td>' in listing


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
def test_the_admin_refuses_limits_below_one(admin_client, field, value):
    response = _post_credential(admin_client, **{field: value})

    assert response.status_code == 200
    assert "Enter a whole number of at least 1, or leave it blank for no limit." in (
        response.content.decode()
    )
    assert not Credential.objects.exists()


@pytest.mark.django_db
def test_the_database_refuses_limits_below_one_too():
    credential = CredentialFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.filter(pk=credential.pk).update(tokens_per_minute=0)
