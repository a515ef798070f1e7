"""The manager report page, its CSV exports, and the SVG charts they draw."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from billing.charts import Bar, TrendPoint, bar_chart, trend_chart
from billing.models import UsageRollup
from billing.reports import TASK_COLUMNS, breakdown_columns
from tests.factories import CatalogModelFactory, RoleFactory, TaskFactory

NOW = datetime(2026, 6, 17, 15, 30, tzinfo=UTC)
THIRD = Decimal("0.00000008333333333333334")
REPORTS = reverse("billing:reports")
EXPORT = reverse("billing:report_export")


def person(username: str, *, perm: bool = False, **fields):
    # Created without UserFactory: the pages log in with force_login, no password hashing.
    user = get_user_model().objects.create(username=username, **fields)
    if perm:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="billing", codename="view_reports")
        )
    return user


@pytest.fixture
def manager(client: Client):
    user = person("manager", perm=True)
    client.force_login(user)
    return user


@pytest.fixture
def june(manager):
    """Two roles' June rollups (one with an unpriced call and a hostile name) and a task."""
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer <script>alert(1)</script>")
    claude = CatalogModelFactory(slug="anthropic/claude", name="Claude")
    gpt = CatalogModelFactory(slug="openai/gpt", name="GPT")
    UsageRollup.objects.create(
        day=date(2026, 6, 3), role=coder, model=claude, provider="openrouter", person=manager,
        calls=2, input_tokens=1_000, output_tokens=10, cost=THIRD * 3,
    )  # fmt: skip
    UsageRollup.objects.create(
        day=date(2026, 6, 17), role=writer, model=gpt, provider="openai",
        calls=1, unpriced_calls=1, input_tokens=40, output_tokens=4, cost=Decimal("0.5"),
    )  # fmt: skip
    return TaskFactory(
        role=coder,
        title="Fix the invoice",
        cost=THIRD * 3,
        created_by=manager,
        created_at=datetime(2026, 6, 3, 9, tzinfo=UTC),
    )


def get(client: Client, url: str, **params: str):
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        return client.get(url, params)


def csv_rows(response) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


# --- access -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    for url in (REPORTS, EXPORT):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_staff_without_the_report_permission_get_403(client: Client) -> None:
    client.force_login(person("clerk", is_staff=True))

    assert client.get(REPORTS).status_code == 403
    assert client.get(EXPORT, {"month": "2026-06", "by": "role"}).status_code == 403
    # And the navigation does not offer the link.
    assert "Reports</a>" not in client.get(reverse("office:task_list")).text


@pytest.mark.django_db
def test_a_superuser_sees_the_report(client: Client) -> None:
    client.force_login(person("root", is_superuser=True, is_staff=True))

    assert get(client, REPORTS, month="2026-06").status_code == 200


@pytest.mark.django_db
def test_the_navigation_links_to_reports_for_managers(client: Client, manager) -> None:
    page = client.get(reverse("office:task_list")).text

    assert f'<a href="{REPORTS}">Reports</a>' in page


@pytest.mark.django_db
def test_the_report_only_answers_get(client: Client, manager) -> None:
    assert client.post(REPORTS).status_code == 405


# --- the page -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_report_page_shows_totals_charts_breakdowns_tasks_and_csv_links(
    client: Client, june
) -> None:
    response = get(client, REPORTS, month="2026-06")
    page = response.text

    assert response.status_code == 200
    assert "Spend in June 2026" in page
    # Total cost, rounded for people, with every digit in the tooltip.
    assert 'title="$0.50000025000000000000002">$0.500000<' in page
    # The unpriced call is counted and called out, not shown as free.
    assert "1 call used a model with no price" in page
    assert page.count('<svg class="chart chart-') == 3
    assert 'aria-label="Spend per day"' in page
    assert "anthropic/claude" in page
    assert "Claude" in page
    assert f'href="{reverse("office:task_detail", args=[june.pk])}"' in page
    assert "Fix the invoice" in page
    for by in ("role", "model", "provider", "person", "day", "task"):
        assert f'href="{EXPORT}?month=2026-06&amp;by={by}"' in page
    assert '<a href="?month=2026-05" rel="prev">' in page
    assert '<a href="?month=2026-07" rel="next">' in page


@pytest.mark.django_db
def test_report_page_escapes_names_in_tables_and_charts(client: Client, june) -> None:
    page = get(client, REPORTS, month="2026-06").text

    assert "<script>alert(1)</script>" not in page
    assert "Writer &lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.django_db
def test_report_defaults_to_the_current_month(client: Client, june) -> None:
    response = get(client, REPORTS)

    assert response.status_code == 200
    assert "Spend in June 2026" in response.text
    assert 'value="2026-06"' in response.text


