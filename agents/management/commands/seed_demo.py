from django.core.management.base import BaseCommand

from agents.demo import demo_logins_text, demo_seed


class Command(BaseCommand):
    help = (
        "Create the demo office (catalog, five roles, sandbox credential, and an admin, a "
        "manager and a staff person; their passwords are printed once, when created)."
    )

    def handle(self, *args: object, **options: object) -> None:
        logins = demo_seed()
        self.stdout.write(f"Demo office ready. People:\n{demo_logins_text(logins)}")
