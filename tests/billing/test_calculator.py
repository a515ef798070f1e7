"""The cost calculator: exact arithmetic, history defaults, the page, its fragment, Apply."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import RoleBinding
from billing.calculator import (
    DEFAULT_WORKLOAD,
    CalculatorError,
    Workload,
    calculator_apply_models,
    calculator_model_choices,
    calculator_workloads,
    estimate_monthly_cost,
)
from billing.models import UsageRollup
from billing.periods import local_day
from billing.pricing import UnitPrices
from tests.factories import (
    CatalogModelFactory,
    ModelPriceFactory,
    RoleBindingFactory,
    RoleFactory,
    TaskFactory,
    UserFactory,
)

# An OpenRouter-style price with more digits than a float or a 28-digit context keeps.
THIRD = Decimal("0.00000008333333333333334")
CHEAP = {"prompt": Decimal("0.0000003"), "completion": Decimal("0.0000025")}
PREMIUM = {"prompt": Decimal("0.000003"), "completion": Decimal("0.000015")}

TIMES = "\u00d7"
FORMULA = (
    f"cost = tasks/month {TIMES} (input tokens {TIMES} input price + output tokens {TIMES} "
    "output price)"
)

CALCULATOR = reverse("planning:calculator")
ROW = reverse("planning:calculator_row")
APPLY = reverse("planning:calculator_apply")


def workload(tasks: int, input_tokens: int, output_tokens: int, cache: str = "0") -> Workload:
    return Workload(
        tasks_per_month=tasks,
        input_tokens_per_task=input_tokens,
        output_tokens_per_task=output_tokens,
        cache_hit_percent=Decimal(cache),
    )


# --- The arithmetic -----------------------------------------------------------------------


def test_estimate_is_exact_for_hand_made_inputs() -> None:
    estimate = estimate_monthly_cost(
        workload=workload(1_000, 1_000, 500), prices=UnitPrices(**CHEAP)
    )

    assert estimate.per_task == Decimal("0.00155")
    assert estimate.monthly == Decimal("1.55")


def test_estimate_charges_the_cached_share_at_the_cache_read_price() -> None:
    prices = UnitPrices(**PREMIUM, input_cache_read=Decimal("0.0000003"))

    estimate = estimate_monthly_cost(workload=workload(10, 1_000, 0, "25"), prices=prices)

    # 750 x 0.000003 + 250 x 0.0000003 = 0.00225 + 0.000075
    assert estimate.uncached_input_per_task == Decimal("0.00225")
    assert estimate.cached_input_per_task == Decimal("0.000075")
    assert estimate.monthly == Decimal("0.02325")


def test_estimate_bills_cached_tokens_as_input_when_the_model_has_no_cache_price() -> None:
    estimate = estimate_monthly_cost(
        workload=workload(10, 1_000, 0, "25"), prices=UnitPrices(**PREMIUM)
    )

    assert estimate.monthly == Decimal("0.03")


def test_estimate_keeps_every_digit_of_long_prices_and_fractional_cached_tokens() -> None:
    prices = UnitPrices(prompt=THIRD, completion=THIRD, input_cache_read=Decimal("0.00000001"))

    # 3 input tokens at 33.33 % cached: 0.9999 cached tokens, 2.0001 uncached.
    estimate = estimate_monthly_cost(workload=workload(1_000_000_000, 3, 0, "33.33"), prices=prices)

    assert estimate.per_task == Decimal("0.000000176674000000000013334")
    assert estimate.monthly == Decimal("176.674000000000013334")


@pytest.mark.parametrize(
    ("work", "message"),
    [
        (workload(-1, 1, 1), "0 or more"),
        (workload(1, 1, -1), "0 or more"),
        (workload(1, 1, 1, "100.01"), "between 0 and 100"),
    ],
)
def test_estimate_refuses_out_of_range_workloads(work: Workload, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_monthly_cost(workload=work, prices=UnitPrices(**CHEAP))


def test_estimate_refuses_an_unpriced_model() -> None:
    with pytest.raises(ValueError, match="no input/output price"):
        estimate_monthly_cost(workload=workload(1, 1, 1), prices=UnitPrices())


# --- The catalog and history --------------------------------------------------------------


@pytest.mark.django_db
def test_model_choices_are_available_models_at_their_price_in_force() -> None:
    now = timezone.now()
    current = CatalogModelFactory(slug="vendor/current", name="Current", context_length=128_000)
    ModelPriceFactory(model=current, valid_from=now - timedelta(days=9), prompt=Decimal("9"))
    ModelPriceFactory(
        model=current, valid_from=now - timedelta(days=1), **CHEAP, input_cache_read=THIRD
    )
    ModelPriceFactory(model=current, valid_from=now + timedelta(days=1), prompt=Decimal("7"))
    gone = CatalogModelFactory(slug="vendor/gone", is_available=False)
    ModelPriceFactory(model=gone)
    CatalogModelFactory(slug="vendor/unpriced")
    CatalogModelFactory(
        slug="local/free", name="Free", free_when_unpriced=True, context_length=None
    )

    choices = calculator_model_choices(at=now)

    assert list(choices) == ["local/free", "vendor/current"]
    chosen = choices["vendor/current"]
    assert (chosen.prompt, chosen.completion, chosen.input_cache_read) == (
        CHEAP["prompt"],
        CHEAP["completion"],
        THIRD,
    )
    assert chosen.label == "Current · in $0.30 / out $2.50 per 1M · 128,000 context"
    assert chosen.cache_read_text == "$0.08333333333333334"
    free = choices["local/free"]
    assert (free.prompt, free.completion, free.is_free) == (Decimal(0), Decimal(0), True)
    assert free.label == "Free · in $0.00 / out $0.00 per 1M · context ?"


@pytest.mark.django_db
def test_workloads_average_the_last_30_days_of_rollups_over_the_roles_tasks() -> None:
    now = timezone.now()
    today = local_day(now)
    coder = RoleFactory(slug="coder")
    quiet = RoleFactory(slug="quiet")
    model = CatalogModelFactory()
    for _ in range(4):
        TaskFactory(role=coder, created_at=now - timedelta(days=3))
    TaskFactory(role=coder, created_at=now - timedelta(days=45))  # before the window
    rollup = {"role": coder, "model": model, "provider": "openrouter"}
    UsageRollup.objects.create(
        day=today,
        calls=3,
        input_tokens=6_000,
        output_tokens=1_001,
        cached_input_tokens=2_500,
        **rollup,
    )
    UsageRollup.objects.create(
        day=today - timedelta(days=29),
        calls=1,
        input_tokens=4_000,
        output_tokens=1_000,
        **rollup,
    )
    UsageRollup.objects.create(
        day=today - timedelta(days=30),
        calls=9,
        input_tokens=999_999,
        output_tokens=999_999,
        **rollup,
    )

    workloads = calculator_workloads(roles=[coder, quiet], now=now)

    measured = workloads[coder.pk]
    assert measured.from_history
    assert measured.tasks_per_month == 4
    assert measured.input_tokens_per_task == 2_500  # 10,000 / 4
    assert measured.output_tokens_per_task == 500  # 2,001 / 4 = 500.25, rounded
    assert measured.cache_hit_percent == Decimal("25.00")  # 2,500 / 10,000
    assert workloads[quiet.pk] == DEFAULT_WORKLOAD
    assert (DEFAULT_WORKLOAD.input_tokens_per_task, DEFAULT_WORKLOAD.output_tokens_per_task) == (
        1_000,
        500,
    )


# --- Pages ----------------------------------------------------------------------------------


def grant(user, *codenames: str):
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="billing", codename__in=codenames)
    )
    return user


@pytest.fixture
def office():
    """Two roles with no history: coder on a cheap model, writer on a premium one."""
    cheap = CatalogModelFactory(slug="vendor/cheap", name="Cheap")
    premium = CatalogModelFactory(slug="vendor/premium", name="Premium")
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer")
    RoleFactory(slug="retired", is_active=False)
    RoleBindingFactory(
        role=coder,
        model=cheap,
        upstream_model="cheap-2025",
        price__prompt=CHEAP["prompt"],
        price__completion=CHEAP["completion"],
    )
    RoleBindingFactory(
        role=writer,
        model=premium,
        price__prompt=PREMIUM["prompt"],
        price__completion=PREMIUM["completion"],
    )
    return coder, writer


@pytest.fixture
def manager_client(client: Client) -> Client:
    client.force_login(grant(UserFactory(), "view_reports"))
    return client


@pytest.fixture
def approver_client(client: Client) -> Client:
    client.force_login(grant(UserFactory(), "view_reports", "apply_calculator"))
    return client


def row_data(slug: str, model: str, tasks: str, inp: str, out: str, cache: str = "0") -> dict:
    return {
        f"{slug}-model": model,
        f"{slug}-tasks": tasks,
        f"{slug}-input_tokens": inp,
        f"{slug}-output_tokens": out,
        f"{slug}-cache_hit": cache,
    }


def fragment(html: str, element_id: str) -> str:
    """The markup of the element with `element_id` (to its first closing tag)."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>" if "totals" in element_id else "</td>", start)]


