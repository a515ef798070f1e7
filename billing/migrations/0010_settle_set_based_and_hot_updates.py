"""Settle a batch set-based, and let settlement update ledger rows in place.

Two costs dominated a settlement on PostgreSQL (docs/benchmarks.md):

- Every settled row was a non-HOT update: `status` was indexed (twice, with a
  `varchar_pattern_ops` twin), so changing it wrote a new entry into every one of the
  ledger's indexes. Nothing reads the ledger by status alone (open calls are found by task
  or by id; reports read the rollups), so the index goes, with the `call_id` pattern
  twin nothing uses (lookups are by equality). With no indexed column changed and half of
  each page left free (fillfactor 50: a row is written twice, pending then settled),
  settlement is a heap-only update that touches no index.
- `billing_usage_settle_many` (0008) called `billing_usage_settle` once per row, so a
  batch of 64 paid 64 function calls, 64 rollup upserts and 64 record conversions. It now
  closes the batch in four set-based statements, in the order every other settlement
  takes its locks: the ledger rows, their tasks' totals (one update per task), the
  rollups (one upsert per key, in key order), then the budget counters (once each, in id
  order).

A task is counted in the rollup of its first call to close, in closing order
(`settled_at`, then id), as the rebuild counts it (billing.rollups._ledger_with_first).
Nothing on SQLite.
"""

import importlib

from django.db import migrations, models

_0005 = importlib.import_module("billing.migrations.0005_settle_function")
_0007 = importlib.import_module("billing.migrations.0007_settle_function_helper_measures")
_0008 = importlib.import_module("billing.migrations.0008_settle_in_batches")
SETTLED_COLUMNS = _0005.SETTLED_COLUMNS
ROLLUP_MEASURES = _0007.ROLLUP_MEASURES

# The batch's items, as billing.settle_postgres._item_json writes them.
_ITEMS = """jsonb_to_recordset(p_items) AS i(
            usage_id bigint, fields jsonb, task_id bigint, input_tokens bigint,
            output_tokens bigint, cost numeric, spent numeric, reserved numeric,
            period_ids bigint[], day date, role_id bigint, model_id bigint, provider text,
            person_id bigint, delta jsonb)"""


