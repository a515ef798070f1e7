"""Settle many ledger rows in one transaction (billing.settle_postgres).

A threads-pool worker settles many calls at once. `billing_usage_settle_many` closes a
batch of them with one call: each row, its task and its rollup through
`billing_usage_settle` (migrations 0005 and 0007, called without budget counters), then each
budget counter once with the batch's sums. One statement and one commit stand for many
settlements, and the counters every settlement of the office shares are locked once per
batch. Rows are closed in rollup-key order and counters locked in id order afterwards,
as every other transaction takes them (rollups, then counters), so batches, single
settlements and reservations never wait for each other in a cycle. Nothing on SQLite.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION billing_usage_settle_many(p_items jsonb)
RETURNS TABLE (out_usage_id bigint, out_period_id bigint, out_spent numeric,
               out_limit numeric, out_thresholds jsonb, out_spent_before numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    item record;
    closed integer;
    moves jsonb := '[]'::jsonb;
BEGIN
    FOR item IN
        SELECT * FROM jsonb_to_recordset(p_items) AS x(
            usage_id bigint, fields jsonb, task_id bigint, input_tokens bigint,
            output_tokens bigint, cost numeric, spent numeric, reserved numeric,
            period_ids bigint[], day date, role_id bigint, model_id bigint, provider text,
            person_id bigint, delta jsonb)
        ORDER BY day, role_id, model_id, provider, COALESCE(person_id, 0), usage_id
    LOOP
        SELECT count(*) INTO closed FROM billing_usage_settle(
            item.usage_id, item.fields, item.task_id, item.input_tokens, item.output_tokens,
            item.cost, item.spent, item.reserved, '{}'::bigint[], item.day, item.role_id,
            item.model_id, item.provider, item.person_id, item.delta);
        IF closed > 0 THEN
            out_usage_id := item.usage_id;
            out_period_id := NULL;
            RETURN NEXT;
            moves := moves || (
                SELECT COALESCE(jsonb_agg(jsonb_build_object(
                    'id', pid, 'reserved', item.reserved, 'spent', item.spent)), '[]'::jsonb)
                FROM unnest(item.period_ids) AS pid);
        END IF;
    END LOOP;

    PERFORM 1 FROM billing_budgetperiod
    WHERE id IN (SELECT (m->>'id')::bigint FROM jsonb_array_elements(moves) AS m)
    ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH sums AS (
        SELECT (m->>'id')::bigint AS id, sum((m->>'reserved')::numeric) AS reserved,
            sum((m->>'spent')::numeric) AS spent
        FROM jsonb_array_elements(moves) AS m
        GROUP BY 1
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
DROP = "DROP FUNCTION IF EXISTS billing_usage_settle_many"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_settle_function_helper_measures")]

    operations = [migrations.RunPython(create, drop)]
