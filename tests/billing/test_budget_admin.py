"""The budget admin: a validated budget form, read-only counters and alerts."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.admin_budgets import BudgetForm
from billing.models import Alert, AlertKind, Budget, BudgetPeriod, BudgetScope
from tests.factories import RoleFactory

pytestmark = pytest.mark.django_db


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "Office monthly",
        "scope": BudgetScope.OFFICE,
        "role": "",
        "period": "month",
        "limit": "50.00",
        "action": "block",
        "thresholds": "50, 80, 100",
        "is_active": "on",
    }
    return {**data, **overrides}


@pytest.fixture
def budget() -> Budget:
    coder = RoleFactory(slug="coder", name="Coder")
    budget = Budget.objects.create(
        name="Coder monthly",
        scope=BudgetScope.ROLE,
        role=coder,
        period="month",
        limit=Decimal("50"),
        thresholds=[50, 80, 100],
    )
    this_month = timezone.localdate().replace(day=1)
    BudgetPeriod.objects.create(
        budget=budget,
        start=this_month,
        end=(this_month + timedelta(days=32)).replace(day=1),
        reserved=Decimal("1.5"),
        spent=Decimal("40.1234"),
    )
    # A year old: listed under Budget periods, not on the budget's page.
    BudgetPeriod.objects.create(
        budget=budget, start=date(2020, 1, 1), end=date(2020, 2, 1), spent=Decimal("7.77")
    )
    Alert.objects.create(
        kind=AlertKind.THRESHOLD,
        budget=budget,
        period_start=this_month,
        threshold=80,
        amount=Decimal("40.1234"),
        limit=Decimal("50"),
        message="Budget 'Coder monthly' reached 80% of $50.00.",
        delivery_error="Webhook to hooks.example.com answered HTTP 500.",
    )
    return budget


# --- The form -------------------------------------------------------------------------------


def test_adding_a_budget_stores_sorted_thresholds(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:billing_budget_add"), form_data(thresholds=" 100,50 , 80,")
    )

    assert response.status_code == 302
    budget = Budget.objects.get()
    assert (budget.name, budget.scope, budget.role, budget.limit) == (
        "Office monthly",
        "office",
        None,
        Decimal("50"),
    )
    assert budget.thresholds == [50, 80, 100]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"limit": "-5"}, "limit", "The limit must be an amount in USD above zero."),
        ({"limit": "0"}, "limit", "The limit must be an amount in USD above zero."),
        ({"scope": "role", "role": ""}, "role", "Choose the role this budget limits."),
        (
            {"thresholds": "0, 150"},
            "thresholds",
            "Each threshold must be between 1 and 100 (percent of the limit); out of range: "
            "0, 150.",
        ),
        (
            {"thresholds": "abc"},
            "thresholds",
            "Thresholds are whole percentages separated by commas, e.g. 50, 80, 100; not a "
            "whole number: abc.",
        ),
        (
            {"thresholds": "50, 80.5, 1e2"},
            "thresholds",
            "Thresholds are whole percentages separated by commas, e.g. 50, 80, 100; not a "
            "whole number: 80.5, 1e2.",
        ),
        ({"thresholds": "80, 50, 80"}, "thresholds", "Each threshold once; repeated: 80."),
        (
            {"thresholds": " , "},
            "thresholds",
            "Enter at least one percentage of the limit, e.g. 50, 80, 100.",
        ),
    ],
)
def test_budget_form_refuses_invalid_input_with_a_clear_message(
    overrides: dict[str, str], field: str, message: str
) -> None:
    form = BudgetForm(data=form_data(**overrides))

    assert not form.is_valid()
    assert form.errors == {field: [message]}


def test_office_budget_with_a_role_is_refused() -> None:
    coder = RoleFactory()

    form = BudgetForm(data=form_data(role=str(coder.pk)))

    assert form.errors == {"role": ["An office budget covers every role; leave the role empty."]}


def test_role_budget_needs_and_keeps_its_role() -> None:
    coder = RoleFactory()

    form = BudgetForm(data=form_data(scope="role", role=str(coder.pk)))

    assert form.is_valid(), form.errors
    assert form.save().role == coder


def test_invalid_post_shows_the_message_on_the_admin_page(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:billing_budget_add"), form_data(limit="-5", thresholds="abc")
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "The limit must be an amount in USD above zero." in page
    assert "not a whole number: abc." in page
    assert Budget.objects.count() == 0


# --- Pages ----------------------------------------------------------------------------------


def test_budget_list_shows_limit_and_thresholds(admin_client: Client, budget: Budget) -> None:
    response = admin_client.get(reverse("admin:billing_budget_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Coder monthly" in page
    assert "$50<" in page
    assert "50, 80, 100" in page


def test_budget_change_page_shows_recent_periods_read_only(
    admin_client: Client, budget: Budget
) -> None:
    response = admin_client.get(reverse("admin:billing_budget_change", args=[budget.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'value="50, 80, 100"' in page
    assert 'value="50"' in page  # the limit as entered, not padded to 26 places
    assert "$40.1234" in page
    assert "$1.5" in page
    assert "80.2%" in page
    assert "$7.77" not in page  # older than three months
    assert 'name="period"' not in page  # fixed once the budget exists


def test_editing_a_budget_keeps_scope_role_and_period(admin_client: Client, budget: Budget) -> None:
    response = admin_client.post(
        reverse("admin:billing_budget_change", args=[budget.pk]),
        {
            "name": "Coder monthly",
            "limit": "75",
            "action": "alert_only",
            "thresholds": "90",
            "is_active": "on",
            # The read-only inline's management form, as the browser sends it.
            "periods-TOTAL_FORMS": "1",
            "periods-INITIAL_FORMS": "1",
            "periods-MIN_NUM_FORMS": "0",
            "periods-MAX_NUM_FORMS": "0",
            "periods-0-id": str(budget.periods.order_by("-start").first().pk),
            "periods-0-budget": str(budget.pk),
        },
    )

    assert response.status_code == 302, response.content.decode()
    budget.refresh_from_db()
    assert (budget.limit, budget.action, budget.thresholds) == (Decimal("75"), "alert_only", [90])
    assert (budget.scope, budget.role.slug, budget.period) == ("role", "coder", "month")


def test_budgets_cannot_be_deleted_in_the_admin(admin_client: Client, budget: Budget) -> None:
    response = admin_client.get(reverse("admin:billing_budget_delete", args=[budget.pk]))

    assert response.status_code == 403


def test_budget_period_list_renders_every_period(admin_client: Client, budget: Budget) -> None:
    response = admin_client.get(reverse("admin:billing_budgetperiod_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "$40.1234" in page
    assert "$7.77" in page
    assert "15.5%" in page  # 7.77 of 50


def test_alert_list_shows_delivery_and_filters_by_it(admin_client: Client, budget: Budget) -> None:
    Alert.objects.create(kind=AlertKind.MANUAL, message="Office spend is $6.20.")
    url = reverse("admin:billing_alert_changelist")

    everything = admin_client.get(url).content.decode()
    errors = admin_client.get(url, {"delivery": "error"}).content.decode()
    manual = admin_client.get(url, {"kind__exact": "manual"}).content.decode()

    assert "reached 80% of $50.00" in everything
    assert "Office spend is $6.20." in everything
    assert "reached 80% of $50.00" in errors
    assert "Office spend is $6.20." not in errors
    assert "Office spend is $6.20." in manual
    assert "reached 80%" not in manual


def test_alert_page_is_read_only(admin_client: Client, budget: Budget) -> None:
    alert = Alert.objects.get()

    response = admin_client.get(reverse("admin:billing_alert_change", args=[alert.pk]))
    add = admin_client.get(reverse("admin:billing_alert_add"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "$40.1234" in page
    assert "Webhook to hooks.example.com answered HTTP 500." in page
    assert "<textarea" not in page
    assert add.status_code == 403
