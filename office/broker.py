"""The embedded broker: Kombu's SQLAlchemy transport on a SQLite file, made fit for
several processes (web, worker, beat) writing to it at once.

Two things differ from the stock transport:
- connections use WAL and a busy timeout, so a writer waits for the lock instead of
  failing with "database is locked";
- Celery's transport options (polling interval, visibility timeout) are not forwarded to
  SQLAlchemy's `create_engine`, which rejects them (the stock transport forwards all).

It is registered as the `sqlite` transport, so the broker URL reads
`sqlite:///path/to/broker.sqlite3`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import create_engine, event

BUSY_TIMEOUT_SECONDS = 30


class Channel(kombu_sqlalchemy.Channel):
    def _engine_from_config(self) -> Any:
        engine = create_engine(
            self.connection.client.hostname,
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS},
        )

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine


class Transport(kombu_sqlalchemy.Transport):
    Channel = Channel


TRANSPORT_ALIASES["sqlite"] = "office.broker:Transport"
