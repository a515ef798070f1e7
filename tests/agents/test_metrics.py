"""/metrics: Prometheus text that parses, whose numbers are the database's (tasks by
status, spend, calls, tokens, call latency), behind a bearer token."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents.liveness import heartbeat_beat
from billing.helper_ledger import usage_record_helper
from billing.ledger import CallTarget, usage_fail, usage_open, usage_settle
from billing.models import HelperOperation, Usage
from billing.money import money_sum
from billing.pricing import TokenUsage
from office.models import TaskStatus
from tests.factories import CatalogModelFactory, ModelPriceFactory, RoleFactory, TaskFactory

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.ROSTER_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict[str, dict[tuple, float]]:
    """Samples by name, each keyed by its sorted labels."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(**values: str) -> tuple:
    return tuple(sorted(values.items()))


def call(task, model, *, provider: str = "openrouter", at=None):
    return usage_open(
        task=task,
        target=CallTarget(
            model=model,
            provider=provider,
            credential_id=None,
            credential_label="k",
            upstream_model=model.slug,
        ),
        attempt=1,
        estimated_input_tokens=10,
        input_tokens_bound=40,
        max_output_tokens=50,
        now=at,
    )


def test_tasks_by_status_count_every_role_and_status(client, metrics_token):
    coder, writer = RoleFactory(slug="coder"), RoleFactory(slug="writer")
    TaskFactory.create_batch(3, role=coder, status=TaskStatus.QUEUED)
    TaskFactory.create_batch(2, role=coder, done=True)
    TaskFactory(role=writer, status=TaskStatus.FAILED)

    tasks = scrape(client)["roster_tasks"]

    assert tasks[labels(role="coder", status="queued")] == 3
    assert tasks[labels(role="coder", status="done")] == 2
    assert tasks[labels(role="writer", status="failed")] == 1
    # Zeros are there too, so a series never vanishes: 2 roles x every status.
    assert tasks[labels(role="writer", status="queued")] == 0
    assert len(tasks) == 2 * len(TaskStatus.values)


def test_spend_calls_and_tokens_match_the_ledger(client, metrics_token):
    role = RoleFactory(slug="coder")
    model = CatalogModelFactory(slug="vendor/cheap")
    # $1 and $2 per million input and output tokens.
    ModelPriceFactory(
        model=model,
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000002"),
        valid_from=timezone.now() - timedelta(days=30),
    )
    # Two people, two days: rollup rows apart, one series per role, model and provider.
    first, second = TaskFactory(role=role), TaskFactory(role=role)
    usage_settle(
        usage=call(first, model, at=timezone.now() - timedelta(days=3)),
        token_usage=TokenUsage(input_tokens=1000, output_tokens=300, reasoning_tokens=40),
        latency_ms=800,
    )
    usage_settle(
        usage=call(second, model),
        token_usage=TokenUsage(input_tokens=3000, output_tokens=700, cached_input_tokens=0),
        latency_ms=3_000,
    )
    usage_fail(usage=call(second, model), error="upstream 500", http_status=500, latency_ms=120)

    metrics = scrape(client)

    key = labels(role="coder", model="vendor/cheap", provider="openrouter")
    # 4000 x $0.000001 + 1000 x $0.000002 = $0.006, the ledger's own sum.
    assert metrics["roster_spend_usd_total"] == {key: pytest.approx(0.006, abs=1e-12)}
    assert money_sum(Usage.objects.values_list("cost", flat=True)) == Decimal("0.006")
    assert metrics["roster_provider_calls_total"] == {key: 2}
    assert metrics["roster_provider_failed_calls_total"] == {key: 1}
    tokens = metrics["roster_tokens_total"]
    for kind, count in (("input", 4000), ("output", 1000), ("reasoning", 40), ("cached_input", 0)):
        assert (
            tokens[labels(role="coder", model="vendor/cheap", provider="openrouter", kind=kind)]
            == count
        )


def test_local_helper_operations_count_apart_with_their_savings(client, metrics_token):
    role = RoleFactory(slug="writer")
    paid = CatalogModelFactory(slug="vendor/paid")
    ModelPriceFactory(model=paid, prompt=Decimal("0.000003"), completion=Decimal("0.000015"))
    task = TaskFactory(role=role)
    for tokens_in in (1000, 3000):
        usage_record_helper(
            task=task,
            operation=HelperOperation.SUMMARIZE,
            backend="builtin",
            input_tokens=tokens_in,
            output_tokens=100,
            shadow_model=paid,
        )

    metrics = scrape(client)

    assert metrics["roster_helper_operations_total"] == {labels(role="writer"): 2}
    # 4000 x $0.000003 + 200 x $0.000015 = $0.015 that the paid model would have charged.
    assert metrics["roster_helper_savings_usd_total"][labels(role="writer")] == pytest.approx(0.015)
    # The helper is free and no provider call: no spend series for it.
    assert "roster_spend_usd_total" not in metrics


def test_provider_call_latency_is_a_histogram_of_the_ledger(client, metrics_token):
    model = CatalogModelFactory()
    ModelPriceFactory(model=model)
    task = TaskFactory()
    for latency_ms in (80, 400, 400, 7_000):
        usage_settle(
            usage=call(task, model, provider="anthropic"),
            token_usage=TokenUsage(input_tokens=10, output_tokens=5),
            latency_ms=latency_ms,
        )
    usage_fail(
        usage=call(task, model, provider="anthropic"), error="x", http_status=429, latency_ms=50
    )
    call(task, model, provider="anthropic")  # pending: no latency yet, not counted

    metrics = scrape(client)

    settled = labels(provider="anthropic", outcome="settled")
    buckets = metrics["roster_provider_call_duration_seconds_bucket"]
    for le, count in (("0.1", 1), ("0.25", 1), ("0.5", 3), ("5.0", 3), ("10.0", 4), ("+Inf", 4)):
        assert buckets[labels(provider="anthropic", outcome="settled", le=le)] == count
    assert metrics["roster_provider_call_duration_seconds_count"][settled] == 4
    assert metrics["roster_provider_call_duration_seconds_sum"][settled] == pytest.approx(7.88)
    failed = labels(provider="anthropic", outcome="failed")
    assert metrics["roster_provider_call_duration_seconds_count"][failed] == 1


def test_workers_alive_counts_fresh_heartbeats_only(client, metrics_token, settings):
    heartbeat_beat()
    assert scrape(client)["roster_workers_alive"][()] == 1

    heartbeat_beat(now=timezone.now() - timedelta(seconds=settings.ROSTER_WORKER_STALE_AFTER + 1))
    assert scrape(client)["roster_workers_alive"][()] == 0


def test_metrics_refuse_a_missing_or_wrong_token(client, metrics_token):
    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    basic = client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}")

    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"roster_" not in response.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_without_a_token_are_off_unless_debug(client, settings):
    settings.ROSTER_METRICS_TOKEN = ""
    settings.DEBUG = False
    refused = client.get("/metrics")
    assert refused.status_code == 403
    assert b"ROSTER_METRICS_TOKEN" in refused.content

    settings.DEBUG = True
    assert client.get("/metrics").status_code == 200
