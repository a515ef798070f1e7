"""What a call is planned from, kept in memory per process: roles by slug, their bindings
with route candidates, models and credentials, the price in force of each model, and
the roles each API token is limited to.

Every provider call needs these rows, and they change rarely (an admin's edit, a catalog
sync). Read from the database they cost a dozen queries per call, most of the CPU of a
/v1 request. Here they are read once and kept for as long as the config stamp
(agents.models.ConfigStamp) is unchanged: database triggers change the stamp whenever
one of those tables changes, whoever writes it, so a change applies from the next call
on, in every process, exactly as if nothing were kept. A price is kept together with the
time the next price version of its model takes effect, and read again from then on.

Reading the stamp is one indexed single-row query. Inside `config_pinned()` (a request,
a task's execution) it is read once and reused, so that one call's plan is made from one
consistent reading. On a database without the triggers (neither PostgreSQL nor SQLite),
or when the stamp row is missing (a test flushed it), nothing is kept.

The kept model instances are shared between threads: read them, never change them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Prefetch

from agents.models import RoleBinding, RouteCandidate
from billing.models import CatalogModel, ModelPrice
from billing.selectors import price_current
from office.models import ApiToken, Role

STAMPED_VENDORS = ("postgresql", "sqlite")
_UNREAD = object()
_OUTSIDE = object()


@dataclass
class _Kept:
    """What was read under one stamp."""

    stamp: int
    roles: dict[str, Role | None] = field(default_factory=dict)
    bindings: dict[int, RoleBinding | None] = field(default_factory=dict)
    # model id -> (price in force, when the next version takes effect or None)
    prices: dict[int, tuple[ModelPrice | None, datetime | None]] = field(default_factory=dict)
    token_scopes: dict[int, frozenset[int]] = field(default_factory=dict)


_kept: _Kept | None = None
_lock = threading.Lock()
# The stamp read in the current pinned scope (_UNREAD: not read yet; _OUTSIDE: none).
_pinned: ContextVar[object] = ContextVar("agents_runtime_pinned", default=_OUTSIDE)


@contextmanager
def config_pinned() -> Iterator[None]:
    """Read the config stamp at most once inside this block (one request, one task)."""
    token = _pinned.set(_UNREAD)
    try:
        yield
    finally:
        _pinned.reset(token)


def config_stamp() -> int | None:
    """The current config stamp, or None when the database keeps none."""
    if connection.vendor not in STAMPED_VENDORS:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT stamp FROM agents_configstamp WHERE id = 1")
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def role_active(*, slug: str) -> Role | None:
    """The active role with this slug, or None."""
    kept = _current()
    if kept is not None and slug in kept.roles:
        return kept.roles[slug]
    role = Role.objects.filter(slug=slug, is_active=True).first()
    if kept is not None:
        kept.roles[slug] = role
    return role


def binding_for_role(*, role: Role) -> RoleBinding | None:
    """The role's binding with its models, credentials and route candidates loaded, or
    None if unbound."""
    kept = _current()
    if kept is not None and role.pk in kept.bindings:
        return kept.bindings[role.pk]
    binding = (
        RoleBinding.objects.select_related(
            "model", "credential", "role", "over_budget_model", "over_budget_credential"
        )
        .prefetch_related(
            Prefetch(
                "candidates",
                queryset=RouteCandidate.objects.select_related("model", "credential"),
            )
        )
        .filter(role=role)
        .first()
    )
    if kept is not None:
        kept.bindings[role.pk] = binding
    return binding


def token_scope(*, token: ApiToken) -> frozenset[int]:
    """The ids of the roles an API token is limited to (empty: not limited)."""
    kept = _current()
    if kept is not None and token.pk in kept.token_scopes:
        return kept.token_scopes[token.pk]
    scope = frozenset(token.roles.values_list("pk", flat=True))
    if kept is not None:
        kept.token_scopes[token.pk] = scope
    return scope


def price_in_force(*, model: CatalogModel, at: datetime) -> ModelPrice | None:
    """The price version of `model` in force at `at` (billing.selectors.price_current)."""
    kept = _current()
    if kept is not None and model.pk in kept.prices:
        price, next_change = kept.prices[model.pk]
        if (price is None or price.valid_from <= at) and (next_change is None or at < next_change):
            return price
    price = price_current(model=model, at=at)
    if kept is not None:
        next_change = (
            ModelPrice.objects.filter(model=model, valid_from__gt=at)
            .order_by("valid_from")
            .values_list("valid_from", flat=True)
            .first()
        )
        kept.prices[model.pk] = (price, next_change)
    return price


def _current() -> _Kept | None:
    """What is kept under the current stamp (emptied when the stamp changed), or None
    when nothing can be kept."""
    global _kept
    pinned = _pinned.get()
    if pinned is _OUTSIDE or pinned is _UNREAD:
        stamp = config_stamp()
        if pinned is _UNREAD:
            _pinned.set(stamp)
    else:
        # Read earlier in this scope: if the stamp moved on meanwhile (another thread saw
        # it), read from the database rather than keep rows under an old stamp.
        kept = _kept
        return kept if kept is not None and kept.stamp == pinned else None
    if stamp is None:
        return None
    kept = _kept
    if kept is not None and kept.stamp == stamp:
        return kept
    with _lock:
        if _kept is None or _kept.stamp != stamp:
            _kept = _Kept(stamp=stamp)
        return _kept
