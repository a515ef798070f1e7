"""The PostgreSQL settlement as a server-side function (billing.settle_postgres).

One call closes a pending ledger row and moves its task's totals, its rollup and its
budget counters. As a PL/pgSQL function its statements are planned once per connection
(Django keeps prepared statements off so that connection poolers keep working), and the
call is one short statement whatever the number of columns. Nothing on SQLite.

The column lists are fixed here; tests/billing/test_settle_postgres.py checks that they
still name every column billing.ledger writes and every rollup measure.
"""

from django.db import migrations

SETTLED_COLUMNS = (
    "status", "basis", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "is_batch", "reasoning_tokens", "images",
    "web_searches", "cost", "reported_cost", "error", "http_status", "provider_request_id",
    "latency_ms", "settled_at", "price_prompt", "price_completion", "price_input_cache_read",
    "price_input_cache_write", "price_input_cache_write_1h", "price_internal_reasoning",
    "price_request", "price_image", "price_web_search", "price_batch_discount",
)  # fmt: skip
ROLLUP_MEASURES = (
    "calls", "failed_calls", "estimated_calls", "unpriced_calls", "input_tokens",
    "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cost",
    "reported_cost", "cache_savings",
)  # fmt: skip

def create_sql(measures: tuple[str, ...]) -> str:
    """The function's SQL for these rollup measures (migration 0007 reuses it)."""
    return f"""
CREATE OR REPLACE FUNCTION billing_usage_settle(
    p_usage_id bigint,
    p_fields jsonb,
    p_task_id bigint,
    p_input_tokens bigint,
    p_output_tokens bigint,
    p_cost numeric,
    p_spent numeric,
    p_reserved numeric,
    p_period_ids bigint[],
    p_day date,
    p_role_id bigint,
    p_model_id bigint,
    p_provider text,
    p_person_id bigint,
    p_delta jsonb
) RETURNS TABLE (out_period_id bigint, out_spent numeric, out_limit numeric,
                 out_thresholds jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_calls bigint;
BEGIN
    -- Guarded: a row closed before changes nothing anywhere (no rows returned).
    UPDATE billing_usage AS u
    SET ({", ".join(SETTLED_COLUMNS)}) = (
        SELECT {", ".join(f"r.{c}" for c in SETTLED_COLUMNS)}
        FROM jsonb_populate_record(NULL::billing_usage, p_fields) AS r
    )
    WHERE u.id = p_usage_id AND u.status = 'pending';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- This transaction alone commits without waiting for the WAL flush (see
    -- docs/architecture.md): the pending row was written durably before the call.
    PERFORM set_config('synchronous_commit', 'off', true);

    UPDATE office_task
    SET input_tokens = input_tokens + p_input_tokens,
        output_tokens = output_tokens + p_output_tokens,
        provider_calls = provider_calls + 1,
        cost = cost + p_cost
    WHERE id = p_task_id
    RETURNING provider_calls INTO v_calls;

    -- A task is counted in the rollup of its first call to close.
    INSERT INTO billing_usagerollup
        (day, role_id, model_id, provider, person_id, tasks, {", ".join(measures)})
    SELECT p_day, p_role_id, p_model_id, p_provider, p_person_id,
        CASE WHEN v_calls = 1 THEN 1 ELSE 0 END, {", ".join(f"d.{c}" for c in measures)}
    FROM jsonb_populate_record(NULL::billing_usagerollup, p_delta) AS d
    ON CONFLICT (day, role_id, model_id, provider, COALESCE(person_id, 0))
    DO UPDATE SET tasks = billing_usagerollup.tasks + EXCLUDED.tasks,
        {", ".join(f"{c} = billing_usagerollup.{c} + EXCLUDED.{c}" for c in measures)};

    -- The first row marks the call closed; the budget periods' new totals follow.
    out_period_id := NULL;
    RETURN NEXT;
    -- The counters every settlement of the office shares come last, locked in id order
    -- (as reservations lock them) so that two transactions never wait in a cycle.
    PERFORM 1 FROM billing_budgetperiod WHERE id = ANY(p_period_ids) ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH periods AS (
        UPDATE billing_budgetperiod
        SET reserved = GREATEST(0, reserved - p_reserved),
            spent = spent + p_spent,
            updated_at = now()
        WHERE id = ANY(p_period_ids)
        RETURNING id, budget_id, spent
    )
    SELECT periods.id, periods.spent, budget."limit", budget.thresholds
    FROM periods JOIN billing_budget AS budget ON budget.id = periods.budget_id;
END
$$;
"""


CREATE = create_sql(ROLLUP_MEASURES)
DROP = "DROP FUNCTION IF EXISTS billing_usage_settle"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_task_counts_and_cost_index"),
        ("office", "0002_task_counts_and_cost_index"),
    ]

    operations = [migrations.RunPython(create, drop)]
