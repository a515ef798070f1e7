"""GET /api/roles/: the roles a token may use, their current model and its price."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import ModelPrice
from office.services import api_token_create
from tests.factories import ModelPriceFactory, RoleBindingFactory, RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES_URL = reverse("office_api:role_list")


def get_roles(*, roles=()) -> list[dict]:
    _, raw = api_token_create(user=UserFactory(), name="agent", roles=roles)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get(ROLES_URL)
    assert response.status_code == 200
    return response.json()


def test_roles_list_the_bound_model_and_its_current_price_exactly() -> None:
    coder = RoleFactory(slug="coder", name="Coder", description="Writes code.")
    binding = RoleBindingFactory(role=coder, model__slug="vendor/coder-1", model__name="C1")
    # A newer price version is the one in force; a future one is not yet.
    ModelPrice.objects.filter(model=binding.model).update(
        valid_from=timezone.now() - timedelta(days=1)
    )
    ModelPriceFactory(
        model=binding.model,
        prompt=Decimal("0.00000008333333333333334"),
        completion=Decimal("0.0000004"),
        input_cache_read=None,
        valid_from=timezone.now() - timedelta(minutes=1),
    )
    ModelPriceFactory(
        model=binding.model, prompt=Decimal("1"), valid_from=timezone.now() + timedelta(days=1)
    )

    [role] = get_roles()

    assert {k: role[k] for k in ("slug", "name", "description", "policy")} == {
        "slug": "coder",
        "name": "Coder",
        "description": "Writes code.",
        "policy": "single",
    }
    assert role["model"] == {"slug": "vendor/coder-1", "name": "C1", "context_length": 128000}
    assert role["price"]["prompt"] == "0.00000008333333333333334"
    assert role["price"]["completion"] == "0.0000004"
    assert role["price"]["input_cache_read"] is None
    assert role["price"]["source"] == "sync"


def test_unbound_role_is_listed_without_model_or_price() -> None:
    RoleFactory(slug="intern")

    [role] = get_roles()

    assert (role["slug"], role["model"], role["price"], role["policy"]) == (
        "intern",
        None,
        None,
        None,
    )


def test_scoped_token_lists_only_its_active_roles() -> None:
    coder = RoleFactory(slug="coder", runnable=True)
    RoleFactory(slug="writer", runnable=True)
    retired = RoleFactory(slug="retired", runnable=True, is_active=False)

    assert [role["slug"] for role in get_roles(roles=[coder, retired])] == ["coder"]
    assert [role["slug"] for role in get_roles()] == ["coder", "writer"]


def test_roles_need_a_token() -> None:
    response = APIClient().get(ROLES_URL)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
