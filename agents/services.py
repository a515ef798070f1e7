"""Agents actions: credentials and role bindings."""

from __future__ import annotations

from django.db import transaction

from agents.models import Credential
from agents.secrets import secret_encrypt, secret_rotate


def credential_set_secret(*, credential: Credential, raw_secret: str) -> None:
    """Encrypt and set a credential's secret (not saved). Raises SecretError."""
    credential.secret_encrypted, credential.secret_last4 = secret_encrypt(raw_secret)


def credential_create(
    *, label: str, provider: str, raw_secret: str, base_url: str = "", is_simulated: bool = False
) -> Credential:
    """Create and save a credential with its secret encrypted. Raises SecretError."""
    credential = Credential(
        label=label, provider=provider, base_url=base_url, is_simulated=is_simulated
    )
    credential_set_secret(credential=credential, raw_secret=raw_secret)
    credential.full_clean()
    credential.save()
    return credential


def credentials_rotate() -> int:
    """Re-encrypt every stored secret under the newest key. Returns how many rows."""
    count = 0
    with transaction.atomic():
        for credential in Credential.objects.select_for_update().only("pk", "secret_encrypted"):
            Credential.objects.filter(pk=credential.pk).update(
                secret_encrypted=secret_rotate(credential.secret_encrypted)
            )
            count += 1
    return count
