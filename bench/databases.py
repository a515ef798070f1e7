"""A fresh PostgreSQL database for a benchmark, and bulk loads into it.

Migrating Roster's schema takes 10-20 s on this machine, and `make bench` needs about
eight fresh databases. bench/run_all.py therefore migrates one template database first
and names it in ROSTER_BENCH_TEMPLATE; a benchmark then copies it (CREATE DATABASE ...
TEMPLATE, under a second). Run alone, without that variable, a benchmark migrates its own
database as before.

Bulk loads (the report's ten million ledger rows, the settlement benchmark's million of
history) drop the table's secondary indexes first and build them afterwards
(secondary_indexes_deferred).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

TEMPLATE_VARIABLE = "ROSTER_BENCH_TEMPLATE"


def admin_connect():  # type: ignore[no-untyped-def]
    """An autocommit connection to the server's `postgres` database, with the
    credentials of Django's default database."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise SystemExit("this benchmark runs on PostgreSQL: set DATABASE_URL=postgres://...")
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


def database_recreate() -> str:
    """Drop and create the database of Django's default connection, then give it the
    schema: a copy of ROSTER_BENCH_TEMPLATE when set, else `migrate`. Returns its name.

    Raises SystemExit when the default database is not PostgreSQL.
    """
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    name = settings.DATABASES["default"]["NAME"]
    template = os.environ.get(TEMPLATE_VARIABLE, "")
    connections.close_all()
    with admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not template:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            # Two benchmarks copying the template at the same moment can see each
            # other's copy as "another user" of it: wait and try again.
            for attempt in range(20):
                try:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except Exception as exc:  # psycopg.errors.ObjectInUse
                    if "being accessed by other users" not in str(exc) or attempt == 19:
                        raise
                    time.sleep(0.5)
    if not template:
        call_command("migrate", verbosity=0)
    return name


@contextmanager
def secondary_indexes_deferred(table: str) -> Iterator[None]:
    """Drop `table`'s indexes and unique constraints but its primary key, and build them
    again on the way out.

    Ten million inserts into each of nine indexes cost several times the inserts
    themselves; one sorted build per index afterwards (on parallel workers) costs a
    fraction of that, and leaves the same schema.
    """
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            [table],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname "
            "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
            for _, definition in indexes:
                cursor.execute(definition)
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