@pytest.mark.django_db
@pytest.mark.parametrize("url", [CALCULATOR, reverse("planning:whatif")])
def test_planning_pages_send_anonymous_visitors_to_login(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_calculator_is_forbidden_without_the_reports_permission(client: Client, office) -> None:
    client.force_login(UserFactory())

    assert client.get(CALCULATOR).status_code == 403
    assert client.post(ROW, {"row": "coder"}).status_code == 403


@pytest.mark.django_db
def test_calculator_page_prefills_defaults_and_prices_them_exactly(
    manager_client: Client, office
) -> None:
    response = manager_client.get(CALCULATOR)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="coder-model" value="vendor/cheap"' in html
    assert 'name="coder-tasks" value="100"' in html
    assert 'name="coder-input_tokens" value="1000"' in html
    assert 'name="coder-output_tokens" value="500"' in html
    assert 'name="coder-cache_hit" value="0"' in html
    assert FORMULA in html
    # 100 x (1,000 x 0.0000003 + 500 x 0.0000025) = 0.155
    assert "$0.155000" in fragment(html, "calc-cost-coder")
    assert "$0.155<" in fragment(html, "calc-cost-coder")
    # 100 x (1,000 x 0.000003 + 500 x 0.000015) = 1.05; total 1.205
    assert "$1.05<" in fragment(html, "calc-cost-writer")
    assert "$1.205000" in fragment(html, "calc-totals")
    assert "$1.205<" in fragment(html, "calc-totals")
    assert "retired" not in html
    assert 'hx-trigger="change, keyup changed delay:300ms"' in html
    assert f'hx-post="{ROW}"' in html
    assert '<option value="vendor/cheap">Cheap · in $0.30 / out $2.50 per 1M' in html
    # Without the apply permission there is no Apply button.
    assert "Apply models to roles" not in html
    # The nav link shows to those who may see it.
    assert f'href="{CALCULATOR}">Calculator</a>' in html


@pytest.mark.django_db
def test_calculator_prefills_each_role_from_its_history(manager_client: Client, office) -> None:
    coder, _ = office
    now = timezone.now()
    for _ in range(2):
        TaskFactory(role=coder, created_at=now - timedelta(hours=1))
    UsageRollup.objects.create(
        day=local_day(now),
        role=coder,
        model=coder.binding.model,
        provider="openrouter",
        calls=2,
        input_tokens=3_000,
        output_tokens=801,
        cached_input_tokens=1_000,
    )

    html = manager_client.get(CALCULATOR).content.decode()

    assert 'name="coder-tasks" value="2"' in html
    assert 'name="coder-input_tokens" value="1500"' in html
    assert 'name="coder-output_tokens" value="401"' in html  # 400.5 rounds half up
    assert 'name="coder-cache_hit" value="33.33"' in html
    assert "2 tasks in 30 days" in html
    # 2 x (1,000.05 x 0.0000003 + 499.95 x 0.0000003 (no cache price) + 401 x 0.0000025)
    assert "$0.002905<" in fragment(html, "calc-cost-coder")


@pytest.mark.django_db
def test_recalculate_without_javascript_reads_the_query(manager_client: Client, office) -> None:
    query = {
        **row_data("coder", "vendor/cheap", "1,000", "1 000", "500"),
        **row_data("writer", "vendor/cheap", "10", "100", "0", "50%"),
    }

    response = manager_client.get(CALCULATOR, query)

    html = response.content.decode()
    assert response.status_code == 200
    assert "$1.550000" in fragment(html, "calc-cost-coder")
    assert "$1.55<" in fragment(html, "calc-cost-coder")
    # 10 x 100 x 0.0000003 (cached share at the input price: no cache price)
    assert "$0.0003<" in fragment(html, "calc-cost-writer")
    assert "$1.5503<" in fragment(html, "calc-totals")


@pytest.mark.django_db
def test_fragment_returns_the_changed_row_and_the_office_total(
    manager_client: Client, office
) -> None:
    data = {
        "row": "coder",
        **row_data("coder", "vendor/cheap", "1000", "1000", "500"),
        **row_data("writer", "vendor/premium", "100", "1000", "500"),
    }

    response = manager_client.post(ROW, data)

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<tr") == 1
    assert 'id="calc-row-coder"' in html
    cost = fragment(html, "calc-cost-coder")
    assert '<span class="calc-amount">$1.550000</span>' in cost
    assert '<div class="calc-exact" title="Exact monthly cost">$1.55</div>' in cost
    assert "$0.00155 per task" in cost
    totals = fragment(html, "calc-totals")
    assert '<span class="calc-amount">$2.600000</span> per month' in totals
    assert '<span class="calc-exact" title="Exact office total">$2.6</span>' in totals
    # htmx takes only the outputs from the answer, never the inputs being typed in.
    assert (
        'hx-select-oob="calc-note-coder-model,calc-note-coder-tasks,'
        "calc-note-coder-input_tokens,calc-note-coder-output_tokens,calc-note-coder-cache_hit,"
        'calc-cost-coder,calc-totals"'
    ) in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("tasks", "-5", "The number of tasks per month cannot be negative."),
        ("tasks", "ten", "Enter the number of tasks per month as a whole number, e.g. 1000."),
        ("input_tokens", "1.5", "Enter the number of input tokens as a whole number, e.g. 1000."),
        ("output_tokens", "", "Enter the number of output tokens."),
        ("cache_hit", "150", "The cache hit ratio is at most 100 %."),
        ("cache_hit", "NaN", "Enter the cache hit ratio as a number from 0 to 100."),
        ("model", "nope/nothing", "Unknown model “nope/nothing”: choose one from the list."),
    ],
)
def test_fragment_shows_a_field_error_and_leaves_the_row_out_of_the_total(
    manager_client: Client, office, field: str, value: str, error: str
) -> None:
    data = {
        "row": "coder",
        **row_data("coder", "vendor/cheap", "1000", "1000", "500"),
        **row_data("writer", "vendor/premium", "100", "1000", "500"),
    }
    data[f"coder-{field}"] = value

    response = manager_client.post(ROW, data)

    assert response.status_code == 200
    html = response.content.decode()
    note = html[html.index(f'id="calc-note-coder-{field}"') :]
    assert error in note[: note.index("</div>") + 200]
    assert "Fix this row" in fragment(html, "calc-cost-coder")
    totals = fragment(html, "calc-totals")
    assert "$1.05<" in totals
    assert "1 row with errors is not counted." in totals


