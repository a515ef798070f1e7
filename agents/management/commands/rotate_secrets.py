from django.core.management.base import BaseCommand, CommandError

from agents.secrets import SecretError
from agents.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt every provider secret under the first key of ROSTER_FERNET_KEYS."

    def handle(self, *args: object, **options: object) -> None:
        try:
            count = credentials_rotate()
        except SecretError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Re-encrypted {count} credential(s) under the newest key.")
