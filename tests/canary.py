"""Canary secrets, and the scans that look for them where a secret must never be.

Every secret a test gives to a credential, an endpoint or a setting comes from this
module. After each test that used the database, and at the end of the run, the suite
looks for these strings in database text columns, log output (ours and that of every
process the tests started) and the Redis the office uses; a hit fails the run
(tests/conftest.py wires the scans in).

Each canary has the shape of a real key of its kind, so the office's redaction
(agents/redaction.py) treats it as it would treat a real one, and each contains MARKER,
so a single cheap substring test finds every candidate before the exact comparison.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from django.apps import apps

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

MARKER = "canary"

OPENROUTER_KEY = "sk-or-v1-canary-5f1c0ffee5e1f00d"
OPENAI_KEY = "sk-proj-canary-Abc123Def456Ghi789Jkl"
ANTHROPIC_KEY = "sk-ant-api03-canary-7b2d9e41c0a8f3"
GEMINI_KEY = "AIzaSy-canary-0d3f8a6b5c4e2f1a9b7c"
# The sandbox provider accepts any key that starts with "sandbox" (agents/sandbox/server.py
# ACCEPTED_KEY_PREFIX); this one is for calls that must succeed.
SANDBOX_KEY = "sandbox-canary-3e9a1c7d5b2f"
# A self-hosted endpoint's key may have no known shape: only the explicit redaction of
# the credential's own secret masks it (agents.redaction.redact(text, secret)).
PLAIN_KEY = "office-canary-7Hq2Zx9Lm4Pw8Rt3"

CANARIES: tuple[str, ...] = (
    OPENROUTER_KEY,
    OPENAI_KEY,
    ANTHROPIC_KEY,
    GEMINI_KEY,
    SANDBOX_KEY,
    PLAIN_KEY,
)


@dataclass(frozen=True)
class CanaryHit:
    """One canary found where it must not be."""

    canary: str
    where: str  # e.g. "table office_task, column error, row pk 3"
    excerpt: str = ""

    def describe(self) -> str:
        text = f"{self.canary} in {self.where}"
        return f"{text}: {self.excerpt}" if self.excerpt else text


def canaries_in(text: str) -> list[str]:
    """The canaries that occur in text (plainly), in CANARIES order."""
    if MARKER not in text:
        return []
    return [canary for canary in CANARIES if canary in text]


def excerpt_around(text: str, needle: str, width: int = 60) -> str:
    """A single line of text around needle's first occurrence, for a report."""
    at = text.find(needle)
    start, end = max(at - width, 0), at + len(needle) + width
    return " ".join(text[start:end].split())


def _base64_cores(secret: bytes) -> list[bytes]:
    """What any base64 encoding of bytes that contain secret must contain, whatever the
    secret's offset: for each of the three alignments, the characters that depend on the
    secret's bytes alone (in the standard and the URL-safe alphabet)."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        # Drop the group shared with the bytes before, and the last one (shared with the
        # bytes after, or padding).
        core = encoded[4 if offset else 0 : -4]
        cores += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return cores


# Each canary as it may appear in stored bytes: plain, or base64-encoded (Celery message
# bodies on Redis, for one).
_NEEDLES: tuple[tuple[str, tuple[bytes, ...]], ...] = tuple(
    (canary, (canary.encode(), *_base64_cores(canary.encode()))) for canary in CANARIES
)


def canaries_in_bytes(data: bytes) -> list[tuple[str, str]]:
    """(canary, how it was written: "plain" or "base64") for each canary in data."""
    found = []
    for canary, (plain, *encoded) in _NEEDLES:
        if plain in data:
            found.append((canary, "plain"))
        elif any(core in data for core in encoded):
            found.append((canary, "base64"))
    return found


# --- log output ---------------------------------------------------------------------------


class CanaryLogHandler(logging.Handler):
    """Looks for canaries in every record logged in this process, as the office's own
    handlers would write it: through their filters (the secret redaction among them), with
    the exception text. Keeps the hits, not the records."""

    def __init__(self, *, filters: Iterable[logging.Filter] = ()) -> None:
        super().__init__(level=logging.DEBUG)
        for log_filter in filters:
            self.addFilter(log_filter)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.records = 0
        self.hits: list[CanaryHit] = []
        self.current_test = ""  # the test running, named in a hit
        self.seconds = 0.0  # spent formatting and scanning records

    def handle(self, record: logging.LogRecord) -> bool:
        started = time.perf_counter()
        try:
            return bool(super().handle(record))
        finally:
            self.seconds += time.perf_counter() - started

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted: logging reports it itself
            text = f"{record.msg!r} {record.args!r}"
        for canary in canaries_in(text):
            where = f"log record of {record.name!r}"
            if self.current_test:
                where += f" during {self.current_test}"
            self.hits.append(CanaryHit(canary, where, excerpt_around(text, canary)))


# --- files --------------------------------------------------------------------------------


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as file:
        return b"\0" in file.read(8192)


def files_under(folder: Path, *, text_only: bool = False) -> Iterator[Path]:
    """Every regular file under folder (none if it does not exist), optionally only those
    that look like text."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not (text_only and _looks_binary(path)):
            yield path


