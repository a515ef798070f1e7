"""The model catalog: fetch OpenRouter's model list, validate it whole, apply it at once.

Three steps that can run apart: `catalog_fetch` (network) or `catalog_load_file` (a saved
response) gives the raw payload; `catalog_parse` validates every entry before anything
is written; `catalog_sync` applies the entries in one transaction. No network call ever
happens inside the transaction.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator
from django.db import models, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from billing.models import CatalogModel, CatalogSource, ModelPrice, PriceSource
from billing.pricing import PricingError, UnitPrices

# How many problems one error message lists; the rest are counted.
MAX_REPORTED_PROBLEMS = 10
# The live catalog is a few hundred KB; anything far larger is not the catalog.
MAX_CATALOG_BYTES = 20 * 1024 * 1024
# PositiveIntegerField's upper bound on PostgreSQL.
MAX_POSITIVE_INT = 2_147_483_647

_SLUG_MAX_LENGTH = cast(models.CharField, CatalogModel._meta.get_field("slug")).max_length or 0
_NAME_MAX_LENGTH = cast(models.CharField, CatalogModel._meta.get_field("name")).max_length or 0
_price_field = cast(models.DecimalField, ModelPrice._meta.get_field("prompt"))
# A price must fit its column exactly: PostgreSQL's numeric would round extra places.
_fits_price_column = DecimalValidator(_price_field.max_digits, _price_field.decimal_places)
# Normalising in the default 28-digit context could round a too-long price into one
# that seems to fit; this one never rounds a price we could store.
_WIDE = decimal.Context(prec=100)


class CatalogError(Exception):
    """The catalog could not be fetched, read or accepted; nothing was written.

    `problems` lists every entry-level problem found (the message shows the first few).
    """

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class CatalogEntry:
    """One validated catalog model.

    None (or, for modalities, None rather than a tuple) means the entry does not say,
    and the sync then keeps what it stored before.
    """

    slug: str
    name: str
    prices: UnitPrices
    context_length: int | None = None
    max_completion_tokens: int | None = None
    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SyncReport:
    """What one sync changed. `unpriced` lists models without an input or output price;
    `left_alone` the catalog's models that an admin added by hand first (not from
    OpenRouter: the sync changes nothing about them)."""

    seen: int
    created: int
    updated: int
    prices_added: int
    marked_unavailable: int
    unpriced: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people, e.g. for the `sync_prices` command."""
        text = (
            f"Synced {self.seen} models: {self.created} new, {self.updated} updated, "
            f"{self.prices_added} price versions added, "
            f"{self.marked_unavailable} marked unavailable"
        )
        if self.unpriced:
            text += (
                f"; {len(self.unpriced)} unpriced (variable pricing or no price): "
                f"{', '.join(self.unpriced)}"
            )
        if self.left_alone:
            text += (
                f"; {len(self.left_alone)} left as added by hand (source not OpenRouter): "
                f"{', '.join(self.left_alone)}"
            )
        return text + "."


# --- Reading the raw payload ---------------------------------------------------------------


def catalog_fetch(*, url: str, timeout: float = 30.0) -> dict[str, Any]:
    """GET the OpenRouter model list (`/api/v1/models`) and return the decoded JSON object.

    Raises CatalogError for a bad URL, a timeout, a connection failure, a non-2xx answer,
    an oversized body, or a body that is not a JSON object.
    """
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            body = bytearray()
            # Read in chunks so that a runaway body is refused, not buffered whole.
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CATALOG_BYTES:
                    raise CatalogError(
                        f"The catalog at {url} is larger than {MAX_CATALOG_BYTES} bytes; "
                        "refusing it."
                    )
    except httpx.TimeoutException:
        raise CatalogError(
            f"Timed out after {timeout:g}s fetching the catalog from {url}."
        ) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise CatalogError(f"Invalid catalog URL {url!r}: {exc}") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise CatalogError(f"Could not fetch the catalog from {url}: {reason}") from None

    if not response.is_success:
        snippet = bytes(body[:200]).decode("utf-8", "replace").strip()
        raise CatalogError(
            f"The catalog at {url} answered HTTP {response.status_code} "
            f"{response.reason_phrase}" + (f": {snippet}" if snippet else ".")
        )
    try:
        payload = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as exc:
        content_type = response.headers.get("content-type", "no content type")
        raise CatalogError(
            f"The catalog at {url} is not valid JSON ({content_type}): {exc}"
        ) from None
    return _require_object(payload, source=url)