def create_sql(measures: tuple[str, ...]) -> str:
    return f"""
CREATE OR REPLACE FUNCTION billing_usage_settle_many(p_items jsonb)
RETURNS TABLE (out_usage_id bigint, out_period_id bigint, out_spent numeric,
               out_limit numeric, out_thresholds jsonb, out_spent_before numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_closed bigint[];
    v_first_tasks bigint[];
BEGIN
    -- Guarded: a row closed before changes nothing anywhere.
    WITH closed AS (
        UPDATE billing_usage AS u
        SET ({", ".join(SETTLED_COLUMNS)}) = (
            SELECT {", ".join(f"r.{c}" for c in SETTLED_COLUMNS)}
            FROM jsonb_populate_record(NULL::billing_usage, i.fields) AS r
        )
        FROM {_ITEMS}
        WHERE u.id = i.usage_id AND u.status = 'pending'
        RETURNING u.id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{{}}') INTO v_closed FROM closed;
    IF cardinality(v_closed) = 0 THEN
        RETURN;
    END IF;
    -- The pending rows were written durably before the calls (docs/architecture.md).
    PERFORM set_config('synchronous_commit', 'off', true);

    WITH sums AS (
        SELECT i.task_id, sum(i.input_tokens) AS input_tokens,
            sum(i.output_tokens) AS output_tokens, sum(i.cost) AS cost, count(*) AS calls
        FROM {_ITEMS}
        WHERE i.usage_id = ANY(v_closed)
        GROUP BY i.task_id
    ), moved AS (
        UPDATE office_task AS t
        SET input_tokens = t.input_tokens + sums.input_tokens,
            output_tokens = t.output_tokens + sums.output_tokens,
            provider_calls = t.provider_calls + sums.calls,
            cost = t.cost + sums.cost
        FROM sums
        WHERE t.id = sums.task_id
        RETURNING t.id, t.provider_calls - sums.calls AS calls_before
    )
    SELECT coalesce(array_agg(id), '{{}}') INTO v_first_tasks FROM moved
    WHERE calls_before = 0;

    INSERT INTO billing_usagerollup
        (day, role_id, model_id, provider, person_id, tasks, {", ".join(measures)})
    SELECT c.day, c.role_id, c.model_id, c.provider, c.person_id,
        count(*) FILTER (WHERE c.first_of_task),
        {", ".join(f"sum(d.{m})" for m in measures)}
    FROM (
        SELECT i.*, i.task_id = ANY(v_first_tasks) AND row_number() OVER (
            PARTITION BY i.task_id
            ORDER BY (i.fields->>'settled_at')::timestamptz, i.usage_id
        ) = 1 AS first_of_task
        FROM {_ITEMS}
        WHERE i.usage_id = ANY(v_closed)
    ) AS c, jsonb_populate_record(NULL::billing_usagerollup, c.delta) AS d
    GROUP BY c.day, c.role_id, c.model_id, c.provider, c.person_id
    ORDER BY c.day, c.role_id, c.model_id, c.provider, COALESCE(c.person_id, 0)
    ON CONFLICT (day, role_id, model_id, provider, COALESCE(person_id, 0))
    DO UPDATE SET tasks = billing_usagerollup.tasks + EXCLUDED.tasks,
        {", ".join(f"{m} = billing_usagerollup.{m} + EXCLUDED.{m}" for m in measures)};

    RETURN QUERY SELECT unnest(v_closed), NULL::bigint, NULL::numeric, NULL::numeric,
        NULL::jsonb, NULL::numeric;

    -- The counters every settlement of the office shares come last, locked in id order
    -- (as reservations lock them) so that two transactions never wait in a cycle.
    PERFORM 1 FROM billing_budgetperiod
    WHERE id IN (
        SELECT unnest(i.period_ids) FROM {_ITEMS} WHERE i.usage_id = ANY(v_closed)
    )
    ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH sums AS (
        SELECT pid AS id, sum(i.reserved) AS reserved, sum(i.spent) AS spent
        FROM {_ITEMS}, unnest(i.period_ids) AS pid
        WHERE i.usage_id = ANY(v_closed)
        GROUP BY pid
    ), periods AS (
        UPDATE billing_budgetperiod AS period
        SET reserved = GREATEST(0, period.reserved - sums.reserved),
            spent = period.spent + sums.spent,
            updated_at = now()
        FROM sums
        WHERE period.id = sums.id
        RETURNING period.id, period.budget_id, period.spent, sums.spent AS moved
    )
    SELECT NULL::bigint, periods.id, periods.spent, budget."limit", budget.thresholds,
        periods.spent - periods.moved
    FROM periods JOIN billing_budget AS budget ON budget.id = periods.budget_id;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(create_sql(ROLLUP_MEASURES))
    # Django names the pattern twin of a unique varchar after a hash; find it by shape.
    schema_editor.execute(
        """
        DO $$
        DECLARE name text;
        BEGIN
            FOR name IN SELECT indexname FROM pg_indexes
                WHERE tablename = 'billing_usage'
                  AND indexdef LIKE '%(call_id varchar_pattern_ops)%'
            LOOP
                EXECUTE format('DROP INDEX %I', name);
            END LOOP;
        END $$;
        """,
        params=None,  # no placeholders: the % and %I above are SQL's own
    )
    schema_editor.execute("ALTER TABLE billing_usage SET (fillfactor = 50)")


def restore_previous(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(_0008.CREATE)
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS billing_usage_call_id_like "
        "ON billing_usage (call_id varchar_pattern_ops)"
    )
    schema_editor.execute("ALTER TABLE billing_usage RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_usagerollup_helper_rows_index")]

    operations = [
        migrations.AlterField(
            model_name="usage",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("settled", "Settled"),
                    ("failed", "Failed"),
                    ("estimated", "Estimated"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.RunPython(create, restore_previous),
    ]