@pytest.mark.django_db
def test_fragment_explains_a_model_that_left_the_catalog(manager_client: Client, office) -> None:
    CatalogModelFactory(slug="vendor/gone", is_available=False)
    data = {"row": "coder", **row_data("coder", "vendor/gone", "1", "1", "1")}

    html = manager_client.post(ROW, data).content.decode()

    assert "vendor/gone is no longer in the catalog: choose another." in html


@pytest.mark.django_db
def test_fragment_without_a_known_row_is_a_bad_request(manager_client: Client, office) -> None:
    assert manager_client.post(ROW, {"row": "nobody"}).status_code == 400
    assert manager_client.get(ROW).status_code == 405


# --- Apply ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_apply_binds_changed_roles_and_keeps_their_credentials(
    approver_client: Client, office
) -> None:
    coder, writer = office
    credential_id = coder.binding.credential_id
    writer_updated = writer.binding.updated_at
    query = "coder-tasks=1000&writer-model=vendor%2Fpremium&csrfmiddlewaretoken=x&evil=1"

    response = approver_client.post(
        APPLY, {"coder-model": "vendor/premium", "writer-model": "vendor/premium", "query": query}
    )

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == CALCULATOR
    assert parse_qs(location.query) == {"coder-tasks": ["1000"], "writer-model": ["vendor/premium"]}
    coder_binding = RoleBinding.objects.get(role=coder)
    assert coder_binding.model.slug == "vendor/premium"
    assert coder_binding.credential_id == credential_id
    assert coder_binding.upstream_model == ""  # it named the old model
    assert RoleBinding.objects.get(role=writer).updated_at == writer_updated
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Models applied. coder: vendor/cheap → vendor/premium."
    ]


