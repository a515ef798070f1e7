from django.core.management.base import BaseCommand

from agents.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo office (catalog, five roles, sandbox credential, admin login)."

    def handle(self, *args: object, **options: object) -> None:
        login = demo_seed()
        self.stdout.write(f"Demo office ready. Admin login: {login.username} / {login.password}")
