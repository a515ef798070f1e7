"""`manage.py cost <subcommand>`: what the office spent, for people and for scripts.

    manage.py cost summary --period month --format table

Subcommands are argparse subparsers; each is one `_handle_<name>` method, so `breakdown`
and `alert` slot in beside `summary`.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.money import format_usd, money_sum
from billing.periods import PERIODS, period_bounds
from billing.reports import RoleSpend, spend_by_role
from office.fields import decimal_text

FORMATS = ("table", "csv", "json")


class Command(BaseCommand):
    help = "Report what the office spent on providers."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
        summary = subcommands.add_parser(
            "summary", help="Spend per role for the current day, week or month."
        )
        summary.add_argument(
            "--period",
            choices=PERIODS,
            default="month",
            help="Calendar period containing now, in TIME_ZONE (default: month).",
        )
        summary.add_argument(
            "--format",
            dest="output_format",
            choices=FORMATS,
            default="table",
            help="table for people (6 decimals), csv or json with exact amounts.",
        )

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        handler = getattr(self, f"_handle_{subcommand}", None)
        if handler is None:
            raise CommandError(f"Unknown subcommand {subcommand!r}.")
        handler(**options)

    def _handle_summary(self, *, period: str, output_format: str, **options: Any) -> None:
        start, end = period_bounds(
            period=period, now=timezone.now(), tz=timezone.get_current_timezone()
        )
        report = spend_by_role(start=start, end=end)
        if output_format == "csv":
            self._write_csv(report)
        elif output_format == "json":
            self._write_json(report, period=period, start=start, end=end)
        else:
            self.stdout.write(
                f"Spend by role, {period} from {start:%Y-%m-%d} to {end:%Y-%m-%d} "
                f"({timezone.get_current_timezone_name()})\n"
            )
            self._write_table(report)

    def _write_table(self, report: list[RoleSpend]) -> None:
        header = ["Role", "Calls", "Input tokens", "Output tokens", "Cost"]
        body = [
            [
                r.role_slug,
                f"{r.calls:,}",
                f"{r.input_tokens:,}",
                f"{r.output_tokens:,}",
                format_usd(r.cost),
            ]
            for r in report
        ]
        total = [
            "Total",
            f"{sum(r.calls for r in report):,}",
            f"{sum(r.input_tokens for r in report):,}",
            f"{sum(r.output_tokens for r in report):,}",
            format_usd(money_sum(r.cost for r in report)),
        ]
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            # The role left-aligned, the figures right-aligned.
            first, *rest = cells
            return "  ".join(
                [
                    first.ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)),
                ]
            )

        rule = "  ".join("-" * w for w in widths)
        self.stdout.write("\n".join([line(header), rule, *map(line, body), rule, line(total)]))

    def _write_csv(self, report: list[RoleSpend]) -> None:
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow(["role", "role_name", "calls", "input_tokens", "output_tokens", "cost_usd"])
        for r in report:
            writer.writerow(
                [
                    r.role_slug,
                    r.role_name,
                    r.calls,
                    r.input_tokens,
                    r.output_tokens,
                    decimal_text(r.cost),
                ]
            )

    def _write_json(
        self, report: list[RoleSpend], *, period: str, start: datetime, end: datetime
    ) -> None:
        document = {
            "period": period,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "roles": [
                {
                    "role": r.role_slug,
                    "role_name": r.role_name,
                    "calls": r.calls,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    # A string: JSON numbers are floats to most readers.
                    "cost_usd": decimal_text(r.cost),
                }
                for r in report
            ],
            "total": {
                "calls": sum(r.calls for r in report),
                "input_tokens": sum(r.input_tokens for r in report),
                "output_tokens": sum(r.output_tokens for r in report),
                "cost_usd": decimal_text(money_sum(r.cost for r in report)),
            },
        }
        self.stdout.write(json.dumps(document, indent=2))