@pytest.mark.django_db
def test_apply_with_an_unknown_model_changes_nothing(approver_client: Client, office) -> None:
    coder, writer = office

    response = approver_client.post(
        APPLY, {"coder-model": "vendor/premium", "writer-model": "nope/nothing"}
    )

    assert response.status_code == 302
    assert RoleBinding.objects.get(role=coder).model.slug == "vendor/cheap"
    assert RoleBinding.objects.get(role=writer).model.slug == "vendor/premium"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Nothing applied. writer: 'nope/nothing' is not an available, priced catalog model."
    ]


@pytest.mark.django_db
def test_apply_needs_the_apply_permission_and_a_post(manager_client: Client, office) -> None:
    coder, _ = office

    assert manager_client.post(APPLY, {"coder-model": "vendor/premium"}).status_code == 403
    assert RoleBinding.objects.get(role=coder).model.slug == "vendor/cheap"

    approver = Client()
    approver.force_login(grant(UserFactory(), "view_reports", "apply_calculator"))
    assert approver.get(APPLY).status_code == 405


@pytest.mark.django_db
def test_page_offers_apply_with_the_pending_changes(approver_client: Client, office) -> None:
    query = {
        # A number's error does not stop the model choice from being applied.
        **row_data("coder", "vendor/premium", "-1", "1", "1"),
        **row_data("writer", "vendor/premium", "1", "1", "1"),
    }

    html = approver_client.get(CALCULATOR, query).content.decode()

    totals = fragment(html, "calc-totals")
    assert f'action="{APPLY}"' in totals
    assert 'name="csrfmiddlewaretoken"' in totals
    assert '<input type="hidden" name="coder-model" value="vendor/premium">' in totals
    assert "Coder: vendor/cheap → <strong>vendor/premium</strong>" in totals
    assert "Writer:" not in totals
    assert "Apply models to roles</button>" in totals


@pytest.mark.django_db
def test_apply_service_reports_every_problem_at_once(office) -> None:
    RoleFactory(slug="unbound")
    CatalogModelFactory(slug="vendor/unpriced")

    with pytest.raises(CalculatorError) as raised:
        calculator_apply_models(
            models_by_role={
                "coder": "vendor/unpriced",
                "unbound": "vendor/cheap",
                "retired": "vendor/cheap",
            }
        )

    assert raised.value.messages == [
        "coder: 'vendor/unpriced' is not an available, priced catalog model.",
        "retired: no such active role.",
        "unbound: has no model binding yet (it needs a credential); set one up in the admin first.",
    ]


@pytest.mark.django_db
def test_apply_service_returns_no_change_when_models_are_already_bound(office) -> None:
    assert calculator_apply_models(models_by_role={"coder": "vendor/cheap"}) == []
