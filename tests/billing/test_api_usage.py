"""GET /api/usage/: this month's spend per role and the budgets over the token's roles."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Budget, BudgetPeriod, UsageRollup
from billing.periods import local_day, period_days
from office.services import api_token_create
from tests.factories import CatalogModelFactory, RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

USAGE_URL = reverse("office_api:usage")
THIRD = Decimal("0.00000008333333333333334")


def get_usage(*, roles=()) -> dict:
    _, raw = api_token_create(user=UserFactory(), name="agent", roles=roles)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get(USAGE_URL)
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def office():
    """Two roles with spend this month (and last month), an office budget and a budget
    per role, one with calls in flight."""
    today = local_day(timezone.now())
    month_start, _ = period_days(period="month", day=today)
    coder, writer = RoleFactory(slug="coder"), RoleFactory(slug="writer")
    model = CatalogModelFactory()
    for role, cost, calls in ((coder, Decimal("1.5") + THIRD, 3), (writer, Decimal("2"), 1)):
        UsageRollup.objects.create(
            day=today, role=role, model=model, provider="openrouter", calls=calls, cost=cost
        )
    UsageRollup.objects.create(  # last month: not this month's spend
        day=month_start - timedelta(days=1),
        role=coder,
        model=model,
        provider="openrouter",
        calls=9,
        cost=Decimal("100"),
    )
    office_budget = Budget.objects.create(
        name="Office", scope="office", period="month", limit=Decimal("10")
    )
    coder_budget = Budget.objects.create(
        name="Coder", scope="role", role=coder, period="month", limit=Decimal("2")
    )
    Budget.objects.create(
        name="Writer", scope="role", role=writer, period="month", limit=Decimal("5")
    )
    BudgetPeriod.objects.create(
        budget=coder_budget,
        start=month_start,
        end=period_days(period="month", day=today)[1],
        spent=Decimal("1.5") + THIRD,
        reserved=Decimal("0.25"),
    )
    return {"coder": coder, "writer": writer, "office_budget": office_budget}


def test_usage_shows_this_months_spend_per_role_exactly(office) -> None:
    usage = get_usage()

    assert usage["month"] == f"{local_day(timezone.now()):%Y-%m}"
    assert [(row["role"], row["calls"], row["cost"]) for row in usage["roles"]] == [
        ("coder", 3, "1.50000008333333333333334"),
        ("writer", 1, "2"),
    ]
    assert usage["cost"] == "3.50000008333333333333334"


def test_budgets_show_limit_spent_reserved_and_remaining_as_strings(office) -> None:
    budgets = {budget["name"]: budget for budget in get_usage()["budgets"]}

    assert set(budgets) == {"Office", "Coder", "Writer"}
    coder = budgets["Coder"]
    assert (coder["scope"], coder["role"], coder["period"], coder["action"]) == (
        "role",
        "coder",
        "month",
        "block",
    )
    assert (coder["limit"], coder["spent"], coder["reserved"]) == (
        "2",
        "1.50000008333333333333334",
        "0.25",
    )
    assert coder["remaining"] == "0.24999991666666666666666"
    # No call reserved against these yet this period: spent comes from the rollups.
    assert (budgets["Office"]["spent"], budgets["Office"]["remaining"]) == (
        "3.50000008333333333333334",
        "6.49999991666666666666666",
    )
    assert budgets["Office"]["role"] is None
    assert budgets["Writer"]["remaining"] == "3"


def test_scoped_token_sees_only_its_roles_and_the_budgets_over_them(office) -> None:
    usage = get_usage(roles=[office["writer"]])

    assert [row["role"] for row in usage["roles"]] == ["writer"]
    assert usage["cost"] == "2"
    assert [budget["name"] for budget in usage["budgets"]] == ["Office", "Writer"]


def test_remaining_is_never_negative(office) -> None:
    Budget.objects.filter(name="Writer").update(limit=Decimal("1"))

    budgets = {budget["name"]: budget for budget in get_usage()["budgets"]}

    assert budgets["Writer"]["remaining"] == "0"


def test_a_role_without_calls_shows_zero(office) -> None:
    idle = RoleFactory(slug="idle")

    usage = get_usage(roles=[idle])

    assert usage["roles"] == [
        {
            "role": "idle",
            "calls": 0,
            "failed_calls": 0,
            "unpriced_calls": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost": "0",
        }
    ]
