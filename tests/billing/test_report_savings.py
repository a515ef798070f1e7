"""What caching and the local helper saved, per role and for the office: the report
selectors, the page, the CSV and `manage.py cost`, over a small ledger written through
the real ledger functions."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.helper_ledger import LOCAL_HELPER_SLUG
from billing.ledger import CallTarget, usage_open, usage_record_helper, usage_settle
from billing.pricing import TokenUsage
from billing.reports import (
    Savings,
    local_helper_savings,
    ratio_text,
    role_cost_per_task,
    savings,
    spend_report,
)
from tests.factories import CatalogModelFactory, ModelPriceFactory, RoleFactory, TaskFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 20, 12, tzinfo=UTC)
JUNE = (datetime(2026, 6, 1).date(), datetime(2026, 7, 1).date())
SINCE = datetime(2026, 1, 1, tzinfo=UTC)

# coder:  2 calls on `cheap`, 1,500 input tokens of which 400 cached; helper operations
#         priced at cheap: 120/12 tokens (0.000144) and 4,000/900 (0.0058).
# writer: 1 call on `premium`, 2,000 input tokens of which 1,000 cached; helper
#         operations: 3,000/300 at premium (0.0135) and 100/10 with no paid model.
CODER_HELPER_SAVINGS = Decimal("0.005944")
WRITER_HELPER_SAVINGS = Decimal("0.0135")
OFFICE_HELPER_SAVINGS = Decimal("0.019444")
# 400 x (0.000001 - 0.0000001) and 1,000 x (0.000003 - 0.0000003)
CODER_CACHE_SAVINGS = Decimal("0.00036")
WRITER_CACHE_SAVINGS = Decimal("0.0027")


@pytest.fixture
def ledger():
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer")
    cheap = CatalogModelFactory(slug="vendor/cheap", name="Cheap")
    ModelPriceFactory(
        model=cheap, valid_from=SINCE, prompt=Decimal("0.000001"),
        completion=Decimal("0.000002"), input_cache_read=Decimal("0.0000001"),
    )  # fmt: skip
    premium = CatalogModelFactory(slug="vendor/premium", name="Premium")
    ModelPriceFactory(
        model=premium, valid_from=SINCE, prompt=Decimal("0.000003"),
        completion=Decimal("0.000015"), input_cache_read=Decimal("0.0000003"),
    )  # fmt: skip

    def paid(task, model, **tokens) -> None:
        target = CallTarget(model=model, provider="openrouter", credential_id=None,
                            credential_label="k", upstream_model=model.slug)  # fmt: skip
        usage = usage_open(task=task, target=target, attempt=1, estimated_input_tokens=10,
                           input_tokens_bound=10_000, max_output_tokens=1_000, now=NOW)  # fmt: skip
        usage_settle(usage=usage, token_usage=TokenUsage(**tokens))

    def helper(task, operation, shadow, input_tokens, output_tokens) -> None:
        usage_record_helper(
            task=task, operation=operation, backend="builtin", input_tokens=input_tokens,
            output_tokens=output_tokens, shadow_model=shadow, now=NOW,
        )  # fmt: skip

    coding = TaskFactory(role=coder, created_at=NOW)
    helper(coding, "title", cheap, 120, 12)
    helper(coding, "extract_page", cheap, 4_000, 900)
    paid(coding, cheap, input_tokens=1_000, cached_input_tokens=400, output_tokens=100)
    paid(TaskFactory(role=coder, created_at=NOW), cheap, input_tokens=500, output_tokens=50)
    writing = TaskFactory(role=writer, created_at=NOW)
    helper(writing, "compress_history", premium, 3_000, 300)
    helper(writing, "title", None, 100, 10)
    paid(writing, premium, input_tokens=2_000, cached_input_tokens=1_000, output_tokens=200)
    return coder, writer


def test_savings_per_role_and_office_are_exact(ledger) -> None:
    report = spend_report(start=JUNE[0], end=JUNE[1])

    coder, writer = (next(r for r in report.by_role if r.key == k) for k in ("coder", "writer"))
    assert (coder.spend.helper_calls, coder.spend.helper_tokens) == (2, 5_032)
    assert coder.spend.helper_savings == CODER_HELPER_SAVINGS
    assert coder.spend.cache_savings == CODER_CACHE_SAVINGS
    assert (writer.spend.helper_calls, writer.spend.helper_unpriced_calls) == (2, 1)
    assert writer.spend.helper_savings == WRITER_HELPER_SAVINGS
    assert writer.spend.cache_savings == WRITER_CACHE_SAVINGS
    # The helper's tokens are not paid tokens.
    assert (coder.spend.input_tokens, coder.spend.output_tokens) == (1_500, 150)
    assert report.totals.helper_savings == OFFICE_HELPER_SAVINGS
    assert report.savings == Savings(
        cache=Decimal("0.00306"), local_helper=OFFICE_HELPER_SAVINGS, local_helper_unpriced=1
    )
    assert report.savings.total == Decimal("0.022504")
    assert savings(start=JUNE[0], end=JUNE[1]) == report.savings
    assert local_helper_savings(start=JUNE[0], end=JUNE[1]) == OFFICE_HELPER_SAVINGS


def test_cache_hit_ratio_per_role_is_cached_over_input_tokens(ledger) -> None:
    report = spend_report(start=JUNE[0], end=JUNE[1])
    ratios = {row.key: row.spend.cache_hit_ratio for row in report.by_role}

    # 400 / 1,500 to 34 significant digits: a derived figure, not an amount billed.
    assert ratios["coder"] == Decimal("0.2666666666666666666666666666666667")
    assert ratio_text(ratios["coder"]) == "0.266667"
    assert ratios["writer"] == Decimal("0.5")
    assert report.totals.cache_hit_ratio == Decimal("0.4")
    # 8,442 helper tokens of 12,292 in all.
    assert report.totals.helper_tokens == 8_442
    assert ratio_text(report.totals.helper_token_share) == "0.686788"


def test_helper_rows_count_no_task_and_no_spend(ledger) -> None:
    per_task = role_cost_per_task(start=JUNE[0], end=JUNE[1])
    costs = {row.role_slug: (row.tasks, row.cost) for row in per_task}

    # coder: 600 x 0.000001 + 400 x 0.0000001 + 100 x 0.000002, and 500 x 0.000001 + 50 x
    # 0.000002; writer: 1,000 x 0.000003 + 1,000 x 0.0000003 + 200 x 0.000015.
    assert costs == {
        "coder": (2, Decimal("0.00144")),
        "writer": (1, Decimal("0.0063")),
    }
    by_model = spend_report(start=JUNE[0], end=JUNE[1]).by_model
    helper = next(row for row in by_model if row.key == LOCAL_HELPER_SLUG)
    assert (helper.spend.calls, helper.spend.cost, helper.spend.helper_calls) == (0, 0, 4)


# --- the page, the CSV and the command ------------------------------------------------------


@pytest.fixture
def manager_client(client: Client) -> Client:
    user = get_user_model().objects.create(username="manager")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="billing", codename="view_reports")
    )
    client.force_login(user)
    return client


def get(client: Client, name: str, **params: str):
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        return client.get(reverse(name), params)


def test_report_page_shows_savings_and_cache_hit_ratio_per_role(manager_client, ledger) -> None:
    page = get(manager_client, "billing:reports", month="2026-06").text

    assert "Savings by role" in page
    assert "26.7 %" in page  # coder's cache hit ratio
    assert "50.0 %" in page  # writer's
    assert "40.0 %" in page  # the office's
    assert 'title="$0.005944">$0.005944<' in page
    assert 'title="$0.019444">$0.019444<' in page
    assert "8,442" in page
    assert "+ 1 unknown" in page
    assert "1 local helper operation ran for a role whose paid model has no price" in page


def test_report_page_of_an_empty_month_shows_no_ratio(manager_client, ledger) -> None:
    response = get(manager_client, "billing:reports", month="2031-02")

    assert response.status_code == 200
    assert "nothing was spent" in response.text
    assert "Savings by role" not in response.text
    assert "<dt>Cache hit ratio</dt><dd><span" in response.text
    assert "—" in response.text


def test_csv_by_role_has_helper_savings_and_the_cache_hit_ratio(manager_client, ledger) -> None:
    response = get(manager_client, "billing:report_export", month="2026-06", by="role")
    rows = {
        row["role"]: row
        for row in csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    }

    assert rows["coder"]["helper_savings_usd"] == "0.005944"
    assert rows["coder"]["helper_input_tokens"] == "4120"
    assert rows["coder"]["cache_hit_ratio"] == "0.266667"
    assert rows["coder"]["cache_savings_usd"] == "0.00036"
    assert rows["writer"]["helper_unpriced_calls"] == "1"
    assert rows["writer"]["cache_hit_ratio"] == "0.5"


def cost(*args: str) -> str:
    out = io.StringIO()
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("cost", *args, stdout=out)
    return out.getvalue()


def test_cost_summary_shows_helper_savings_and_cache_hit_ratio(ledger) -> None:
    lines = cost("summary", "--period", "month").splitlines()

    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    assert rows["writer"] == [
        "writer", "1", "0", "2,000", "200", "50.0%", "$0.006300", "3,410", "$0.013500"
    ]  # fmt: skip
    assert rows["coder"] == [
        "coder", "2", "0", "1,500", "150", "26.7%", "$0.001440", "5,032", "$0.005944"
    ]  # fmt: skip
    text = "\n".join(lines)
    assert "Cache hit ratio            40.0 %" in text
    assert "Local helper operations    4" in text
    assert "Helper tokens absorbed     8,442 (68.7 % of all tokens)" in text
    assert "Local helper savings       $0.019444" in text
    assert "Note: 1 local helper operations ran for roles whose paid model has no price" in text

    document = json.loads(cost("summary", "--format", "json"))
    assert document["total"]["helper_savings_usd"] == "0.019444"
    assert document["total"]["cache_hit_ratio"] == "0.4"
    coder = next(r for r in document["roles"] if r["role"] == "coder")
    assert (coder["helper_calls"], coder["cache_hit_ratio"]) == (2, "0.266667")


def test_cost_breakdown_by_model_lists_the_local_helper(ledger) -> None:
    rows = list(csv.DictReader(io.StringIO(cost("breakdown", "--by", "model", "--format", "csv"))))

    helper = next(row for row in rows if row["model"] == LOCAL_HELPER_SLUG)
    assert (helper["calls"], helper["cost_usd"], helper["helper_calls"]) == ("0", "0", "4")
    assert helper["helper_savings_usd"] == "0.019444"
    assert helper["cache_hit_ratio"] == ""
