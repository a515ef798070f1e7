"""The budgets page: each budget in its current period, its bar, action and thresholds,
the alert history and the CSV links; and who may open it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.budget_overview import budget_states
from billing.models import Alert, AlertKind, Budget, BudgetPeriod, UsageRollup
from billing.periods import local_day, period_days
from tests.factories import CatalogModelFactory, RoleFactory, UsageFactory, UserFactory

pytestmark = pytest.mark.django_db
BUDGETS = reverse("billing:budgets")


@pytest.fixture
def budgets():
    today = local_day(timezone.now())
    start, end = period_days(period="week", day=today)
    coder = RoleFactory(slug="coder", name="Coder")
    office = Budget.objects.create(
        name="Office weekly",
        scope="office",
        period="week",
        limit=Decimal("20"),
        action="downgrade",
        thresholds=[25, 90],
    )
    BudgetPeriod.objects.create(
        budget=office, start=start, end=end, spent=Decimal("25"), reserved=Decimal("1")
    )
    # An older period of the same budget must not be read as the current one.
    BudgetPeriod.objects.create(
        budget=office, start=start - timedelta(weeks=1), end=start, spent=Decimal("3")
    )
    coder_budget = Budget.objects.create(
        name="Coder <b>monthly</b>",
        scope="role",
        role=coder,
        period="month",
        limit=Decimal("4"),
        action="alert_only",
    )
    UsageRollup.objects.create(
        day=today, role=coder, model=CatalogModelFactory(), provider="x", cost=Decimal("1")
    )
    paused = Budget.objects.create(
        name="Paused", scope="office", period="day", limit=Decimal("1"), is_active=False
    )
    Alert.objects.create(
        kind=AlertKind.THRESHOLD,
        budget=office,
        period_start=start,
        threshold=90,
        amount=Decimal("18"),
        limit=Decimal("20"),
        message="Budget 'Office weekly' reached 90% of $20.00.",
        emailed_at=timezone.now(),
        delivery_error="Webhook to hooks.example answered HTTP 500.",
    )
    Alert.objects.create(
        kind=AlertKind.DRIFT,
        usage=UsageFactory(),
        amount=Decimal("0.01"),
        message="Call abc: the provider reported <more>.",
    )
    return {"office": office, "coder": coder_budget, "paused": paused}


@pytest.fixture
def manager_client(client: Client) -> Client:
    client.force_login(UserFactory(groups=["manager"]))
    return client


def test_budget_states_read_the_current_period_or_the_rollups(budgets) -> None:
    states = {state.budget.name: state for state in budget_states(active_only=False)}

    office = states["Office weekly"]
    assert (office.spent, office.reserved) == (Decimal("25"), Decimal("1"))
    assert office.spent_percent == Decimal("125.0")
    assert (office.spent_bar, office.reserved_bar) == (Decimal("100"), Decimal("0"))
    assert office.is_reached
    assert office.remaining == Decimal("0")
    assert office.thresholds_reached == [25, 90]
    coder = states["Coder <b>monthly</b>"]
    assert (coder.spent, coder.reserved, coder.spent_percent) == (
        Decimal("1"),
        Decimal("0"),
        Decimal("25.0"),
    )
    assert not coder.is_reached
    assert "Paused" not in {state.budget.name for state in budget_states()}


def test_the_page_shows_each_budget_with_its_bar_action_and_thresholds(
    manager_client: Client, budgets
) -> None:
    response = manager_client.get(BUDGETS)

    assert response.status_code == 200
    page = response.content.decode()
    office = page[page.index(f'id="budget-{budgets["office"].pk}"') :]
    office = office[: office.index("</tr>")]
    assert "Whole office" in office
    assert "$20.000000" in office
    assert "$25.000000" in office
    assert "$1.000000" in office  # reserved
    assert "125.0 %" in office
    assert "limit reached" in office
    assert 'style="width: 100%"' in office
    assert "Downgrade to the role&#x27;s over-budget model" in office
    assert '<strong title="reached">25 %</strong>, <strong title="reached">90 %</strong>' in office
    coder = page[page.index(f'id="budget-{budgets["coder"].pk}"') :]
    coder = coder[: coder.index("</tr>")]
    assert "Coder &lt;b&gt;monthly&lt;/b&gt;" in coder
    assert 'Coder <span class="muted">(coder)</span>' in coder
    assert 'style="width: 25.0%"' in coder
    assert "Alert only: never stop work" in coder
    assert "50 %, 80 %, 100 %" in coder
    assert "paused" in page[page.index(f'id="budget-{budgets["paused"].pk}"') :]


def test_the_page_lists_the_alert_history_newest_first(manager_client: Client, budgets) -> None:
    page = manager_client.get(BUDGETS).content.decode()

    alerts = page[page.index('id="alerts-table"') :]
    assert alerts.index("Provider-reported cost differs") < alerts.index("Budget threshold crossed")
    assert "reached 90% of $20.00." in alerts
    assert "the provider reported &lt;more&gt;." in alerts
    assert "Webhook to hooks.example answered HTTP 500." in alerts
    assert f'href="#budget-{budgets["office"].pk}">Office weekly</a>' in alerts


def test_the_page_links_this_months_csv_exports(manager_client: Client, budgets) -> None:
    page = manager_client.get(BUDGETS).content.decode()
    month = f"{local_day(timezone.now()):%Y-%m}"

    for by in ("role", "model", "provider", "person", "day", "task"):
        assert f'href="{reverse("billing:report_export")}?month={month}&amp;by={by}"' in page
    csv = manager_client.get(reverse("billing:report_export"), {"month": month, "by": "role"})
    assert csv.status_code == 200


def test_without_budgets_the_page_says_so(manager_client: Client) -> None:
    page = manager_client.get(BUDGETS).content.decode()

    assert "No budgets yet: spending is not limited." in page
    assert "No alerts yet." in page


def test_the_page_needs_the_budget_and_report_permissions(client: Client) -> None:
    client.force_login(UserFactory(groups=["staff"]))
    assert client.get(BUDGETS).status_code == 403

    # Reports alone are not enough: reading budgets is its own right (the manager group
    # has both).
    reader = UserFactory()
    reader.user_permissions.add(*_perms("view_reports"))
    client.force_login(reader)
    assert client.get(BUDGETS).status_code == 403
    assert "Budgets</a>" not in client.get(reverse("billing:reports")).content.decode()

    reader.user_permissions.add(*_perms("view_budget"))
    client.force_login(reader)
    assert client.get(BUDGETS).status_code == 200
    assert f'href="{BUDGETS}">Budgets</a>' in client.get(reverse("billing:reports")).text


def test_the_page_only_answers_get(manager_client: Client) -> None:
    assert manager_client.post(BUDGETS).status_code == 405


def _perms(*codenames: str):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="billing", codename__in=codenames)


def test_manager_pages_keep_stable_hooks_for_browser_tests(manager_client: Client) -> None:
    RoleFactory(runnable=True)

    calculator = manager_client.get(reverse("planning:calculator")).content.decode()
    report = manager_client.get(reverse("billing:reports")).content.decode()

    assert 'id="calc-totals"' in calculator
    assert '<p class="calc-total" id="office-total">' in calculator
    assert '<dd class="total-main" id="report-total">' in report
