"""`manage.py sandbox_provider`: serve the simulated LLM provider (tests, demo, benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.sandbox.catalog import CatalogError
from agents.sandbox.server import SandboxConfig, run


class Command(BaseCommand):
    help = (
        "Serve the sandbox provider: OpenAI, OpenRouter, Anthropic and Gemini wire formats "
        "with deterministic, simulated answers (not a real model). See docs/sandbox.md."
    )
    # Standalone: no system checks, no database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument(
            "--catalog",
            type=Path,
            default=None,
            help="OpenRouter catalog JSON with the prices to charge "
            "(default: settings.ROSTER_CATALOG_SNAPSHOT)",
        )
        parser.add_argument(
            "--latency", type=float, default=0.0, help="seconds to wait before each answer"
        )
        parser.add_argument(
            "--log-file", type=Path, default=None, help="append each request as a JSON line"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["latency"] < 0:
            raise CommandError("--latency must be >= 0")
        config = SandboxConfig(
            catalog_path=options["catalog"] or Path(settings.ROSTER_CATALOG_SNAPSHOT),
            latency=options["latency"],
            log_file=options["log_file"],
        )

        def announce(url: str) -> None:
            self.stdout.write(
                f"Sandbox provider listening on {url} (simulated answers, not a real model)"
            )
            self.stdout.flush()

        try:
            run(options["host"], options["port"], config, announce=announce)
        except CatalogError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:  # typically: the port is taken
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from None
