"""The database backend of the rate limiter: the sliding log in a row per credential
(agents.models.RateWindow), for the embedded office whose broker is not Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, connection, transaction

from agents.models import Credential, RateWindow
from agents.ratelimit.decision import MICROS, WINDOW_SECONDS, RateDecision, rate_refusal


class DatabaseRateLimiter:
    """Sliding log in a row per credential (RateWindow), read and written under the row
    lock (select_for_update on PostgreSQL; on SQLite the IMMEDIATE transaction's write
    lock) in a short transaction of its own.

    `clock` returns seconds since the epoch; by default PostgreSQL's clock (workers on
    other hosts may disagree), and this host's on SQLite (its processes share the file,
    so they share this host's clock). Tests pass a clock to move the window by hand.
    """

    def __init__(
        self,
        *,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.window_us = round(window_seconds * MICROS)
        self.clock = clock

    def acquire(self, *, credential: Credential, tokens: int) -> RateDecision:
        with transaction.atomic(durable=True):
            entries, now = self._window_locked(credential_id=credential.pk)
            request_wait, token_wait, used = _log_waits(
                entries=entries,
                now_us=now,
                window_us=self.window_us,
                rpm=credential.requests_per_minute or 0,
                tpm=credential.tokens_per_minute or 0,
                tokens=tokens,
            )
            if request_wait or token_wait:
                # Nothing written: the aged-out entries are dropped by the next grant.
                return rate_refusal(
                    credential=credential,
                    request_wait_us=request_wait,
                    token_wait_us=token_wait,
                    used_tokens=used,
                    tokens=tokens,
                )
            grant_id = secrets.token_hex(8)
            entries.append([now, tokens, grant_id])
            RateWindow.objects.filter(pk=credential.pk).update(entries=entries)
        return RateDecision(granted=True, wait_seconds=0.0, reason="", grant_id=grant_id)

    def adjust(
        self, *, credential: Credential, grant_id: str, granted_tokens: int, actual_tokens: int
    ) -> None:
        with transaction.atomic(durable=True):
            entries, _ = self._window_locked(credential_id=credential.pk)
            for entry in entries:
                if entry[2] == grant_id and entry[1] == granted_tokens:
                    entry[1] = actual_tokens
                    RateWindow.objects.filter(pk=credential.pk).update(entries=entries)
                    return

    def _window_locked(self, *, credential_id: int) -> tuple[list[list[Any]], int]:
        """Lock the credential's row (created on first use) and return its entries still
        in the window and the time now, in microseconds. The time is read after the lock
        is held, so decisions are ordered as their times are."""
        row = RateWindow.objects.select_for_update().filter(pk=credential_id).first()
        if row is None:
            try:
                with transaction.atomic():
                    RateWindow.objects.create(credential_id=credential_id)
            except IntegrityError:
                pass  # another worker created it first; its lock is ours once it commits
            row = RateWindow.objects.select_for_update().get(pk=credential_id)
        now = self._now_us()
        if row.entries:
            # A clock stepped back must not reorder the log.
            now = max(now, row.entries[-1][0])
        cutoff = now - self.window_us
        return [entry for entry in row.entries if entry[0] > cutoff], now

    def _now_us(self) -> int:
        if self.clock is not None:
            return round(self.clock() * MICROS)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
                return int(cursor.fetchone()[0])
        return round(time.time() * MICROS)


def _log_waits(
    *, entries: list[list[Any]], now_us: int, window_us: int, rpm: int, tpm: int, tokens: int
) -> tuple[int, int, int]:
    """The database twin of the Lua decision, over a log already cut to the window.

    Returns (µs until a request slot frees, µs until enough tokens free, tokens in the
    window); both waits are 0 when the call fits, and positive otherwise.
    """
    used = sum(entry[1] for entry in entries)
    request_wait = 0
    if rpm and len(entries) >= rpm:
        # The (count - rpm + 1)th oldest grant must age out before one more request fits.
        request_wait = entries[len(entries) - rpm][0] + window_us - now_us
    token_wait = 0
    if tpm and used + tokens > tpm:
        excess = used + tokens - tpm
        token_wait = window_us
        for granted_at, counted, _ in entries:
            excess -= counted
            if excess <= 0:
                token_wait = granted_at + window_us - now_us
                break
    return request_wait, token_wait, used
