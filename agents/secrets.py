"""Provider secrets at rest: Fernet encryption with rotation (MultiFernet).

Keys come from ROSTER_FERNET_KEYS (newest first; `make run` writes one into .env on first
start). A secret is decrypted only at the moment a
call goes out, and never returned, logged or shown again.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretError(Exception):
    """A secret that cannot be stored or read (bad input, or a key that does not fit)."""


@lru_cache(maxsize=1)
def _multi_fernet() -> MultiFernet:
    keys: list[str] = list(settings.ROSTER_FERNET_KEYS)
    if not keys:
        raise ImproperlyConfigured(
            "No encryption key for provider secrets: set ROSTER_FERNET_KEYS (`make run` "
            "writes one into .env on first start)."
        )
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "ROSTER_FERNET_KEYS holds a value that is not a Fernet key (32 url-safe "
            "base64-encoded bytes); generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`"
        ) from exc


def secret_validate(raw: str) -> str:
    """Return the secret stripped of surrounding blanks. Raises SecretError if unusable."""
    secret = (raw or "").strip()
    if not secret:
        raise SecretError("The API key is empty.")
    if any(ch.isspace() for ch in secret):
        raise SecretError("The API key contains spaces or line breaks; paste the key alone.")
    if len(secret) > 4096:
        raise SecretError("The API key is longer than 4096 characters.")
    return secret


def secret_encrypt(raw: str) -> tuple[str, str]:
    """Encrypt a secret. Returns (token, last four characters). Raises SecretError."""
    secret = secret_validate(raw)
    token = _multi_fernet().encrypt(secret.encode()).decode()
    return token, secret[-4:]


def secret_decrypt(token: str) -> str:
    """Decrypt a stored secret. Raises SecretError if no configured key fits."""
    try:
        return _multi_fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError(
            "The stored API key cannot be decrypted with the configured keys "
            "(ROSTER_FERNET_KEYS changed without rotation?). Enter the key again."
        ) from None


def secret_rotate(token: str) -> str:
    """Re-encrypt a stored secret under the newest key. Raises SecretError."""
    try:
        return _multi_fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretError(
            "A stored API key cannot be decrypted with the configured keys."
        ) from None


def keys_reload() -> None:
    """Forget cached keys (after settings change, in tests or after rotation)."""
    _multi_fernet.cache_clear()
