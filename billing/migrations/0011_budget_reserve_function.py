"""Reserve against a role's budgets in one statement on PostgreSQL (billing.budgets).

A reservation found the budgets that apply, looked up each one's counter for the current
period, locked the counters in id order, checked the hard limits and raised `reserved`:
about eight round trips between the worker and the database before every paid call, each
paying the client's and the network's latency. `billing_budget_reserve` does the same in
one statement, taking the same locks in the same order, in the caller's transaction (the
one that writes the pending ledger row). A budget whose counter for the period does not
exist yet comes back without a counter, and nothing is changed: the caller creates the
counter (once per budget and period) and reserves the portable way. Nothing on SQLite.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION billing_budget_reserve(
    p_role_id bigint, p_day date, p_week date, p_month date, p_amount numeric
) RETURNS TABLE (out_budget_id bigint, out_period_id bigint, out_spent numeric,
                 out_reserved numeric, out_refused boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_missing bigint[];
    v_refused bigint;
BEGIN
    -- The counters of the active budgets that apply (the office's and the role's) for the
    -- periods containing the day; p_amount NULL is an unpriced call (no hard budget takes it).
    SELECT array_agg(p.id ORDER BY p.id) FILTER (WHERE p.id IS NOT NULL),
           array_agg(b.id ORDER BY b.id) FILTER (WHERE p.id IS NULL)
    INTO v_ids, v_missing
    FROM billing_budget AS b
    LEFT JOIN billing_budgetperiod AS p ON p.budget_id = b.id AND p.start = CASE b.period
        WHEN 'day' THEN p_day WHEN 'week' THEN p_week WHEN 'month' THEN p_month END
    WHERE b.is_active AND (b.scope = 'office' OR (b.scope = 'role' AND b.role_id = p_role_id));
    IF v_missing IS NOT NULL THEN
        RETURN QUERY SELECT unnest(v_missing), NULL::bigint, NULL::numeric, NULL::numeric, false;
        RETURN;
    END IF;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM billing_budgetperiod WHERE id = ANY(v_ids) ORDER BY id FOR UPDATE;
    -- The first hard budget, in counter id order, that this call could take past its limit.
    SELECT p.id INTO v_refused
    FROM billing_budgetperiod AS p JOIN billing_budget AS b ON b.id = p.budget_id
    WHERE p.id = ANY(v_ids) AND b.action <> 'alert_only'
      AND (p_amount IS NULL OR p.spent + p.reserved + p_amount > b."limit")
    ORDER BY p.id
    LIMIT 1;
    IF v_refused IS NOT NULL THEN
        RETURN QUERY SELECT p.budget_id, p.id, p.spent, p.reserved, p.id = v_refused
        FROM billing_budgetperiod AS p WHERE p.id = ANY(v_ids) ORDER BY p.id;
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE billing_budgetperiod AS p SET reserved = p.reserved + coalesce(p_amount, 0)
    WHERE p.id = ANY(v_ids)
    RETURNING p.budget_id, p.id, p.spent, p.reserved, false;
END
$$;
"""
DROP = "DROP FUNCTION IF EXISTS billing_budget_reserve"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_settle_set_based_and_hot_updates")]

    operations = [migrations.RunPython(create, drop)]
