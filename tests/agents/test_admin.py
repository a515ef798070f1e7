"""The agents admin: a credential's key is write-only, bindings are editable."""

import pytest
from django.urls import reverse

from agents.models import Credential, RoleBinding
from agents.secrets import secret_decrypt
from tests import canary
from tests.factories import CatalogModelFactory, CredentialFactory, RoleFactory

pytestmark = pytest.mark.django_db

CANARY = canary.OPENROUTER_KEY


def test_adding_a_credential_encrypts_the_key_and_shows_only_its_last_four(admin_client):
    response = admin_client.post(
        reverse("admin:agents_credential_add"),
        {"label": "OpenRouter", "provider": "openrouter", "base_url": "", "secret": CANARY},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential = Credential.objects.get(label="OpenRouter")
    assert secret_decrypt(credential.secret_encrypted) == CANARY
    assert CANARY not in credential.secret_encrypted
    page = admin_client.get(reverse("admin:agents_credential_change", args=[credential.pk]))
    content = page.content.decode()
    assert CANARY not in content
    assert f"····{CANARY[-4:]}" in content
    listing = admin_client.get(reverse("admin:agents_credential_changelist")).content.decode()
    assert CANARY not in listing
    assert f"····{CANARY[-4:]}" in listing


def test_a_new_credential_needs_a_key(admin_client):
    response = admin_client.post(
        reverse("admin:agents_credential_add"),
        {"label": "No key", "provider": "openrouter", "secret": ""},
    )

    assert response.status_code == 200
    assert "Enter the provider&#x27;s API key." in response.content.decode()
    assert not Credential.objects.exists()


def test_a_key_with_spaces_is_refused_and_not_echoed(admin_client):
    response = admin_client.post(
        reverse("admin:agents_credential_add"),
        {"label": "Pasted", "provider": "openrouter", "secret": "sk-or-v1-abc def12345"},
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert "contains spaces" in content
    assert "abc def12345" not in content
    assert not Credential.objects.exists()


def test_saving_with_a_blank_key_keeps_the_stored_one(admin_client):
    credential = CredentialFactory(raw_secret=CANARY)
    before = credential.secret_encrypted

    response = admin_client.post(
        reverse("admin:agents_credential_change", args=[credential.pk]),
        {"label": "Renamed", "provider": "openrouter", "base_url": "", "secret": ""},
    )

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.label == "Renamed"
    assert credential.secret_encrypted == before


def test_replacing_the_key(admin_client):
    credential = CredentialFactory(raw_secret=CANARY)
    new = canary.PLAIN_KEY
    assert new[-4:] != CANARY[-4:]

    admin_client.post(
        reverse("admin:agents_credential_change", args=[credential.pk]),
        {"label": credential.label, "provider": "openrouter", "secret": new},
    )

    credential.refresh_from_db()
    assert secret_decrypt(credential.secret_encrypted) == new
    assert credential.secret_last4 == "8Rt3"


def test_binding_a_role_to_a_model_and_credential(admin_client):
    role = RoleFactory(slug="coder")
    model = CatalogModelFactory(slug="deepseek/deepseek-v4-pro")
    credential = CredentialFactory()

    response = admin_client.post(
        reverse("admin:agents_rolebinding_add"),
        {
            "role": role.pk,
            "model": model.pk,
            "credential": credential.pk,
            "upstream_model": "",
            "max_tokens": 2048,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    binding = RoleBinding.objects.get(role=role)
    assert (binding.model, binding.credential, binding.max_tokens) == (model, credential, 2048)
    assert admin_client.get(reverse("admin:agents_rolebinding_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:agents_workerheartbeat_changelist")).status_code == 200
