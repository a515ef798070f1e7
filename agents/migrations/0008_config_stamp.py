"""The config stamp (agents.models.ConfigStamp) and the triggers that change it whenever a
table a call is planned from changes, so that agents.runtime can keep those rows in
memory for as long as the stamp is unchanged.

PostgreSQL: one statement-level trigger per table (INSERT, UPDATE, DELETE, TRUNCATE),
drawing the new stamp from a sequence, which never hands a value out twice, even to a
transaction that rolls back. The stamp row is written in the changing transaction, so a
reader sees the new stamp only once the change it stands for is visible too. SQLite: one
trigger per table and kind of change, a random 64-bit stamp; an UPDATE, not an upsert,
because an outer statement's conflict clause (Django's INSERT OR IGNORE for
many-to-many adds) overrides a trigger's own.
"""

from django.db import migrations, models

TABLES = (
    "office_role",
    "agents_rolebinding",
    "agents_routecandidate",
    "agents_credential",
    "billing_catalogmodel",
    "billing_modelprice",
    "office_apitoken_roles",  # which roles an API token may use
)

PG_CREATE = [
    "CREATE SEQUENCE agents_configstamp_seq",
    """
    CREATE FUNCTION agents_configstamp_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO agents_configstamp (id, stamp) VALUES (1, nextval('agents_configstamp_seq'))
        ON CONFLICT (id) DO UPDATE SET stamp = EXCLUDED.stamp;
        RETURN NULL;
    END
    $$
    """,
    *(
        f"CREATE TRIGGER agents_configstamp_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION agents_configstamp_bump()"
        for table in TABLES
    ),
    "INSERT INTO agents_configstamp (id, stamp) VALUES (1, nextval('agents_configstamp_seq'))",
]
PG_DROP = [
    *(f"DROP TRIGGER IF EXISTS agents_configstamp_bump ON {table}" for table in TABLES),
    "DROP FUNCTION IF EXISTS agents_configstamp_bump()",
    "DROP SEQUENCE IF EXISTS agents_configstamp_seq",
]
SQLITE_CREATE = [
    *(
        f"CREATE TRIGGER agents_configstamp_{table}_{op.lower()} AFTER {op} ON {table} BEGIN "
        "UPDATE agents_configstamp SET stamp = random() WHERE id = 1; "
        "INSERT INTO agents_configstamp (id, stamp) SELECT 1, random() "
        "WHERE NOT EXISTS (SELECT 1 FROM agents_configstamp WHERE id = 1); END"
        for table in TABLES
        for op in ("INSERT", "UPDATE", "DELETE")
    ),
    "INSERT INTO agents_configstamp (id, stamp) VALUES (1, random())",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS agents_configstamp_{table}_{op.lower()}"
    for table in TABLES
    for op in ("INSERT", "UPDATE", "DELETE")
]


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": PG_CREATE, "sqlite": SQLITE_CREATE}.get(vendor, []):
        schema_editor.execute(statement)


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": PG_DROP, "sqlite": SQLITE_DROP}.get(vendor, []):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_routecandidate_timeout_seconds"),
        ("billing", "0012_drop_single_row_settle_function"),
        ("office", "0007_people_groups"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConfigStamp",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("stamp", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="configstamp_one_row")
                ],
            },
        ),
        migrations.RunPython(create, drop),
    ]
