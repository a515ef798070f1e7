"""Provider secrets: encrypted at rest, rotatable, redacted from logs and errors."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from agents.models import Credential
from agents.redaction import RedactSecretsFilter, redact
from agents.secrets import SecretError, keys_reload, secret_decrypt, secret_encrypt
from agents.services import credential_create, credentials_rotate
from tests import canary

CANARY = canary.OPENROUTER_KEY


@pytest.fixture(autouse=True)
def fresh_keys():
    keys_reload()
    yield
    keys_reload()


@pytest.mark.django_db
def test_secret_is_stored_encrypted_with_last_four_in_clear():
    credential = credential_create(label="or", provider="openrouter", raw_secret=f"  {CANARY} ")

    stored = Credential.objects.get(pk=credential.pk)
    assert CANARY not in stored.secret_encrypted
    assert stored.secret_last4 == CANARY[-4:]
    assert stored.masked_secret == f"····{CANARY[-4:]}"
    assert secret_decrypt(stored.secret_encrypted) == CANARY


@pytest.mark.parametrize(("raw", "message"), [("", "empty"), ("sk-a b", "spaces")])
def test_unusable_secrets_are_refused(raw, message):
    with pytest.raises(SecretError, match=message):
        secret_encrypt(raw)


@pytest.mark.django_db
def test_rotation_re_encrypts_under_the_new_key_and_old_key_can_then_go(settings):
    old = settings.ROSTER_FERNET_KEYS[0]
    credential = credential_create(label="or", provider="openrouter", raw_secret=CANARY)
    new = Fernet.generate_key().decode()
    settings.ROSTER_FERNET_KEYS = [new, old]
    keys_reload()

    assert credentials_rotate() == 1

    settings.ROSTER_FERNET_KEYS = [new]
    keys_reload()
    credential.refresh_from_db()
    assert secret_decrypt(credential.secret_encrypted) == CANARY


def test_a_token_from_unknown_keys_gives_a_clear_error(settings):
    token, _ = secret_encrypt(CANARY)
    settings.ROSTER_FERNET_KEYS = [Fernet.generate_key().decode()]
    keys_reload()
    with pytest.raises(SecretError, match="cannot be decrypted"):
        secret_decrypt(token)


def test_missing_or_malformed_key_configuration_fails_loudly(settings):
    settings.ROSTER_FERNET_KEYS = []
    keys_reload()
    with pytest.raises(ImproperlyConfigured, match="ROSTER_FERNET_KEYS"):
        secret_encrypt(CANARY)
    settings.ROSTER_FERNET_KEYS = ["not-a-key"]
    keys_reload()
    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        secret_encrypt(CANARY)


@pytest.mark.parametrize(
    "secret",
    [
        canary.OPENROUTER_KEY,
        canary.OPENAI_KEY,
        canary.ANTHROPIC_KEY,
        canary.GEMINI_KEY,
        canary.SANDBOX_KEY,
        "rst_abcdefghijklmnopqr",
        "gsk_abcdefghijklmnopqrstu",
        "xai-abcdefghijklmnopq",
    ],
)
def test_key_shaped_strings_are_redacted(secret):
    assert secret not in redact(f"Incorrect API key provided: {secret}.")


def test_explicit_secret_is_redacted_even_if_it_has_no_known_shape():
    secret = canary.PLAIN_KEY
    assert secret in redact(f"bad key {secret}")  # no shape to recognise it by
    assert secret not in redact(f"bad key {secret}", secret)


def test_log_filter_redacts_messages_arguments_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", (CANARY,), None)
    try:
        raise ValueError(f"boom {CANARY}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactSecretsFilter().filter(record)
    assert CANARY not in record.getMessage()
    assert CANARY not in record.exc_text
