"""Recreate the PostgreSQL settlement function with the local helper's rollup measures.

Migration 0005 created `billing_usage_settle` with the rollup measures of its day; 0006
added `helper_calls`, `helper_unpriced_calls`, `helper_input_tokens`,
`helper_output_tokens` and `helper_savings` to the rollups. A paid call adds zero to them,
but the function's INSERT must still name them (the columns have no database default).
The SQL is 0005's (`create_sql`), with the measure list passed in; reversing restores
0005's list.

The lists are fixed here (migrations import no app code);
tests/billing/test_settle_postgres.py checks that they match billing.settle_postgres.
"""

import importlib

from django.db import migrations

# 0005's SQL and column lists, so the two cannot drift apart.
_0005 = importlib.import_module("billing.migrations.0005_settle_function")
SETTLED_COLUMNS = _0005.SETTLED_COLUMNS
PREVIOUS_ROLLUP_MEASURES = _0005.ROLLUP_MEASURES
ROLLUP_MEASURES = (
    *PREVIOUS_ROLLUP_MEASURES,
    "helper_calls", "helper_unpriced_calls", "helper_input_tokens", "helper_output_tokens",
    "helper_savings",
)  # fmt: skip
_create_sql = _0005.create_sql


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_create_sql(ROLLUP_MEASURES))


def restore_previous(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_create_sql(PREVIOUS_ROLLUP_MEASURES))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_local_helper_ledger"),
    ]

    operations = [migrations.RunPython(create, restore_previous)]
