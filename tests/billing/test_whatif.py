"""What-if re-pricing of a month's rollups with another model: exact, and its page."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRollup
from billing.whatif import WhatIfError, WhatIfRow, whatif_reprice
from tests.factories import CatalogModelFactory, ModelPriceFactory, RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

JUNE = (date(2026, 6, 1), date(2026, 7, 1))
THIRD = Decimal("0.00000008333333333333334")
WHATIF = reverse("planning:whatif")


@pytest.fixture
def premium():
    """The target: $3 / $15 per 1M, cache reads at $0.30 per 1M. An older, dearer price
    and a future one exist too: only the price in force now counts."""
    model = CatalogModelFactory(slug="vendor/premium", name="Premium")
    now = timezone.now()
    ModelPriceFactory(model=model, valid_from=now - timedelta(days=400), prompt=Decimal("1"))
    ModelPriceFactory(
        model=model,
        valid_from=now - timedelta(days=1),
        prompt=Decimal("0.000003"),
        completion=Decimal("0.000015"),
        input_cache_read=Decimal("0.0000003"),
    )
    ModelPriceFactory(model=model, valid_from=now + timedelta(days=1), prompt=Decimal("2"))
    return model


@pytest.fixture
def june():
    """Hand-made rollups: coder on a cheap model over two days, writer on another, and
    rows outside June that must not count."""
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer")
    cheap = CatalogModelFactory(slug="vendor/cheap")
    other = CatalogModelFactory(slug="other/model")

    def rollup(role, model, day, **counts):
        return UsageRollup.objects.create(
            day=day, role=role, model=model, provider="openrouter", **counts
        )

    rollup(
        coder,
        cheap,
        date(2026, 6, 1),
        calls=10,
        input_tokens=100_000,
        cached_input_tokens=20_000,
        output_tokens=5_000,
        cost=Decimal("0.05"),
    )
    rollup(
        coder,
        cheap,
        date(2026, 6, 30),
        calls=5,
        input_tokens=50_000,
        output_tokens=1_000,
        cost=THIRD,
    )
    rollup(
        writer,
        other,
        date(2026, 6, 15),
        calls=2,
        input_tokens=1_000,
        output_tokens=100,
        cost=Decimal("0.01"),
    )
    rollup(coder, cheap, date(2026, 5, 31), calls=1, input_tokens=10**9, cost=Decimal("100"))
    rollup(writer, other, date(2026, 7, 1), calls=1, input_tokens=10**9, cost=Decimal("100"))
    return coder, writer


# coder: (150,000 - 20,000) x 0.000003 + 20,000 x 0.0000003 + 6,000 x 0.000015
#      = 0.39 + 0.006 + 0.09
CODER_REPRICED = Decimal("0.486")
CODER_ACTUAL = Decimal("0.05000008333333333333334")
# writer: 1,000 x 0.000003 + 100 x 0.000015
WRITER_REPRICED = Decimal("0.0045")


def test_whatif_reprices_one_role_exactly(june, premium) -> None:
    coder, _ = june

    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=premium, role=coder)

    assert report.rows == (
        WhatIfRow(
            role_slug="coder",
            role_name="Coder",
            models_used=("vendor/cheap",),
            calls=15,
            input_tokens=150_000,
            output_tokens=6_000,
            cached_input_tokens=20_000,
            cache_write_tokens=0,
            reasoning_tokens=0,
            actual=CODER_ACTUAL,
            repriced=CODER_REPRICED,
        ),
    )
    assert report.rows[0].difference == Decimal("0.43599991666666666666666")
    assert report.rows[0].difference_text == "+$0.436000"
    assert report.rows[0].difference_exact == "+$0.43599991666666666666666"
    assert (report.role_slug, report.model_slug) == ("coder", "vendor/premium")
    assert report.prices.prompt == Decimal("0.000003")  # the price in force now


def test_whatif_leaves_out_the_local_helpers_rows(june, premium) -> None:
    coder, _ = june
    helper = CatalogModelFactory(slug="roster/local-helper")
    idle = RoleFactory(slug="idle")
    for role in (coder, idle):
        UsageRollup.objects.create(
            day=date(2026, 6, 2), role=role, model=helper, provider="local",
            helper_calls=3, helper_input_tokens=9_000, helper_savings=Decimal("0.027"),
        )  # fmt: skip

    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=premium, role=None)

    # No paid tokens to re-price: the helper is neither a model used nor a role's usage.
    assert [(r.role_slug, r.models_used, r.repriced) for r in report.rows] == [
        ("coder", ("vendor/cheap",), CODER_REPRICED),
        ("writer", ("other/model",), WRITER_REPRICED),
    ]


def test_whatif_reprices_every_role_with_one_model(june, premium) -> None:
    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=premium, role=None)

    assert [(r.role_slug, r.actual, r.repriced) for r in report.rows] == [
        ("coder", CODER_ACTUAL, CODER_REPRICED),
        ("writer", Decimal("0.01"), WRITER_REPRICED),
    ]
    assert report.rows[1].difference == Decimal("-0.0055")
    assert report.rows[1].difference_text == "-$0.005500"
    assert report.rows[1].difference_exact == "-$0.0055"
    assert report.actual == Decimal("0.06000008333333333333334")
    assert report.repriced == Decimal("0.4905")
    assert report.difference == Decimal("0.43049991666666666666666")
    assert report.role_slug is None


def test_whatif_charges_per_request_and_reasoning_prices(premium) -> None:
    role = RoleFactory(slug="thinker")
    target = CatalogModelFactory(slug="vendor/thinking")
    ModelPriceFactory(
        model=target,
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000002"),
        internal_reasoning=Decimal("0.000004"),
        input_cache_write=Decimal("0.0000015"),
        request=Decimal("0.001"),
    )
    UsageRollup.objects.create(
        day=date(2026, 6, 3),
        role=role,
        model=premium,
        provider="openrouter",
        calls=3,
        input_tokens=1_000,
        cache_write_tokens=400,
        output_tokens=500,
        reasoning_tokens=200,
    )

    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=target, role=role)

    # 600 x 0.000001 + 400 x 0.0000015 + 300 x 0.000002 + 200 x 0.000004 + 3 x 0.001
    assert report.repriced == Decimal("0.0056")
    assert ("Per request", "$0.001 per call") in report.price_lines


def test_whatif_prices_long_context_models_at_the_base_tier_and_says_so(june) -> None:
    coder, _ = june
    tiered = CatalogModelFactory(slug="vendor/tiered")
    ModelPriceFactory(
        model=tiered,
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000002"),
        long_context_threshold=1_000,
        long_context_prompt=Decimal("0.000009"),
    )

    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=tiered, role=coder)

    # 150,000 x 0.000001 + 6,000 x 0.000002, although the summed input exceeds 1,000.
    assert report.repriced == Decimal("0.162")
    assert report.long_context_tier_ignored


def test_whatif_of_an_empty_month_is_zeros(june, premium) -> None:
    coder, _ = june
    april = (date(2026, 4, 1), date(2026, 5, 1))

    everyone = whatif_reprice(start=april[0], end=april[1], model=premium, role=None)
    one = whatif_reprice(start=april[0], end=april[1], model=premium, role=coder)

    assert everyone.rows == ()
    assert (everyone.actual, everyone.repriced, everyone.difference) == (0, 0, 0)
    assert [(r.role_slug, r.calls, r.actual, r.repriced) for r in one.rows] == [
        ("coder", 0, Decimal(0), Decimal(0))
    ]


def test_whatif_refuses_a_model_without_a_price(june) -> None:
    unpriced = CatalogModelFactory(slug="vendor/unpriced")

    with pytest.raises(WhatIfError, match="vendor/unpriced has no input/output price"):
        whatif_reprice(start=JUNE[0], end=JUNE[1], model=unpriced, role=None)


def test_whatif_prices_a_free_local_model_at_zero(june) -> None:
    local = CatalogModelFactory(slug="local/llama", free_when_unpriced=True)

    report = whatif_reprice(start=JUNE[0], end=JUNE[1], model=local, role=None)

    assert report.repriced == 0
    assert report.difference == Decimal("-0.06000008333333333333334")
    assert report.price_valid_from is None


# --- The page ------------------------------------------------------------------------------


@pytest.fixture
def manager_client(client: Client) -> Client:
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(codename="view_reports"))
    client.force_login(user)
    return client


def test_whatif_page_is_forbidden_without_the_reports_permission(client: Client) -> None:
    client.force_login(UserFactory())

    assert client.get(WHATIF).status_code == 403


def test_whatif_page_without_parameters_is_the_form(manager_client: Client, premium) -> None:
    response = manager_client.get(WHATIF)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="month"' in html
    assert '<option value="vendor/premium">Premium · in $3.00 / out $15.00 per 1M' in html
    assert "Cannot re-price" not in html


def test_whatif_page_shows_actual_repriced_and_difference(
    manager_client: Client, june, premium
) -> None:
    response = manager_client.get(
        WHATIF, {"month": "2026-06", "model": "vendor/premium", "role": "coder"}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "June 2026 on Premium" in html
    assert "for the coder role" in html
    assert "price in force now" in html
    assert "input $3.00 per 1M tokens; output $15.00 per 1M tokens" in html
    assert '<div class="calc-exact">$0.05000008333333333333334</div>' in html
    assert '<div class="calc-exact">$0.486</div>' in html
    assert (
        '<td class="num whatif-diff">+$0.436000'
        '<div class="calc-exact">+$0.43599991666666666666666</div></td>'
    ) in html
    assert "Writer" not in html.split("<table", 1)[1]


def test_whatif_page_for_every_role(manager_client: Client, june, premium) -> None:
    response = manager_client.get(
        WHATIF, {"month": "2026-06", "model": "vendor/premium", "scope": "all", "role": "coder"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "for every role" in html
    table = html.split("<table", 1)[1]
    assert "Coder" in table
    assert "Writer" in table
    assert '<div class="calc-exact">$0.4905</div>' in table


def test_whatif_page_for_an_empty_month_shows_zeros(manager_client: Client, premium) -> None:
    response = manager_client.get(
        WHATIF, {"month": "2026-04", "model": "vendor/premium", "scope": "all"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "No usage in April 2026." in html
    assert html.count('<div class="calc-exact">$0</div>') == 3
    assert '<td class="num whatif-diff">$0.000000<div class="calc-exact">$0</div></td>' in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"month": "2026-06", "model": "nope/nothing", "scope": "all"},
            "Unknown model “nope/nothing”: use a catalog id from the list.",
        ),
        (
            {"month": "2026-13", "model": "vendor/premium", "scope": "all"},
            "“2026-13” is not a month: use YYYY-MM, e.g. 2026-06.",
        ),
        (
            {"month": "9999-12", "model": "vendor/premium", "scope": "all"},
            "“9999-12” is not a month: use YYYY-MM, e.g. 2026-06.",
        ),
        (
            {"month": "June", "model": "vendor/premium", "scope": "all"},
            "“June” is not a month: use YYYY-MM, e.g. 2026-06.",
        ),
        ({"month": "2026-06", "model": "vendor/premium", "role": "ghost"}, "Unknown role “ghost”."),
        (
            {"month": "2026-06", "model": "vendor/premium", "scope": "everything"},
            "Select a valid choice. everything is not one of the available choices.",
        ),
        (
            {"month": "2026-06", "model": "vendor/premium"},
            "Choose a role, or re-price every role (scope=all).",
        ),
        (
            {"month": "2026-06", "model": "vendor/unpriced", "scope": "all"},
            "vendor/unpriced has no input/output price in force",
        ),
    ],
)
def test_whatif_page_answers_bad_parameters_with_a_clear_400(
    manager_client: Client, june, premium, params: dict, message: str
) -> None:
    CatalogModelFactory(slug="vendor/unpriced")

    response = manager_client.get(WHATIF, params)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Cannot re-price" in html
    assert message in html
