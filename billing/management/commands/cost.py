"""`manage.py cost <subcommand>`: what the office spent, for people and for scripts.

    manage.py cost summary --period month --format table
    manage.py cost breakdown --period week --by model --format csv
    manage.py cost alert --threshold 5.00 --period week
    manage.py cost rebuild-rollups [--check] [--since YYYY-MM-DD]
    manage.py cost reconcile --against FILE

Figures come from billing.reports (the rollups), like the report page. Each subcommand
is one `_add_<name>` method that declares its parser and one `_handle_<name>` method that
runs it (a dash in the name becomes an underscore), so `alert` and `rebuild-rollups`
slot in beside `summary` and `breakdown`.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.alerts import alert_check_spend
from billing.money import format_usd
from billing.periods import PERIODS, local_day, local_midnight, office_tz, period_days
from billing.reconcile import ReconcileError, export_read, reconcile
from billing.reports import (
    BREAKDOWNS,
    BreakdownRow,
    Dimension,
    Spend,
    breakdown_columns,
    ratio_percent,
    spend_breakdown,
    spend_sum,
)
from billing.rollups import rollups_rebuild

FORMATS = ("table", "csv", "json")


class Command(BaseCommand):
    help = "Report what the office spent on providers."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
        # Options every report subcommand shares.
        report_options = argparse.ArgumentParser(add_help=False)
        report_options.add_argument(
            "--period",
            choices=PERIODS,
            default="month",
            help="Calendar period containing now, in TIME_ZONE (default: month).",
        )
        report_options.add_argument(
            "--format",
            dest="output_format",
            choices=FORMATS,
            default="table",
            help="table for people (6 decimals), csv or json with exact amounts.",
        )
        self._add_summary(subcommands, parents=[report_options])
        self._add_breakdown(subcommands, parents=[report_options])
        self._add_alert(subcommands)
        self._add_rebuild_rollups(subcommands)
        self._add_reconcile(subcommands)

    def _add_alert(self, subcommands: Any) -> None:
        alert = subcommands.add_parser(
            "alert",
            help="Alert (email, webhook) if the office spent at least THRESHOLD this period.",
        )
        alert.add_argument("--threshold", required=True, help="USD, e.g. 5.00.")
        alert.add_argument("--period", choices=PERIODS, default="month")

    def _add_rebuild_rollups(self, subcommands: Any) -> None:
        rebuild = subcommands.add_parser(
            "rebuild-rollups",
            help="Recompute rollups from the ledger; list any difference (there should be none).",
        )
        rebuild.add_argument("--check", action="store_true", help="Only compare; change nothing.")
        rebuild.add_argument(
            "--since", type=date.fromisoformat, help="First local day (YYYY-MM-DD); default all."
        )

    def _add_reconcile(self, subcommands: Any) -> None:
        reconcile_parser = subcommands.add_parser(
            "reconcile",
            help="Compare the ledger with a provider's export (sandbox log or OpenRouter CSV).",
        )
        reconcile_parser.add_argument(
            "--against",
            required=True,
            type=Path,
            metavar="FILE",
            help="The sandbox provider's JSONL request log or an OpenRouter activity CSV.",
        )

    def _add_summary(self, subcommands: Any, *, parents: list[argparse.ArgumentParser]) -> None:
        subcommands.add_parser(
            "summary",
            parents=parents,
            help="Totals and spend per role for the current day, week or month.",
        )

    def _add_breakdown(self, subcommands: Any, *, parents: list[argparse.ArgumentParser]) -> None:
        breakdown = subcommands.add_parser(
            "breakdown",
            parents=parents,
            help="Spend per role, model, provider or person for the current period.",
        )
        breakdown.add_argument(
            "--by",
            choices=BREAKDOWNS,
            default="role",
            help="What to break down by (default: role).",
        )

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        handler = getattr(self, f"_handle_{subcommand.replace('-', '_')}", None)
        if handler is None:
            raise CommandError(f"Unknown subcommand {subcommand!r}.")
        handler(**options)

    # --- alert and rebuild-rollups -----------------------------------------------------

    def _handle_alert(self, *, threshold: str, period: str, **options: Any) -> None:
        try:
            amount = Decimal(threshold)
        except InvalidOperation:
            raise CommandError(
                f"--threshold must be an amount in USD, got {threshold!r}."
            ) from None
        try:
            check = alert_check_spend(threshold=amount, period=period)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        spent = f"{format_usd(check.spent)} spent this {period} (threshold {format_usd(amount)})"
        if check.alert is None:
            self.stdout.write(f"Below threshold: {spent}.")
            return
        delivered = check.delivery.as_dict() if check.delivery is not None else {}
        self.stdout.write(
            f"ALERT: {spent}. Alert #{check.alert.pk} recorded; delivery: {delivered}"
        )

    def _handle_reconcile(self, *, against: Path, **options: Any) -> None:
        try:
            export = export_read(against)
        except ReconcileError as exc:
            raise CommandError(str(exc)) from None
        result = reconcile(export)
        for line in result.differences:
            self.stdout.write(line)
        summary = (
            f"{len(export.charged)} charged requests in the {export.kind} export, "
            f"{result.matched} matched: {result.unbilled} unbilled, "
            f"{result.double_billed} double-billed, {result.cost_mismatches} cost "
            f"differences, {result.not_charged} ledger rows not in the export."
        )
        if not result.clean:
            raise CommandError(f"{len(result.differences)} difference(s). {summary}")
        self.stdout.write(f"No differences. {summary}")

    def _handle_rebuild_rollups(self, *, check: bool, since: date | None, **options: Any) -> None:
        report = rollups_rebuild(start=since, dry_run=check)
        for line in report.differences:
            self.stdout.write(line)
        verb = "Compared" if check else "Rebuilt"
        self.stdout.write(
            f"{verb} rollups from {report.ledger_rows} ledger rows: {report.rows_before} rows "
            f"stored, {report.rows_after} computed, {len(report.differences)} differences."
        )
        if report.differences and check:
            raise CommandError("Rollups differ from the ledger (run without --check to fix).")

    # --- summary and breakdown ---------------------------------------------------------

    def _handle_summary(self, *, period: str, output_format: str, **options: Any) -> None:
        self._report(period=period, by="role", output_format=output_format, summary=True)

    def _handle_breakdown(
        self, *, period: str, by: str, output_format: str, **options: Any
    ) -> None:
        self._report(period=period, by=by, output_format=output_format, summary=False)

    def _report(self, *, period: str, by: str, output_format: str, summary: bool) -> None:
        if output_format not in FORMATS:
            raise CommandError(f"Unknown format {output_format!r}; use {', '.join(FORMATS)}.")
        try:
            start, end = period_days(period=period, day=local_day(timezone.now()))
            rows = spend_breakdown(start=start, end=end, by=cast(Dimension, by))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        # The breakdown covers every billed call once, so its sum is the period's total.
        totals = spend_sum(row.spend for row in rows)
        if output_format == "csv":
            self._write_csv(rows, by=by)
        elif output_format == "json":
            self._write_json(
                rows, totals, by=by, period=period, start=start, end=end, summary=summary
            )
        else:
            self.stdout.write(
                f"Spend by {by}, {period} from {start:%Y-%m-%d} to {end:%Y-%m-%d} "
                f"({timezone.get_current_timezone_name()})\n"
            )
            self._write_table(rows, totals, by=by)
            if summary:
                self.stdout.write("\n" + _totals_block(totals))
            elif totals.helper_unpriced_calls:
                self.stdout.write(_helper_unpriced_note(totals))

    def _write_table(self, rows: Sequence[BreakdownRow], totals: Spend, *, by: str) -> None:
        header = [
            by.capitalize(),
            "Calls",
            "Unpriced",
            "Input tokens",
            "Output tokens",
            "Cache hit",
            "Cost",
            "Helper tokens",
            "Helper savings",
        ]
        body = [_table_cells(row.key or "(no one)", row.spend) for row in rows]
        total = _table_cells("Total", totals)
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            # The name left-aligned, the figures right-aligned.
            first, *rest = cells
            return "  ".join(
                [
                    first.ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)),
                ]
            )

        rule = "  ".join("-" * w for w in widths)
        self.stdout.write("\n".join([line(header), rule, *map(line, body), rule, line(total)]))

    def _write_csv(self, rows: Sequence[BreakdownRow], *, by: str) -> None:
        # The same columns as the report page's CSV export.
        writer = csv.DictWriter(
            self.stdout, fieldnames=breakdown_columns(by=by), lineterminator="\n"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_record(by=by))

    def _write_json(
        self,
        rows: Sequence[BreakdownRow],
        totals: Spend,
        *,
        by: str,
        period: str,
        start: date,
        end: date,
        summary: bool,
    ) -> None:
        tz = office_tz()
        records = [row.as_record(by=by) for row in rows]
        document: dict[str, Any] = {
            "period": period,
            "start": local_midnight(start, tz).isoformat(),
            "end": local_midnight(end, tz).isoformat(),
            "time_zone": str(tz),
        }
        # Money as strings: JSON numbers are floats to most readers. A summary keeps the
        # shape it has always had: "roles" and "total".
        if summary:
            document["roles"] = records
        else:
            document |= {"by": by, "rows": records}
        document["total"] = totals.as_record()
        self.stdout.write(json.dumps(document, indent=2))


def _table_cells(name: str, spend: Spend) -> list[str]:
    return [
        name,
        f"{spend.calls:,}",
        f"{spend.unpriced_calls:,}",
        f"{spend.input_tokens:,}",
        f"{spend.output_tokens:,}",
        ratio_percent(spend.cache_hit_ratio).replace(" ", ""),
        format_usd(spend.cost),
        f"{spend.helper_tokens:,}",
        format_usd(spend.helper_savings),
    ]


def _totals_block(totals: Spend) -> str:
    lines = [
        ("Failed calls (not billed)", f"{totals.failed_calls:,}"),
        ("Estimated calls", f"{totals.estimated_calls:,}"),
        ("Unpriced calls", f"{totals.unpriced_calls:,}"),
        ("Cached input tokens", f"{totals.cached_input_tokens:,}"),
        ("Cache hit ratio", ratio_percent(totals.cache_hit_ratio)),
        ("Cache write tokens", f"{totals.cache_write_tokens:,}"),
        ("Reasoning tokens", f"{totals.reasoning_tokens:,}"),
        ("Provider-reported cost", format_usd(totals.reported_cost)),
        ("Cache savings", format_usd(totals.cache_savings)),
        ("Local helper operations", f"{totals.helper_calls:,}"),
        (
            "Helper tokens absorbed",
            f"{totals.helper_tokens:,} ({ratio_percent(totals.helper_token_share)} of all tokens)",
        ),
        ("Local helper savings", format_usd(totals.helper_savings)),
    ]
    width = max(len(label) for label, _ in lines)
    text = [f"{label.ljust(width)}  {value}" for label, value in lines]
    if totals.unpriced_calls:
        text.append(
            f"Warning: {totals.unpriced_calls:,} calls used a model with no price; their "
            "cost is unknown and not in the cost above."
        )
    if totals.helper_unpriced_calls:
        text.append(_helper_unpriced_note(totals))
    return "\n".join(text)


def _helper_unpriced_note(totals: Spend) -> str:
    return (
        f"Note: {totals.helper_unpriced_calls:,} local helper operations ran for roles whose "
        "paid model has no price; what they saved is unknown and not in the helper savings."
    )