def file_scan(path: Path) -> list[CanaryHit]:
    """The canaries in one file, plain or base64-encoded."""
    data = path.read_bytes()
    hits = []
    for canary, form in canaries_in_bytes(data):
        excerpt = excerpt_around(data.decode(errors="replace"), canary) if form == "plain" else ""
        hits.append(CanaryHit(canary, f"file {path} ({form})", excerpt))
    return hits


# --- Redis --------------------------------------------------------------------------------


@dataclass
class RedisScan:
    """What one scan of a Redis database saw."""

    url: str
    keys: int = 0
    hits: list[CanaryHit] = field(default_factory=list)


# How each type's whole value is read, as a pipelined command.
_REDIS_READS = {
    b"string": ("GET",),
    b"hash": ("HGETALL",),
    b"list": ("LRANGE", 0, -1),
    b"set": ("SMEMBERS",),
    b"zset": ("ZRANGE", 0, -1),
    b"stream": ("XRANGE", "-", "+"),
}


def _flatten(value: object) -> Iterator[bytes]:
    """Every bytes string inside a Redis reply (nested lists, dicts, tuples)."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(key)
            yield from _flatten(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _flatten(item)


def redis_scan(url: str, *, batch: int = 500) -> RedisScan:
    """Look for canaries in every key name and value of the Redis database at url.

    Raises redis.RedisError if it cannot be read."""
    import redis

    scan = RedisScan(url=url)
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        names = list(client.scan_iter(count=1000))
        scan.keys = len(names)
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            with client.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.type(name)
                types = pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                readable = [(n, t) for n, t in zip(chunk, types, strict=True) if t in _REDIS_READS]
                for name, kind in readable:
                    command, *args = _REDIS_READS[kind]
                    pipe.execute_command(command, name, *args)
                values = pipe.execute(raise_on_error=False)
            kinds = dict(zip(chunk, types, strict=True))
            contents = {name: [name] for name in chunk}  # a key that expired meanwhile: its name
            for (name, _), value in zip(readable, values, strict=True):
                contents[name] += _flatten(value)
            for name, parts in contents.items():
                for canary, form in canaries_in_bytes(b"\n".join(parts)):
                    kind = kinds[name].decode(errors="replace")
                    where = f"Redis {url} key {name!r} ({kind}, {form})"
                    scan.hits.append(CanaryHit(canary, where))
    finally:
        client.close()
    return scan


# --- the database -------------------------------------------------------------------------


@dataclass(frozen=True)
class TextColumns:
    """A table, its primary key column and its text-like columns (char, text, JSON)."""

    table: str
    pk: str
    columns: tuple[str, ...]


def _is_text(db_type: str | None) -> bool:
    return db_type is not None and any(word in db_type.lower() for word in ("char", "text", "json"))


def text_columns(connection: BaseDatabaseWrapper) -> list[TextColumns]:
    """Every table of every installed app (Django's own included) with text columns."""
    tables: dict[str, TextColumns] = {}
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if not meta.managed or meta.proxy or meta.swapped or meta.db_table in tables:
            continue
        columns = tuple(
            field.column for field in meta.concrete_fields if _is_text(field.db_type(connection))
        )
        if columns:
            tables[meta.db_table] = TextColumns(meta.db_table, meta.pk.column, columns)
    return sorted(tables.values(), key=lambda table: table.table)


@dataclass(frozen=True)
class DatabaseQuery:
    """One query that returns every row with MARKER in any text column of any table."""

    sql: str
    params: tuple[str, ...]
    tables: tuple[TextColumns, ...]


def database_query(connection: BaseDatabaseWrapper) -> DatabaseQuery:
    """The scan as a single UNION ALL (standard SQL, for PostgreSQL and SQLite alike): per
    table, its index, the row's pk and every text column, padded with NULLs to one width."""
    quote = connection.ops.quote_name
    tables = tuple(text_columns(connection))
    width = max(len(table.columns) for table in tables)
    selects, params = [], []
    for index, table in enumerate(tables):
        values = [f"CAST({quote(column)} AS TEXT)" for column in table.columns]
        padding = ["CAST(NULL AS TEXT)"] * (width - len(values))
        matches = " OR ".join(f"{value} LIKE %s" for value in values)
        selects.append(
            f"SELECT {index}, CAST({quote(table.pk)} AS TEXT), {', '.join(values + padding)}"
            f" FROM {quote(table.table)} WHERE {matches}"
        )
        params += [f"%{MARKER}%"] * len(values)
    return DatabaseQuery(" UNION ALL ".join(selects), tuple(params), tables)


def transaction_is_broken(connection: BaseDatabaseWrapper) -> bool:
    """Whether no query can run until a rollback: Django marked the atomic block for
    rollback, or PostgreSQL aborted the transaction after an error."""
    if connection.needs_rollback:
        return True
    raw = connection.connection
    status = getattr(getattr(raw, "info", None), "transaction_status", None)  # psycopg 3
    return status is not None and status.name == "INERROR"


def database_scan(connection: BaseDatabaseWrapper, query: DatabaseQuery) -> list[CanaryHit]:
    """The canaries in the text columns of the database behind connection, one hit per
    table, column, row and canary."""
    with connection.cursor() as cursor:
        cursor.execute(query.sql, query.params)
        rows = cursor.fetchall()
    hits = []
    for index, pk, *values in rows:
        table = query.tables[index]
        for column, value in zip(table.columns, values, strict=False):
            for canary in canaries_in(value or ""):
                where = f"table {table.table}, column {column}, row pk {pk}"
                hits.append(CanaryHit(canary, where, excerpt_around(value, canary)))
    return hits


# --- one test run -------------------------------------------------------------------------


@dataclass
class RunScan:
    """The canary scans of one test run: what each looked at, and every hit."""

    log_handler: CanaryLogHandler
    tests_scanned: int = 0
    tests_unscannable: list[str] = field(default_factory=list)
    log_files: int = 0
    redis_keys: int = 0
    hits: list[CanaryHit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scans that could not run
    database_seconds: float = 0.0
    end_seconds: float = 0.0  # the scans after the last test
    _queries: dict[str, DatabaseQuery] = field(default_factory=dict)

    def scan_database(self, *, test: str, using: str = "default") -> list[CanaryHit]:
        """Scan the database a test used, before its rows are rolled back; the hits."""
        from django.db import connections

        connection = connections[using]
        if transaction_is_broken(connection):
            # The test ended inside a failed transaction (e.g. it expected an
            # IntegrityError): nothing can be read until the rollback that discards it.
            self.tests_unscannable.append(test)
            return []
        started = time.perf_counter()
        if using not in self._queries:
            self._queries[using] = database_query(connection)
        hits = database_scan(connection, self._queries[using])
        self.database_seconds += time.perf_counter() - started
        self.tests_scanned += 1
        self.hits += hits
        return hits

    def scan_files(self, folder: Path, *, text_only: bool = False) -> None:
        for path in files_under(folder, text_only=text_only):
            self.log_files += 1
            self.hits += file_scan(path)

    def scan_redis(self, url: str) -> None:
        import redis

        try:
            result = redis_scan(url)
        except redis.RedisError as exc:
            self.problems.append(f"could not scan Redis {url}: {exc}")
            return
        self.redis_keys += result.keys
        self.hits += result.hits

    def finish(self) -> None:
        """Take in what the log handler saw; call once, after the last test."""
        self.hits += self.log_handler.hits

    @property
    def failed(self) -> bool:
        return bool(self.hits or self.problems)

    def summary(self) -> str:
        unscannable = len(self.tests_unscannable)
        return (
            f"secret canary scan: {self.log_files} log files, "
            f"{self.log_handler.records} log records, {self.redis_keys} Redis keys, "
            f"{self.tests_scanned} tests' databases scanned"
            + (f" ({unscannable} could not be: transaction aborted)" if unscannable else "")
            + f", {len(self.hits)} hits"
            + f" ({self.log_handler.seconds + self.database_seconds + self.end_seconds:.1f} s:"
            f" logging {self.log_handler.seconds:.1f}, databases {self.database_seconds:.1f},"
            f" end {self.end_seconds:.1f})"
        )
