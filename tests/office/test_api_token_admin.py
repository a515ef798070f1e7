"""The API token admin: a token scoped to roles from the add form, shown once."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from office.models import ApiToken
from tests.factories import RoleFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_added_with_roles_is_scoped_to_them_and_shown_once(admin_client: Client):
    owner = UserFactory()
    coder = RoleFactory(slug="coder", runnable=True)
    RoleFactory(slug="writer", runnable=True)

    add_page = admin_client.get(reverse("admin:office_apitoken_add"))
    response = admin_client.post(
        reverse("admin:office_apitoken_add"),
        {
            "name": "coding-agent",
            "user": owner.pk,
            "expires_at_0": "",
            "expires_at_1": "",
            "roles": [coder.pk],
        },
        follow=True,
    )

    assert 'name="roles"' in add_page.content.decode()
    raw = re.search(r"<code>(rst_[A-Za-z0-9_-]+)</code>", response.content.decode()).group(1)
    token = ApiToken.objects.get()
    assert list(token.roles.all()) == [coder]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    refused = api.post("/api/tasks/", {"role": "writer", "prompt": "Hi"}, format="json")
    assert refused.status_code == 403
    change_page = admin_client.get(reverse("admin:office_apitoken_change", args=[token.pk]))
    assert raw not in change_page.content.decode()
    assert 'name="roles"' in change_page.content.decode()


def test_a_token_added_without_roles_may_use_every_role(admin_client: Client) -> None:
    admin_client.post(
        reverse("admin:office_apitoken_add"),
        {"name": "all-roles", "user": UserFactory().pk, "expires_at_0": "", "expires_at_1": ""},
    )

    token = ApiToken.objects.get()
    assert not token.roles.exists()
    assert token.allows_role(RoleFactory())
