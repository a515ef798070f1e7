"""agents.runtime keeps roles, bindings and prices in memory while the config stamp holds:
every change to those tables, however it is written, applies from the next read, a
rolled-back change never sticks, a price's next version takes over on time, and an
unchanged configuration costs one query."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import RoleBinding
from agents.runtime import (
    binding_for_role,
    config_pinned,
    config_stamp,
    price_in_force,
    role_active,
    token_scope,
)
from billing.models import ModelPrice
from office.models import Role
from tests.factories import CatalogModelFactory, ModelPriceFactory, RoleFactory

pytestmark = pytest.mark.django_db


def test_an_unchanged_configuration_is_read_with_one_query_per_lookup():
    role = RoleFactory(runnable=True)
    first = binding_for_role(role=role)
    assert first is not None
    with CaptureQueriesContext(connection) as queries:
        again = binding_for_role(role=role)
        candidates = list(again.candidates.all())
    assert again is first  # the kept instance
    assert candidates == list(first.candidates.all())
    assert len(queries) == 1, [q["sql"] for q in queries.captured_queries]
    assert "agents_configstamp" in queries.captured_queries[0]["sql"]


def test_inside_a_pinned_scope_the_stamp_is_read_once():
    role = RoleFactory(runnable=True)
    binding = binding_for_role(role=role)
    price_in_force(model=binding.model, at=timezone.now())
    with config_pinned(), CaptureQueriesContext(connection) as queries:
        assert role_active(slug=role.slug) == role
        assert binding_for_role(role=role) is binding
        price_in_force(model=binding.model, at=timezone.now())
    # The role was not read before: the stamp and the role, nothing else.
    assert len(queries) == 2, [q["sql"] for q in queries.captured_queries]


def test_a_change_written_without_the_orm_applies_to_the_next_read():
    role = RoleFactory(runnable=True)
    binding = binding_for_role(role=role)
    other = CatalogModelFactory(slug="acme/other")
    stamp = config_stamp()
    with connection.cursor() as cursor:  # no model signals: only the triggers see it
        cursor.execute(
            "UPDATE agents_rolebinding SET model_id = %s WHERE id = %s", [other.pk, binding.pk]
        )
    assert config_stamp() != stamp
    assert binding_for_role(role=role).model == other


@pytest.mark.parametrize(
    ("change", "gone"),
    [
        (lambda role: Role.objects.filter(pk=role.pk).update(is_active=False), "role"),
        (lambda role: RoleBinding.objects.filter(role=role).delete(), "binding"),
        (lambda role: ModelPrice.objects.filter(model=role.binding.model).delete(), "price"),
    ],
    ids=["role deactivated", "binding deleted", "prices deleted"],
)
def test_each_kind_of_change_is_seen(change, gone):
    role = RoleFactory(runnable=True)
    model = role.binding.model
    assert role_active(slug=role.slug) is not None
    assert binding_for_role(role=role) is not None
    assert price_in_force(model=model, at=timezone.now()) is not None
    change(role)
    fresh = {
        "role": role_active(slug=role.slug),
        "binding": binding_for_role(role=role),
        "price": price_in_force(model=model, at=timezone.now()),
    }
    assert fresh[gone] is None


def test_a_credential_change_is_seen():
    role = RoleFactory(runnable=True)
    credential = binding_for_role(role=role).credential
    type(credential).objects.filter(pk=credential.pk).update(base_url="http://127.0.0.1:9/v1")
    assert binding_for_role(role=role).credential.base_url == "http://127.0.0.1:9/v1"


def test_a_rolled_back_change_is_not_kept():
    role = RoleFactory(runnable=True)
    original = binding_for_role(role=role).model
    other = CatalogModelFactory(slug="acme/rolled-back")
    seen_inside = None
    try:
        with transaction.atomic():
            RoleBinding.objects.filter(role=role).update(model=other)
            seen_inside = binding_for_role(role=role).model  # and kept under the new stamp
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert seen_inside == other
    assert binding_for_role(role=role).model == original


def test_the_next_price_version_takes_over_when_it_takes_effect():
    model = CatalogModelFactory(slug="acme/repriced")
    now = timezone.now()
    ModelPriceFactory(model=model, valid_from=now - timedelta(days=1), prompt=Decimal("0.000001"))
    ModelPriceFactory(model=model, valid_from=now + timedelta(hours=1), prompt=Decimal("0.000005"))
    stamp = config_stamp()
    assert price_in_force(model=model, at=now).prompt == Decimal("0.000001")
    later = price_in_force(model=model, at=now + timedelta(hours=2))
    assert config_stamp() == stamp  # nothing changed in the database: time did
    assert later.prompt == Decimal("0.000005")
    # And an earlier instant than the kept version's start is looked up, not guessed.
    assert price_in_force(model=model, at=now - timedelta(days=2)) is None


def test_a_tokens_scope_is_kept_until_its_roles_change():
    from office.services import api_token_create
    from tests.factories import UserFactory

    kept_role, added_role = RoleFactory(), RoleFactory()
    token, _raw = api_token_create(user=UserFactory(), name="scoped", roles=[kept_role])
    assert token_scope(token=token) == {kept_role.pk}
    token.roles.add(added_role)  # the many-to-many table's trigger changes the stamp
    assert token_scope(token=token) == {kept_role.pk, added_role.pk}
