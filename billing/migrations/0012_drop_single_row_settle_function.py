"""Drop `billing_usage_settle`: nothing calls it any more.

Since migration 0010 a settlement inside a caller's transaction is a batch of one of
`billing_usage_settle_many` (billing.settle_postgres), so one SQL function holds the rule.
Reversing recreates the function as 0007 left it. Nothing on SQLite.
"""

import importlib

from django.db import migrations

_0005 = importlib.import_module("billing.migrations.0005_settle_function")
_0007 = importlib.import_module("billing.migrations.0007_settle_function_helper_measures")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0005.DROP)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0005.create_sql(_0007.ROLLUP_MEASURES))


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_budget_reserve_function")]

    operations = [migrations.RunPython(drop, restore)]
