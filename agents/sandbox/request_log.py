"""The sandbox's record of every request it answered: in memory, optionally as JSONL.

It is what tests and benchmarks reconcile Roster's ledger against, so it records what a
real provider would bill: the normalised token counts and the exact cost.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from agents.sandbox.wire.exact_json import decimal_literal

# Enough for any test or benchmark run; older entries drop off so a sandbox left
# running for days does not grow without bound. The JSONL file keeps everything.
DEFAULT_MEMORY_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    time: str  # ISO 8601, UTC
    call_id: str | None  # the X-Roster-Call-Id header
    wire: str
    path: str  # without the query string, which may hold a Gemini key
    model: str
    status: int
    fault: str | None
    stream: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: str | None  # exact decimal string; None for unpriced models and failures
    latency: float  # seconds the server waited before answering

    def as_dict(self) -> dict[str, Any]:
        """Return the entry as the JSON object the log endpoint and file show."""
        return {name: getattr(self, name) for name in LOG_FIELDS}


LOG_FIELDS = tuple(f.name for f in fields(LogEntry))


class RequestLog:
    """Numbered entries in memory (the newest `memory_limit`), and a JSONL file if given.

    Sequence numbers keep counting across `clear()`, so a reader polling with
    `since=SEQ` never mistakes new entries for old ones.
    """

    def __init__(self, *, path: Path | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT):
        self._entries: deque[LogEntry] = deque(maxlen=memory_limit)
        self._last_seq = 0
        self._file: IO[str] | None = None
        if path is not None:
            self._file = path.open("a", encoding="utf-8")

    def record(
        self,
        *,
        call_id: str | None,
        wire: str,
        path: str,
        model: str,
        status: int,
        fault: str | None,
        stream: bool,
        latency: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        cost: Decimal | None = None,
    ) -> LogEntry:
        """Append one entry (and write its line, flushed); return it."""
        self._last_seq += 1
        entry = LogEntry(
            seq=self._last_seq,
            time=datetime.now(UTC).isoformat(),
            call_id=call_id,
            wire=wire,
            path=path,
            model=model,
            status=status,
            fault=fault,
            stream=stream,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
            cost=None if cost is None else decimal_literal(cost),
            latency=latency,
        )
        self._entries.append(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry.as_dict(), ensure_ascii=False) + "\n")
            # One flush per line: a reader tailing the file sees each request as it ends.
            self._file.flush()
        return entry

    def entries(self, *, call_id: str | None = None, since: int = 0) -> list[LogEntry]:
        """Return the entries in memory with seq > since, only call_id's if given."""
        return [
            entry
            for entry in self._entries
            if entry.seq > since and (call_id is None or entry.call_id == call_id)
        ]

    def clear(self) -> None:
        """Forget the entries in memory (the file keeps its lines)."""
        self._entries.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
