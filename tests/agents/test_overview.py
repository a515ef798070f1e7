"""The office overview (the site root): each active role's model, this month's spend,
budget bars and queue depth, against known data."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import CandidateSlot, RouteCandidate, RoutingPolicy
from agents.overview import office_overview
from billing.models import Budget, BudgetPeriod, UsageRollup
from billing.periods import local_day, period_days
from office.models import TaskStatus
from tests.factories import (
    CatalogModelFactory,
    RoleBindingFactory,
    RoleFactory,
    TaskFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def office():
    """Four roles (one unbound, one retired), this and last month's spend, two budgets
    shown and one paused, and tasks in every state."""
    today = local_day(timezone.now())
    month_start, month_end = period_days(period="month", day=today)
    coder = RoleBindingFactory(role__slug="coder", model__slug="vendor/coder").role
    writer_binding = RoleBindingFactory(
        role__slug="writer", model__slug="vendor/writer", policy=RoutingPolicy.TIERED
    )
    writer = writer_binding.role
    for position, (slot, slug) in enumerate(
        [(CandidateSlot.LOW, "vendor/small"), (CandidateSlot.HIGH, "vendor/large")], start=1
    ):
        RouteCandidate.objects.create(
            binding=writer_binding,
            slot=slot,
            position=position,
            model=CatalogModelFactory(slug=slug),
            credential=writer_binding.credential,
        )
    idle = RoleFactory(slug="idle", name="Idle")
    retired = RoleFactory(slug="retired", is_active=False)

    model = CatalogModelFactory()

    def spend(role, day, cost: str, provider: str = "openrouter") -> None:
        UsageRollup.objects.create(
            day=day, role=role, model=model, provider=provider, calls=1, cost=Decimal(cost)
        )

    spend(coder, today, "0.5")
    spend(coder, today, "0.25", provider="openai")
    spend(writer, today, "1.000000000000000000001")
    spend(retired, today, "2")
    spend(coder, month_start - timedelta(days=1), "100")  # last month
    office_budget = Budget.objects.create(
        name="Office monthly", scope="office", period="month", limit=Decimal("10")
    )
    BudgetPeriod.objects.create(
        budget=office_budget,
        start=month_start,
        end=month_end,
        spent=Decimal("3.75"),
        reserved=Decimal("0.5"),
    )
    Budget.objects.create(
        name="Coder daily", scope="role", role=coder, period="day", limit=Decimal("1")
    )
    Budget.objects.create(
        name="Writer paused",
        scope="role",
        role=writer,
        period="day",
        limit=Decimal("1"),
        is_active=False,
    )
    for status in (TaskStatus.QUEUED, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.DONE):
        TaskFactory(role=coder, status=status)
    TaskFactory(role=writer, status=TaskStatus.PREPARING)
    TaskFactory(role=writer, status=TaskStatus.CANCELLED)
    return {"coder": coder, "writer": writer, "idle": idle}


def test_the_overview_adds_up_known_data(office) -> None:
    overview = office_overview()

    rows = {row.role.slug: row for row in overview.roles}
    assert list(rows) == ["coder", "idle", "writer"]  # active roles, by slug
    # The retired role's spend still counts for the office: it was paid.
    assert overview.spent == Decimal("3.750000000000000000001")
    assert rows["coder"].spent == Decimal("0.75")
    assert rows["writer"].spent == Decimal("1.000000000000000000001")
    assert rows["idle"].spent == Decimal("0")

    assert rows["coder"].models == ["vendor/coder"]
    assert rows["writer"].models == ["vendor/small", "vendor/large"]
    assert rows["idle"].models == []
    assert rows["idle"].binding is None

    assert (rows["coder"].queued, rows["coder"].preparing, rows["coder"].running) == (2, 0, 1)
    assert (rows["writer"].queued, rows["writer"].preparing, rows["writer"].running) == (0, 1, 0)
    assert rows["idle"].in_queue == 0
    assert (overview.in_queue, overview.running) == (4, 1)

    [office_budget] = overview.office_budgets
    assert (office_budget.spent, office_budget.reserved) == (Decimal("3.75"), Decimal("0.5"))
    assert office_budget.spent_percent == Decimal("37.5")
    assert office_budget.reserved_percent == Decimal("5.0")
    assert office_budget.remaining == Decimal("5.75")
    # No counter row yet today: read from the rollups, as a first reservation would.
    [coder_budget] = rows["coder"].budgets
    assert coder_budget.spent == Decimal("0.75")
    assert coder_budget.spent_percent == Decimal("75.0")
    assert coder_budget.thresholds_reached == [50]
    assert rows["writer"].budgets == []  # its only budget is paused


def test_the_overview_page_shows_each_role_and_the_totals(client: Client, office) -> None:
    client.force_login(UserFactory(groups=["staff"]))

    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="office-month-spend" title="$3.750000000000000000001">$3.750000</dd>' in page
    assert '<dd id="office-queue-depth">4</dd>' in page
    assert 'id="role-coder"' in page
    assert "<code>vendor/small</code>, <code>vendor/large</code>" in page
    assert "No model bound: tasks are refused" in page
    assert "2 queued, 0 preparing, 1 running" in page
    assert 'style="width: 37.5%"' in page  # the office budget's bar
    assert 'style="width: 5.0%"' in page  # and its reserved part
    assert 'style="width: 75.0%"' in page  # the coder's
    assert "retired" not in page
    assert f'href="{reverse("office:task_create")}?role=coder"' in page


def test_an_empty_office_says_what_to_do(client: Client) -> None:
    client.force_login(UserFactory(groups=["staff"]))

    page = client.get("/").content.decode()

    assert "No active roles yet." in page
    assert '<dd class="total-main" id="office-month-spend" title="$0">$0.000000</dd>' in page


def test_the_overview_reads_in_a_fixed_number_of_queries(
    office, django_assert_max_num_queries
) -> None:
    for n in range(10):
        RoleBindingFactory(role__slug=f"extra-{n}")

    with django_assert_max_num_queries(10):
        overview = office_overview()
        for row in overview.roles:
            _ = (row.models, row.simulated, row.budgets)