def catalog_load_file(path: str | Path) -> dict[str, Any]:
    """Read a saved `/api/v1/models` response from disk and return the decoded JSON object.

    Raises CatalogError for a missing or unreadable file, invalid JSON, or JSON that is
    not an object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"Catalog file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"Catalog file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"Cannot read catalog file {path}: {exc.strerror or exc}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"Catalog file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    return _require_object(payload, source=str(path))


def _require_object(payload: Any, *, source: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise CatalogError(
            f"The catalog from {source} is a JSON {_json_type(payload)}, "
            'expected an object with a "data" list.'
        )
    return payload


# --- Validation ----------------------------------------------------------------------------


def catalog_parse(payload: object) -> list[CatalogEntry]:
    """Validate a whole `/api/v1/models` payload and return its entries, in order.

    Every entry is checked before anything is returned, so a sync never applies half a
    catalog. Raises CatalogError listing the first problems (entry index and id) when the
    payload is not an object with a non-empty "data" list, or when any entry is invalid
    or repeats an id.
    """
    if not isinstance(payload, dict):
        raise CatalogError(
            f'The catalog is a JSON {_json_type(payload)}, expected an object with a "data" list.'
        )
    data = payload.get("data")
    if not isinstance(data, list):
        raise CatalogError(
            f'The catalog\'s "data" is {_describe_missing_or_type(payload, "data")}, '
            "expected a list of models."
        )
    if not data:
        # Applying an empty list would mark every model unavailable.
        raise CatalogError('The catalog\'s "data" list is empty; refusing to apply it.')

    entries: list[CatalogEntry] = []
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(data):
        entry, entry_problems = _parse_entry(raw)
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        label = f"entry {index}" + (f" ({raw_id})" if isinstance(raw_id, str) and raw_id else "")
        if entry is not None:
            if entry.slug in first_index:
                entry_problems.append(f"duplicate id, first at entry {first_index[entry.slug]}")
            else:
                first_index[entry.slug] = index
            entries.append(entry)
        problems.extend(f"{label}: {problem}" for problem in entry_problems)

    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        message = (
            f"The catalog has {len(problems)} invalid "
            f"{'entry problem' if len(problems) == 1 else 'entry problems'}; nothing was "
            "applied:\n  " + "\n  ".join(shown)
        )
        if more:
            message += f"\n  ... and {more} more"
        raise CatalogError(message, problems=problems)
    return entries


def _parse_entry(raw: object) -> tuple[CatalogEntry | None, list[str]]:
    """Return the entry (None if its id is unusable) and the problems found in it."""
    if not isinstance(raw, dict):
        return None, [f"is a JSON {_json_type(raw)}, expected an object"]
    problems: list[str] = []

    slug = raw.get("id")
    if not isinstance(slug, str) or not slug.strip():
        problems.append(
            f"'id' is {_describe_missing_or_type(raw, 'id')}, expected a non-empty string"
        )
        slug = None
    elif slug != slug.strip():
        problems.append(f"'id' has surrounding whitespace: {slug!r}")
    elif len(slug) > _SLUG_MAX_LENGTH:
        problems.append(f"'id' is longer than {_SLUG_MAX_LENGTH} characters")

    name = raw.get("name")
    if name is None or name == "":
        name = slug or ""
    elif not isinstance(name, str):
        problems.append(f"'name' is a JSON {_json_type(name)}, expected a string")
        name = slug or ""
    # The name is for display only; a long one is shortened rather than blocking a sync.
    name = name[:_NAME_MAX_LENGTH]

    context_length = _optional_count(raw, "context_length", problems)

    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None
    architecture = raw.get("architecture")
    if isinstance(architecture, dict):
        input_modalities = _optional_strings(architecture, "input_modalities", problems)
        output_modalities = _optional_strings(architecture, "output_modalities", problems)
    elif architecture is not None:
        problems.append(f"'architecture' is a JSON {_json_type(architecture)}, expected an object")

    max_completion_tokens: int | None = None
    top_provider = raw.get("top_provider")
    if isinstance(top_provider, dict):
        max_completion_tokens = _optional_count(
            top_provider, "max_completion_tokens", problems, where="top_provider."
        )
    elif top_provider is not None:
        problems.append(f"'top_provider' is a JSON {_json_type(top_provider)}, expected an object")

    prices = _parse_prices(raw, problems)

    if slug is None:
        return None, problems
    entry = CatalogEntry(
        slug=slug,
        name=name,
        prices=prices or UnitPrices(),
        context_length=context_length,
        max_completion_tokens=max_completion_tokens,
        input_modalities=input_modalities,
        output_modalities=output_modalities,
    )
    return entry, problems


def _parse_prices(raw: Mapping[str, Any], problems: list[str]) -> UnitPrices | None:
    pricing = raw.get("pricing")
    if not isinstance(pricing, dict):
        # A missing pricing object is a schema change, not a free or unpriced model:
        # accepting it would replace every model's price with "unpriced".
        problems.append(
            f"'pricing' is {_describe_missing_or_type(raw, 'pricing')}, expected an object"
        )
        return None
    try:
        prices = UnitPrices.from_openrouter(pricing)
    except PricingError as exc:
        problems.append(str(exc))
        return None
    for kind, value in prices.as_dict().items():
        if value is None:
            continue
        try:
            _fits_price_column(value.normalize(_WIDE))
        except ValidationError:
            problems.append(
                f"price {kind!r} does not fit a price column ({_price_field.max_digits} "
                f"digits, {_price_field.decimal_places} after the point): {pricing[kind]!r}"
            )
            return None
    return prices


def _optional_count(
    container: Mapping[str, Any], key: str, problems: list[str], *, where: str = ""
) -> int | None:
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"'{where}{key}' is a JSON {_json_type(value)}, expected a whole number")
        return None
    if not 0 <= value <= MAX_POSITIVE_INT:
        problems.append(f"'{where}{key}' is out of range: {value}")
        return None
    return value


def _optional_strings(
    container: Mapping[str, Any], key: str, problems: list[str]
) -> tuple[str, ...] | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"'architecture.{key}' is not a list of strings: {value!r}")
        return None
    return tuple(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe_missing_or_type(container: Mapping[str, Any], key: str) -> str:
    if key not in container:
        return "missing"
    value = container[key]
    if isinstance(value, str):
        return f"the string {value!r}" if value.strip() else "an empty string"
    return f"a JSON {_json_type(value)}"


# --- Applying ------------------------------------------------------------------------------


def catalog_sync(*, entries: list[CatalogEntry], now: datetime | None = None) -> SyncReport:
    """Apply validated catalog entries in one transaction and return what changed.

    Upserts one CatalogModel per entry (available, synced at `now`), adds a sync-sourced
    ModelPrice valid from `now` only for a model with no sync price yet or whose prices
    differ from its latest sync price (so an admin override stays in force until the
    provider's price really changes), and marks models absent from `entries`
    unavailable. Nothing is deleted. A field an entry leaves out (None) keeps its stored
    value. Models whose `source` is not OpenRouter (added by hand, the local helper) are
    never changed, priced or marked unavailable, even when the catalog lists their slug.
    Raises ValueError for a naive `now`, no entries or duplicate slugs
    (catalog_parse never returns those), and lets database errors through after rolling
    everything back.
    """
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("catalog_sync needs an aware datetime for `now`")
    if not entries:
        # An empty catalog would mark every model unavailable; catalog_parse refuses it too.
        raise ValueError("catalog_sync got no entries; refusing to mark every model unavailable")
    slugs = [entry.slug for entry in entries]
    if len(set(slugs)) != len(slugs):
        raise ValueError("catalog_sync got duplicate slugs; validate with catalog_parse")

    with transaction.atomic():
        # Two syncs at once would both add the same price version; the row locks make the
        # second wait. NO KEY: ledger inserts referencing these rows must not wait.
        existing = {
            row.slug: row
            for row in CatalogModel.objects.select_for_update(no_key=True).order_by("pk")
        }
        latest_prices = _latest_sync_prices()

        # A model added by hand belongs to the admin; an admin who wants the sync to take
        # it over sets its source to OpenRouter.
        left_alone = [
            entry.slug
            for entry in entries
            if entry.slug in existing and existing[entry.slug].source != CatalogSource.OPENROUTER
        ]
        skipped = set(left_alone)
        entries = [entry for entry in entries if entry.slug not in skipped]

        to_create: list[CatalogModel] = []
        to_update: list[CatalogModel] = []
        updated = 0
        for entry in entries:
            row = existing.get(entry.slug)
            if row is None:
                row = CatalogModel(slug=entry.slug, first_seen_at=now)
                _apply_entry(row, entry)
                to_create.append(row)
            else:
                if _apply_entry(row, entry) or not row.is_available:
                    updated += 1
                to_update.append(row)
            row.is_available = True
            row.last_synced_at = now

        seen = set(slugs)
        marked_unavailable = 0
        for row in existing.values():
            if row.source != CatalogSource.OPENROUTER:
                continue
            if row.slug not in seen and row.is_available:
                row.is_available = False
                to_update.append(row)
                marked_unavailable += 1

        created_rows = CatalogModel.objects.bulk_create(to_create)
        if any(row.pk is None for row in created_rows):
            # Backends that cannot return ids from a bulk insert: read them back.
            fetched = CatalogModel.objects.in_bulk(
                [row.slug for row in created_rows], field_name="slug"
            )
            created_rows = [fetched[row.slug] for row in created_rows]
        CatalogModel.objects.bulk_update(
            to_update,
            [
                "name",
                "context_length",
                "max_completion_tokens",
                "input_modalities",
                "output_modalities",
                "is_available",
                "last_synced_at",
            ],
        )

        by_slug = {row.slug: row for row in [*to_update, *created_rows]}
        # OpenRouter lists no long-context tiers or batch discounts: a new version keeps
        # the ones an admin set on the version in force, instead of silently dropping them.
        carried = _admin_only_prices(now=now)
        new_prices = [
            ModelPrice(
                model=by_slug[entry.slug],
                source=PriceSource.SYNC,
                valid_from=now,
                **entry.prices.as_dict(),
                **carried.get(by_slug[entry.slug].pk, {}),
            )
            for entry in entries
            if _catalog_kinds(latest_prices.get(by_slug[entry.slug].pk))
            != _catalog_kinds(entry.prices)
        ]
        ModelPrice.objects.bulk_create(new_prices)

    return SyncReport(
        seen=len(entries) + len(left_alone),
        created=len(created_rows),
        updated=updated,
        prices_added=len(new_prices),
        marked_unavailable=marked_unavailable,
        unpriced=[entry.slug for entry in entries if not entry.prices.is_priced],
        left_alone=left_alone,
    )


ADMIN_ONLY_PRICE_FIELDS = (
    "long_context_threshold",
    "long_context_prompt",
    "long_context_completion",
    "long_context_input_cache_read",
    "batch_discount",
)


def _admin_only_prices(*, now: datetime) -> dict[int, dict[str, Any]]:
    """Per model id, the tier and batch fields of the price version in force, where any
    is set."""
    carried: dict[int, dict[str, Any]] = {}
    seen: set[int] = set()
    versions = ModelPrice.objects.filter(valid_from__lte=now).order_by(
        "model_id", "-valid_from", "-id"
    )
    for model_id, *values in versions.values_list("model_id", *ADMIN_ONLY_PRICE_FIELDS):
        if model_id in seen:
            continue
        seen.add(model_id)
        if any(value is not None for value in values):
            carried[model_id] = dict(zip(ADMIN_ONLY_PRICE_FIELDS, values, strict=True))
    return carried


def _catalog_kinds(prices: UnitPrices | None) -> dict[str, Any] | None:
    """The prices a catalog listing can change (tiers and discounts are the admin's)."""
    return None if prices is None else prices.as_dict()


def _latest_sync_prices() -> dict[int, UnitPrices]:
    """Each model's latest sync-sourced prices (overrides do not count), by model id."""
    latest = (
        ModelPrice.objects.filter(model=OuterRef("pk"), source=PriceSource.SYNC)
        .order_by("-valid_from", "-id")
        .values("pk")[:1]
    )
    latest_ids = CatalogModel.objects.annotate(price_id=Subquery(latest)).values("price_id")
    return {
        price.model_id: price.unit_prices()
        for price in ModelPrice.objects.filter(pk__in=latest_ids)
    }


def _apply_entry(row: CatalogModel, entry: CatalogEntry) -> bool:
    """Copy the entry's catalog fields onto the row; return True if any value changed."""
    values: dict[str, Any] = {"name": entry.name}
    if entry.context_length is not None:
        values["context_length"] = entry.context_length
    if entry.max_completion_tokens is not None:
        values["max_completion_tokens"] = entry.max_completion_tokens
    if entry.input_modalities is not None:
        values["input_modalities"] = list(entry.input_modalities)
    if entry.output_modalities is not None:
        values["output_modalities"] = list(entry.output_modalities)
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed
