"""`manage.py run_office`: the whole embedded office in one terminal.

Applies migrations, seeds the demo, prints the logins it created, then runs the web
server, a Celery worker, beat and the sandbox provider side by side (honcho), stopping
all on Ctrl-C.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from honcho.manager import Manager

from agents.demo import demo_logins_text, demo_seed


class Command(BaseCommand):
    help = "Start the embedded office: web, worker, beat and the sandbox provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Web port (default 8000).")
        parser.add_argument(
            "--concurrency", type=int, default=20, help="Worker threads (default 20)."
        )
        parser.add_argument(
            "--no-sandbox", action="store_true", help="Do not start the sandbox provider."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        logins = demo_seed()
        python = sys.executable
        port = options["port"]
        sandbox_port = urlsplit(settings.ROSTER_SANDBOX_URL).port or 8765

        manager = Manager()
        manager.add_process("web", f"{python} manage.py runserver 127.0.0.1:{port} --noreload")
        # One worker for both queues: role calls and the local helper's preparation.
        queues = f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.ROSTER_HELPER_QUEUE}"
        manager.add_process(
            "worker",
            f"{python} -m celery -A office worker --pool threads "
            f"--concurrency {options['concurrency']} --queues {queues} --loglevel INFO",
        )
        manager.add_process(
            "beat",
            f"{python} -m celery -A office beat --loglevel INFO "
            f"--schedule {settings.CELERY_BEAT_SCHEDULE_FILENAME}",
        )
        if not options["no_sandbox"]:
            manager.add_process(
                "sandbox", f"{python} manage.py sandbox_provider --port {sandbox_port}"
            )

        self.stdout.write(
            self.style.SUCCESS(
                f"\nRoster is starting at http://127.0.0.1:{port}/\n"
                "People (a password is shown once, when its person is created):\n"
                f"{demo_logins_text(logins)}\n"
                f"  admin: http://127.0.0.1:{port}/admin/\n"
                "  roles answer through the sandbox provider (simulated) until you bind a "
                "real key.\n"
            )
        )
        manager.loop()
        sys.exit(manager.returncode)
