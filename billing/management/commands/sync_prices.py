"""`manage.py sync_prices`: bring the model catalog and its prices up to date."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.catalog import (
    CatalogError,
    catalog_fetch,
    catalog_load_file,
    catalog_parse,
    catalog_sync,
)


class Command(BaseCommand):
    help = (
        "Sync the model catalog and prices from OpenRouter's /api/v1/models, or from a "
        "saved response with --file (e.g. the bundled snapshot, for offline use)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--file", metavar="PATH", help="Read a saved response instead.")
        source.add_argument(
            "--url",
            default=settings.ROSTER_OPENROUTER_MODELS_URL,
            help="Catalog URL (default: ROSTER_OPENROUTER_MODELS_URL, %(default)s).",
        )
        parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["file"]:
                payload = catalog_load_file(options["file"])
            else:
                payload = catalog_fetch(url=options["url"], timeout=options["timeout"])
            report = catalog_sync(entries=catalog_parse(payload))
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(report.summary()))
