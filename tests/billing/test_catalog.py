"""Catalog sync: validation, price history, availability, fetching, selectors, admin."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from billing.calculator import calculator_model_choices
from billing.catalog import (
    CatalogEntry,
    CatalogError,
    SyncReport,
    catalog_fetch,
    catalog_load_file,
    catalog_parse,
    catalog_sync,
)
from billing.helper_ledger import LOCAL_HELPER_SLUG, local_helper_price
from billing.models import (
    CatalogModel,
    CatalogSource,
    ModelPrice,
    PriceSource,
    Usage,
    UsageStatus,
)
from billing.pricing import UnitPrices
from billing.selectors import catalog_models_available, price_current
from office.models import Role, Task

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MARCH_FILE = DATA_DIR / "openrouter-models-2026-03.json"
JUNE_FILE = Path(settings.ROSTER_CATALOG_SNAPSHOT)
MARCH = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)
JUNE_UNPRICED = [
    "openrouter/auto",
    "openrouter/bodybuilder",
    "openrouter/fusion",
    "openrouter/pareto-code",
]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def sync_payload(payload: object, *, now: datetime) -> SyncReport:
    return catalog_sync(entries=catalog_parse(payload), now=now)


def row_counts() -> tuple[int, int, int]:
    """(models, price versions, available models): what a failed sync must not change."""
    return (
        CatalogModel.objects.count(),
        ModelPrice.objects.count(),
        CatalogModel.objects.filter(is_available=True).count(),
    )


def model_entry(slug: str, *, prompt: str = "0.000001", completion: str = "0.000002") -> dict:
    return {
        "id": slug,
        "name": f"Test: {slug}",
        "context_length": 8192,
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        "top_provider": {"max_completion_tokens": 4096},
        "pricing": {"prompt": prompt, "completion": completion},
    }


def prices_of(slug: str) -> list[ModelPrice]:
    return list(ModelPrice.objects.filter(model__slug=slug).order_by("valid_from", "id"))


# --- Syncing the real snapshots -------------------------------------------------------------


@pytest.mark.django_db
def test_sync_of_bundled_snapshot_creates_every_model_with_exact_prices() -> None:
    payload = load(JUNE_FILE)

    report = sync_payload(payload, now=JUNE)

    assert report == SyncReport(
        seen=341,
        created=341,
        updated=0,
        prices_added=341,
        marked_unavailable=0,
        unpriced=JUNE_UNPRICED,
    )
    assert row_counts() == (341, 341, 341)
    gpt35 = CatalogModel.objects.get(slug="openai/gpt-3.5-turbo")
    assert (gpt35.name, gpt35.context_length, gpt35.input_modalities) == (
        "OpenAI: GPT-3.5 Turbo",
        16385,
        ["text"],
    )
    assert (gpt35.first_seen_at, gpt35.last_synced_at, gpt35.is_available) == (JUNE, JUNE, True)
    [price] = prices_of("openai/gpt-3.5-turbo")
    assert (price.source, price.valid_from) == (PriceSource.SYNC, JUNE)
    assert (price.prompt, price.completion) == (Decimal("0.0000005"), Decimal("0.0000015"))
    assert price.input_cache_read is None
    # Every price of every model round-trips through the database digit for digit.
    stored = {p.model.slug: p.unit_prices() for p in ModelPrice.objects.select_related("model")}
    expected = {
        entry["id"]: UnitPrices.from_openrouter(entry["pricing"]) for entry in payload["data"]
    }
    assert stored == expected


@pytest.mark.django_db
def test_float_artefact_prices_are_stored_verbatim() -> None:
    sync_payload(load(JUNE_FILE), now=JUNE)

    [price] = prices_of("google/gemini-2.5-flash")

    assert price.input_cache_write == Decimal("0.00000008333333333333334")
    # SQLite's REAL would keep 15 significant digits and lose the final "4".
    assert price.input_cache_write != Decimal("0.0000000833333333333333")
    assert price.web_search == Decimal("0.014")


@pytest.mark.django_db
def test_variable_price_is_unpriced_and_free_is_zero() -> None:
    sync_payload(load(JUNE_FILE), now=JUNE)

    [auto] = prices_of("openrouter/auto")
    [free] = prices_of("openrouter/free")

    assert (auto.prompt, auto.completion, auto.unit_prices().is_priced) == (None, None, False)
    assert (free.prompt, free.completion, free.unit_prices().is_priced) == (
        Decimal("0"),
        Decimal("0"),
        True,
    )


@pytest.mark.django_db
def test_resync_of_same_catalog_adds_no_price_rows() -> None:
    sync_payload(load(JUNE_FILE), now=JUNE)
    later = JUNE + timedelta(hours=6)

    report = sync_payload(load(JUNE_FILE), now=later)

    assert report == SyncReport(
        seen=341, created=0, updated=0, prices_added=0, marked_unavailable=0, unpriced=JUNE_UNPRICED
    )
    assert row_counts() == (341, 341, 341)
    assert CatalogModel.objects.get(slug="openai/gpt-3.5-turbo").last_synced_at == later
    assert CatalogModel.objects.get(slug="openai/gpt-3.5-turbo").first_seen_at == JUNE


@pytest.mark.django_db
def test_march_then_june_adds_versions_only_for_changed_prices() -> None:
    march = sync_payload(load(MARCH_FILE), now=MARCH)
    assert march == SyncReport(
        seen=196, created=196, updated=0, prices_added=196, marked_unavailable=0, unpriced=[]
    )

    june = sync_payload(load(JUNE_FILE), now=JUNE)

    # 154 models are in both files: 68 of them changed a price, 67 a name, context
    # length or modality list. 42 March models are gone in June, 187 are new.
    assert june == SyncReport(
        seen=341,
        created=187,
        updated=67,
        prices_added=187 + 68,
        marked_unavailable=42,
        unpriced=JUNE_UNPRICED,
    )
    assert row_counts() == (196 + 187, 196 + 187 + 68, 341)

    chat = prices_of("deepseek/deepseek-chat")
    assert [(p.valid_from, p.prompt, p.completion) for p in chat] == [
        (MARCH, Decimal("0.00000032"), Decimal("0.00000089")),
        (JUNE, Decimal("0.0000002002"), Decimal("0.0000008001")),
    ]
    haiku = prices_of("anthropic/claude-3-haiku")
    assert [(p.valid_from, p.prompt, p.completion) for p in haiku] == [
        (MARCH, Decimal("0.00000025"), Decimal("0.00000125")),
    ]

    deepseek = CatalogModel.objects.get(slug="deepseek/deepseek-chat")
    assert (deepseek.context_length, deepseek.last_synced_at) == (131072, JUNE)
    # June's listing has no top_provider: the March value is kept, not erased.
    assert CatalogModel.objects.get(slug="anthropic/claude-3-haiku").max_completion_tokens == 4096

    gone = CatalogModel.objects.get(slug="anthropic/claude-3.5-sonnet")
    assert (gone.is_available, gone.last_synced_at) == (False, MARCH)
    assert len(prices_of("anthropic/claude-3.5-sonnet")) == 1


@pytest.mark.django_db
def test_model_missing_from_a_sync_comes_back_when_it_reappears() -> None:
    sync_payload(load(MARCH_FILE), now=MARCH)
    sync_payload(load(JUNE_FILE), now=JUNE)
    back = JUNE + timedelta(days=1)

    report = sync_payload(load(MARCH_FILE), now=back)

    # The 42 returning models count as updated; their March price is still the latest
    # sync price, so only the 68 prices that differ between the files get a version.
    assert (report.created, report.prices_added, report.marked_unavailable) == (0, 68, 187)
    assert report.updated == 67 + 42
    sonnet = CatalogModel.objects.get(slug="anthropic/claude-3.5-sonnet")
    assert (sonnet.is_available, sonnet.last_synced_at) == (True, back)
    assert len(prices_of("anthropic/claude-3.5-sonnet")) == 1
    assert CatalogModel.objects.get(slug="openrouter/auto").is_available is False
    assert CatalogModel.objects.count() == 383


@pytest.mark.django_db
def test_admin_override_stays_in_force_until_the_provider_price_changes() -> None:
    sync_payload(load(MARCH_FILE), now=MARCH)
    overridden_at = MARCH + timedelta(days=1)
    for slug in ("deepseek/deepseek-chat", "anthropic/claude-3-haiku"):
        ModelPrice.objects.create(
            model=CatalogModel.objects.get(slug=slug),
            source=PriceSource.OVERRIDE,
            valid_from=overridden_at,
            prompt=Decimal("0.0000001"),
            completion=Decimal("0.0000002"),
        )

    resync = sync_payload(load(MARCH_FILE), now=MARCH + timedelta(days=2))
    assert resync.prices_added == 0
    chat = CatalogModel.objects.get(slug="deepseek/deepseek-chat")
    assert price_current(model=chat, at=MARCH + timedelta(days=2)).source == PriceSource.OVERRIDE

    sync_payload(load(JUNE_FILE), now=JUNE)

    chat_price = price_current(model=chat, at=JUNE)
    assert (chat_price.source, chat_price.prompt) == (PriceSource.SYNC, Decimal("0.0000002002"))
    # Claude 3 Haiku's provider price did not change: the override still holds.
    haiku = CatalogModel.objects.get(slug="anthropic/claude-3-haiku")
    haiku_price = price_current(model=haiku, at=JUNE)
    assert (haiku_price.source, haiku_price.prompt) == (PriceSource.OVERRIDE, Decimal("0.0000001"))


@pytest.mark.django_db
def test_sync_leaves_models_added_by_hand_and_the_local_helper_alone() -> None:
    sync_payload({"data": [model_entry("acme/a")]}, now=MARCH)
    ollama = CatalogModel.objects.create(
        slug="ollama/llama3.2:3b", name="Llama (office GPU)", source=CatalogSource.MANUAL
    )
    ModelPrice.objects.create(
        model=ollama, source=PriceSource.OVERRIDE, valid_from=MARCH, prompt=0, completion=0
    )
    private = CatalogModel.objects.create(
        slug="acme/private", name="Ours", source=CatalogSource.MANUAL, context_length=1
    )
    helper = local_helper_price().model

    # The catalog lists acme/private too, at a price: the admin's model keeps its own.
    report = sync_payload(
        {"data": [model_entry("acme/a"), model_entry("acme/private", prompt="0.5")]}, now=JUNE
    )

    assert (report.marked_unavailable, report.created, report.prices_added) == (0, 0, 0)
    assert report.left_alone == ["acme/private"]
    assert report.summary().endswith(
        "; 1 left as added by hand (source not OpenRouter): acme/private."
    )
    for model in (ollama, private, helper):
        model.refresh_from_db()
        assert model.is_available, model.slug
        assert model.last_synced_at is None
    assert (private.name, private.context_length) == ("Ours", 1)
    assert prices_of("acme/private") == []
    assert len(prices_of("ollama/llama3.2:3b")) == 1

    # A model from OpenRouter that vanishes is still marked unavailable.
    report = sync_payload({"data": [model_entry("acme/b")]}, now=JUNE + timedelta(days=1))
    assert report.marked_unavailable == 1
    assert CatalogModel.objects.get(slug="acme/a").is_available is False
    assert CatalogModel.objects.get(slug="ollama/llama3.2:3b").is_available is True


@pytest.mark.django_db
def test_the_local_helpers_record_is_no_model_to_bind_a_role_to() -> None:
    sync_payload({"data": [model_entry("acme/a")]}, now=MARCH)
    local_helper_price()

    assert [m.slug for m in catalog_models_available()] == ["acme/a"]
    assert LOCAL_HELPER_SLUG not in calculator_model_choices()
    assert "acme/a" in calculator_model_choices()


def test_admin_adds_a_catalog_model_by_hand_as_manual(admin_client: Any) -> None:
    response = admin_client.get(reverse("admin:billing_catalogmodel_add"))

    assert response.status_code == 200
    assert response.context["adminform"].form.initial["source"] == CatalogSource.MANUAL


# --- Validation: a bad payload writes nothing ----------------------------------------------


def _bad_price_string(payload: dict) -> None:
    payload["data"][12]["pricing"]["prompt"] = "abc"


def _float_price(payload: dict) -> None:
    payload["data"][7]["pricing"]["completion"] = 0.0000015


def _missing_id(payload: dict) -> None:
    del payload["data"][3]["id"]


def _duplicate_id(payload: dict) -> None:
    payload["data"][5]["id"] = payload["data"][4]["id"]


def _data_not_a_list(payload: dict) -> None:
    payload["data"] = {"models": payload["data"]}


def _empty_data(payload: dict) -> None:
    payload["data"] = []


def _negative_price(payload: dict) -> None:
    payload["data"][2]["pricing"]["prompt"] = "-0.5"


def _missing_pricing(payload: dict) -> None:
    del payload["data"][9]["pricing"]


def _too_many_places(payload: dict) -> None:
    payload["data"][1]["pricing"]["prompt"] = "0.000000000000000000000000001"


def _context_length_string(payload: dict) -> None:
    payload["data"][0]["context_length"] = "16k"


def _entry_not_object(payload: dict) -> None:
    payload["data"][6] = "openai/gpt-4o"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _bad_price_string,
            "entry 12 (openai/gpt-4o-2024-08-06): price 'prompt' is not a decimal number: 'abc'",
        ),
        (
            _float_price,
            "entry 7 (openai/gpt-4.1): price 'completion' is a JSON number "
            "(1.5e-06); expected a string",
        ),
        (_missing_id, "entry 3: 'id' is missing, expected a non-empty string"),
        (
            _duplicate_id,
            "entry 5 (openai/gpt-4): duplicate id, first at entry 4",
        ),
        (_data_not_a_list, 'The catalog\'s "data" is a JSON object, expected a list of models.'),
        (_empty_data, 'The catalog\'s "data" list is empty; refusing to apply it.'),
        (_negative_price, "entry 2 (openai/gpt-3.5-turbo-16k): price 'prompt' is negative: '-0.5'"),
        (_missing_pricing, "'pricing' is missing, expected an object"),
        (_too_many_places, "price 'prompt' does not fit a price column (40 digits, 26 after"),
        (
            _context_length_string,
            "entry 0 (openai/gpt-3.5-turbo): 'context_length' is a JSON string, expected a "
            "whole number",
        ),
        (_entry_not_object, "entry 6: is a JSON string, expected an object"),
    ],
)
def test_invalid_payload_raises_clear_error_and_writes_nothing(mutate: Any, expected: str) -> None:
    sync_payload(load(MARCH_FILE), now=MARCH)
    before = row_counts()
    payload = load(JUNE_FILE)
    mutate(payload)

    with pytest.raises(CatalogError) as excinfo:
        sync_payload(payload, now=JUNE)

    assert expected in str(excinfo.value)
    assert row_counts() == before == (196, 196, 196)


def test_parse_rejects_a_payload_that_is_not_an_object() -> None:
    with pytest.raises(CatalogError, match=r"The catalog is a JSON array, expected an object"):
        catalog_parse([model_entry("a/b")])


def test_parse_lists_the_first_ten_problems_and_counts_the_rest() -> None:
    payload = {"data": [model_entry(f"v/m{i}", prompt="x") for i in range(15)]}

    with pytest.raises(CatalogError) as excinfo:
        catalog_parse(payload)

    message = str(excinfo.value)
    assert message.startswith("The catalog has 15 invalid entry problems; nothing was applied:")
    assert "entry 9 (v/m9): price 'prompt' is not a decimal number: 'x'" in message
    assert "entry 10 (v/m10)" not in message
    assert message.endswith("... and 5 more")
    assert len(excinfo.value.problems) == 15


def test_parse_fills_defaults_for_optional_fields() -> None:
    bare = {"id": "acme/bare", "pricing": {"prompt": "0.000001", "completion": "-1"}}

    [entry] = catalog_parse({"data": [bare]})

    assert entry == CatalogEntry(
        slug="acme/bare",
        name="acme/bare",
        prices=UnitPrices(prompt=Decimal("0.000001")),
        context_length=None,
        max_completion_tokens=None,
        input_modalities=None,
        output_modalities=None,
    )


@pytest.mark.django_db
def test_sync_rolls_back_everything_when_a_write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    sync_payload(load(MARCH_FILE), now=MARCH)
    entries = catalog_parse(load(JUNE_FILE))

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ModelPrice.objects, "bulk_create", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        catalog_sync(entries=entries, now=JUNE)

    assert row_counts() == (196, 196, 196)
    assert CatalogModel.objects.get(slug="deepseek/deepseek-chat").last_synced_at == MARCH


@pytest.mark.django_db
def test_sync_refuses_a_naive_datetime() -> None:
    entries = catalog_parse({"data": [model_entry("acme/a")]})

    with pytest.raises(ValueError, match="aware datetime"):
        catalog_sync(entries=entries, now=datetime(2026, 6, 8, 12, 0))

    assert row_counts() == (0, 0, 0)


@pytest.mark.django_db
def test_sync_refuses_an_empty_entry_list() -> None:
    sync_payload({"data": [model_entry("acme/a")]}, now=MARCH)

    with pytest.raises(ValueError, match="refusing to mark every model unavailable"):
        catalog_sync(entries=[], now=JUNE)

    assert row_counts() == (1, 1, 1)


# --- Loading a file ------------------------------------------------------------------------


def test_load_file_reads_a_saved_response() -> None:
    payload = catalog_load_file(MARCH_FILE)

    assert len(payload["data"]) == 196
    assert payload["data"][0]["id"] == "openai/gpt-5.4-pro"


def test_load_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(CatalogError) as excinfo:
        catalog_load_file(path)

    assert str(excinfo.value) == f"Catalog file not found: {path}"


def test_load_file_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"data": [', encoding="utf-8")

    with pytest.raises(CatalogError) as excinfo:
        catalog_load_file(path)

    assert str(excinfo.value) == (
        f"Catalog file {path} is not valid JSON: Expecting value at line 1 column 11"
    )


def test_load_file_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[]", encoding="utf-8")

    with pytest.raises(CatalogError, match=r"is a JSON array, expected an object"):
        catalog_load_file(path)


# --- Fetching over HTTP (a real loopback server) -------------------------------------------


class _CatalogHandler(BaseHTTPRequestHandler):
    server: _CatalogServer

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)
        if route is None:
            route = (404, "text/plain", b"not found")
        if route == "hang":
            # Say nothing until the test is over: the client must give up by itself.
            self.server.release.wait(10)
            return
        status, content_type, body = route
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CatalogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _CatalogHandler)
        self.routes = routes
        self.release = threading.Event()


@contextmanager
def loopback_catalog_server(routes: dict[str, Any]) -> Iterator[str]:
    """Serve `routes` ({path: (status, content type, body) or "hang"}); yield the base URL."""
    server = _CatalogServer(routes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def catalog_url() -> Iterator[str]:
    routes = {
        "/api/v1/models": (200, "application/json", MARCH_FILE.read_bytes()),
        "/error": (500, "text/plain", b"upstream exploded"),
        "/html": (200, "text/html", b"<html>maintenance</html>"),
        "/list": (200, "application/json", b"[]"),
        "/hang": "hang",
    }
    with loopback_catalog_server(routes) as base:
        yield base


def test_fetch_returns_the_payload(catalog_url: str) -> None:
    payload = catalog_fetch(url=f"{catalog_url}/api/v1/models", timeout=5)

    assert payload == load(MARCH_FILE)


def test_fetch_http_500_is_a_catalog_error(catalog_url: str) -> None:
    with pytest.raises(CatalogError) as excinfo:
        catalog_fetch(url=f"{catalog_url}/error", timeout=5)

    assert str(excinfo.value) == (
        f"The catalog at {catalog_url}/error answered HTTP 500 Internal Server Error: "
        "upstream exploded"
    )


def test_fetch_non_json_is_a_catalog_error(catalog_url: str) -> None:
    with pytest.raises(CatalogError) as excinfo:
        catalog_fetch(url=f"{catalog_url}/html", timeout=5)

    assert str(excinfo.value).startswith(
        f"The catalog at {catalog_url}/html is not valid JSON (text/html): Expecting value"
    )


def test_fetch_json_that_is_not_an_object_is_a_catalog_error(catalog_url: str) -> None:
    with pytest.raises(CatalogError, match=r"is a JSON array, expected an object"):
        catalog_fetch(url=f"{catalog_url}/list", timeout=5)


def test_fetch_timeout_is_a_catalog_error(catalog_url: str) -> None:
    with pytest.raises(CatalogError) as excinfo:
        catalog_fetch(url=f"{catalog_url}/hang", timeout=0.3)

    assert (
        str(excinfo.value) == f"Timed out after 0.3s fetching the catalog from {catalog_url}/hang."
    )


def test_fetch_connection_refused_is_a_catalog_error() -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(
        CatalogError, match=rf"Could not fetch the catalog from http://127.0.0.1:{port}/"
    ):
        catalog_fetch(url=f"http://127.0.0.1:{port}/api/v1/models", timeout=2)


def test_fetch_invalid_url_is_a_catalog_error() -> None:
    with pytest.raises(CatalogError, match=r"Invalid catalog URL 'openrouter.ai/api/v1/models'"):
        catalog_fetch(url="openrouter.ai/api/v1/models", timeout=2)


# --- Selectors -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_price_current_picks_the_version_in_force() -> None:
    model = CatalogModel.objects.create(slug="acme/m1", name="M1")
    march = ModelPrice.objects.create(
        model=model, source=PriceSource.SYNC, valid_from=MARCH, prompt=Decimal("0.000001")
    )
    override = ModelPrice.objects.create(
        model=model,
        source=PriceSource.OVERRIDE,
        valid_from=MARCH + timedelta(days=10),
        prompt=Decimal("0.0000005"),
    )
    june = ModelPrice.objects.create(
        model=model, source=PriceSource.SYNC, valid_from=JUNE, prompt=Decimal("0.000002")
    )
    june_again = ModelPrice.objects.create(
        model=model, source=PriceSource.OVERRIDE, valid_from=JUNE, prompt=Decimal("0.000003")
    )

    assert price_current(model=model, at=MARCH - timedelta(seconds=1)) is None
    assert price_current(model=model, at=MARCH) == march
    assert price_current(model=model, at=MARCH + timedelta(days=10)) == override
    assert price_current(model=model, at=JUNE - timedelta(seconds=1)) == override
    # Same valid_from: the row written last wins.
    assert price_current(model=model, at=JUNE) == june_again != june
    assert price_current(model=model).prompt == Decimal("0.000003")


@pytest.mark.django_db
def test_catalog_models_available_excludes_vanished_models() -> None:
    sync_payload({"data": [model_entry("acme/a"), model_entry("acme/b")]}, now=MARCH)
    sync_payload({"data": [model_entry("acme/b"), model_entry("acme/c")]}, now=JUNE)

    assert [m.slug for m in catalog_models_available()] == ["acme/b", "acme/c"]


# --- Admin ---------------------------------------------------------------------------------


@pytest.fixture
def ledger_row(db: None) -> Usage:
    sync_payload(load(JUNE_FILE), now=JUNE)
    model = CatalogModel.objects.get(slug="openai/gpt-3.5-turbo")
    role = Role.objects.create(slug="coder", name="Coder")
    task = Task.objects.create(role=role, prompt="Write a haiku about invoices.")
    return Usage.objects.create(
        call_id="call-admin-1",
        task=task,
        role=role,
        model=model,
        price=price_current(model=model, at=JUNE),
        provider="openrouter",
        status=UsageStatus.SETTLED,
        input_tokens=1200,
        output_tokens=300,
        cost=Decimal("0.00105"),
        reported_cost=Decimal("0.00105"),
    )


def test_admin_catalog_changelist_shows_prices_per_million(
    admin_client: Any, ledger_row: Usage
) -> None:
    response = admin_client.get(reverse("admin:billing_catalogmodel_changelist"), {"q": "gpt-3.5"})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 4
    content = response.content.decode()
    assert "openai/gpt-3.5-turbo" in content
    assert "$0.50" in content  # 0.0000005 per token
    assert "$1.50" in content


def test_admin_catalog_vendor_filter(admin_client: Any, ledger_row: Usage) -> None:
    response = admin_client.get(
        reverse("admin:billing_catalogmodel_changelist"), {"vendor": "openrouter"}
    )

    assert response.status_code == 200
    assert sorted(m.slug for m in response.context["cl"].result_list) == [
        "openrouter/auto",
        "openrouter/bodybuilder",
        "openrouter/free",
        "openrouter/fusion",
        "openrouter/owl-alpha",
        "openrouter/pareto-code",
    ]


def test_admin_catalog_change_page_lists_price_history_newest_first(
    admin_client: Any, ledger_row: Usage
) -> None:
    model = CatalogModel.objects.get(slug="openai/gpt-3.5-turbo")
    ModelPrice.objects.create(
        model=model,
        source=PriceSource.OVERRIDE,
        valid_from=timezone.now(),
        prompt=Decimal("0.0000004"),
    )

    response = admin_client.get(reverse("admin:billing_catalogmodel_change", args=[model.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert content.index("0.0000004") < content.index("0.0000005")
    assert "0.0000015" in content


def test_admin_price_and_ledger_changelists_render(admin_client: Any, ledger_row: Usage) -> None:
    prices = admin_client.get(reverse("admin:billing_modelprice_changelist"), {"source": "sync"})
    ledger = admin_client.get(reverse("admin:billing_usage_changelist"))

    assert prices.status_code == 200
    assert prices.context["cl"].result_count == 341
    assert ledger.status_code == 200
    content = ledger.content.decode()
    assert "call-admin-1" in content
    assert "1,200 / 300" in content
    assert "0.00105" in content


def test_admin_adding_a_price_is_an_override_from_now(admin_client: Any, ledger_row: Usage) -> None:
    model = CatalogModel.objects.get(slug="openai/gpt-3.5-turbo")
    before = timezone.now()

    response = admin_client.post(
        reverse("admin:billing_modelprice_add"),
        {"model": model.pk, "prompt": "0.0000003", "completion": "0.000001"},
    )

    assert response.status_code == 302
    price = price_current(model=model)
    assert (price.source, price.prompt, price.completion) == (
        PriceSource.OVERRIDE,
        Decimal("0.0000003"),
        Decimal("0.000001"),
    )
    assert before <= price.valid_from <= timezone.now()
    assert ModelPrice.objects.count() == 342


def test_admin_price_history_and_ledger_are_read_only(admin_client: Any, ledger_row: Usage) -> None:
    price = ledger_row.price
    price_url = reverse("admin:billing_modelprice_change", args=[price.pk])
    usage_url = reverse("admin:billing_usage_change", args=[ledger_row.pk])

    assert admin_client.get(price_url).status_code == 200
    assert admin_client.post(price_url, {"prompt": "0"}).status_code == 403
    assert admin_client.get(usage_url).status_code == 200
    assert admin_client.post(usage_url, {"cost": "0"}).status_code == 403
    assert admin_client.get(reverse("admin:billing_usage_add")).status_code == 403
    delete_url = reverse("admin:billing_usage_delete", args=[ledger_row.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    ledger_row.refresh_from_db()
    price.refresh_from_db()
    assert (ledger_row.cost, price.prompt) == (Decimal("0.00105"), Decimal("0.0000005"))