@pytest.mark.django_db
def test_an_empty_month_shows_an_empty_report(client: Client, june) -> None:
    response = get(client, REPORTS, month="2031-02")

    assert response.status_code == 200
    assert "Spend in February 2031" in response.text
    assert "nothing was spent" in response.text
    assert 'title="$0">$0.000000<' in response.text


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"month": "2026-13"}, "There is no month 13: use 01 to 12."),
        ({"month": "abc"}, "Enter a month as YYYY-MM, e.g. 2026-06 (got &#x27;abc&#x27;)."),
        ({"month": "2026-06", "by": "colour"}, "Unknown breakdown colour"),
    ],
)
def test_bad_input_answers_400_with_a_clear_message(
    client: Client, manager, params: dict[str, str], message: str
) -> None:
    for url in (REPORTS, EXPORT):
        response = get(client, url, **params)
        assert response.status_code == 400, url
        assert message in response.text, url


@pytest.mark.django_db
def test_export_without_a_breakdown_answers_400(client: Client, manager) -> None:
    response = get(client, EXPORT, month="2026-06")

    assert response.status_code == 400
    assert "Choose a breakdown: role, model, provider, person, day, task." in response.text


# --- CSV ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csv_by_role_has_exact_decimal_text(client: Client, june) -> None:
    response = get(client, EXPORT, month="2026-06", by="role")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"] == (
        'attachment; filename="roster-spend-2026-06-by-role.csv"'
    )
    rows = csv_rows(response)
    assert list(rows[0]) == breakdown_columns(by="role")
    assert [(r["role"], r["calls"], r["unpriced_calls"], r["cost_usd"]) for r in rows] == [
        ("writer", "1", "1", "0.5"),
        ("coder", "2", "0", "0.00000025000000000000002"),
    ]


@pytest.mark.django_db
def test_csv_by_day_and_by_task(client: Client, june) -> None:
    days = csv_rows(get(client, EXPORT, month="2026-06", by="day"))
    tasks = csv_rows(get(client, EXPORT, month="2026-06", by="task"))

    assert [(r["day"], r["cost_usd"]) for r in days] == [
        ("2026-06-03", "0.00000025000000000000002"),
        ("2026-06-17", "0.5"),
    ]
    assert tasks == [
        {
            "task": str(june.pk),
            "title": "Fix the invoice",
            "role": "coder",
            "person": "manager",
            "status": "queued",
            "created_at": "2026-06-03T09:00:00+00:00",
            "provider_calls": "0",
            "input_tokens": "0",
            "output_tokens": "0",
            "cost_usd": "0.00000025000000000000002",
        }
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("by", ["role", "model", "provider", "person", "day", "task"])
def test_csv_of_an_empty_month_is_a_header_row(client: Client, june, by: str) -> None:
    response = get(client, EXPORT, month="2031-02", by=by)

    assert response.status_code == 200
    header = list(TASK_COLUMNS) if by == "task" else breakdown_columns(by=by)
    assert b"".join(response.streaming_content).decode() == ",".join(header) + "\n"


# --- charts -------------------------------------------------------------------------------


def bar(label: str, value: str) -> Bar:
    return Bar(label=label, value=Decimal(value), value_text=f"${value}", tooltip=f"{label}!")


def test_bar_chart_bars_are_proportional_to_their_values() -> None:
    svg = bar_chart(bars=[bar("coder", "2"), bar("writer", "1"), bar("idle", "0")], title="T")

    # 230 units for the longest bar: 480 wide, less 150 for labels and 100 for values.
    assert re.findall(r'<rect [^>]*width="([^"]+)"', svg) == ["230.0", "115.0", "0"]
    assert svg.startswith(
        '<svg class="chart chart-bars" viewBox="0 0 480 86" role="img" aria-label="T"'
    )
    assert "<title>coder!</title>" in svg


def test_bar_chart_escapes_and_shortens_labels() -> None:
    label = "<b>a very long role name that goes on</b>"
    svg = bar_chart(bars=[bar(label, "1")], title="Spend & more")

    assert "<b>" not in svg
    assert "&lt;b&gt;a very long role…<" in svg
    assert "<title>&lt;b&gt;a very long role name that goes on&lt;/b&gt;!</title>" in svg
    assert 'aria-label="Spend &amp; more"' in svg


def test_charts_without_data_say_so() -> None:
    assert "No spend to show" in bar_chart(bars=[], title="T")
    assert "No spend to show" in trend_chart(points=[], title="T")


def test_trend_chart_plots_points_left_to_right_from_the_baseline() -> None:
    points = [
        TrendPoint(label=f"{n} Jun", value=Decimal(value), tooltip=f"day {n}")
        for n, value in ((1, "0"), (2, "5"), (3, "10"))
    ]

    svg = trend_chart(points=points, title="Per day", top_label="$10 max")

    # Plot: x from 8 to 792, y from 192 (zero) up to 26 (the largest value).
    assert 'points="8.0,192.0 400.0,109.0 792.0,26.0"' in svg
    assert svg.count('<circle cx="') == 3
    assert "<title>day 2</title>" in svg
    assert "$10 max" in svg
    assert re.findall(r'text-anchor="(\w+)" class="chart-label">(\d Jun)<', svg) == [
        ("start", "1 Jun"),
        ("middle", "2 Jun"),
        ("end", "3 Jun"),
    ]


def test_trend_chart_of_zeros_lies_on_the_baseline() -> None:
    points = [TrendPoint(label="1", value=Decimal(0), tooltip="")] * 2

    assert 'points="8.0,192.0 792.0,192.0"' in trend_chart(points=points, title="T")
