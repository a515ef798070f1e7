"""A child process for the cross-process rate limit tests: it sets up Django on its own
(against the test database), waits for its siblings, then asks for rate slots as fast as
it can for a while and reports what it got.

Started with multiprocessing's spawn method, so it imports nothing from Django at module
level: the child configures its environment first.
"""

from __future__ import annotations

import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any


def hammer(
    *,
    environ: dict[str, str],
    credential_id: int,
    tokens: int,
    seconds: float,
    barrier: Barrier,
    results: Queue[dict[str, Any]],
) -> None:
    os.environ.update(environ)
    import django

    django.setup()
    from django.db import connection

    from agents.models import Credential
    from agents.ratelimit import rate_slot_acquire

    try:
        credential = Credential.objects.get(pk=credential_id)
        barrier.wait(timeout=120)
        granted = 0
        waits: list[float] = []
        reasons: set[str] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            decision = rate_slot_acquire(credential=credential, tokens=tokens)
            if decision.granted:
                granted += 1
            else:
                waits.append(decision.wait_seconds)
                reasons.add(decision.reason)
        results.put({"pid": os.getpid(), "granted": granted, "waits": waits, "reasons": reasons})
    except BaseException as exc:
        barrier.abort()
        results.put({"pid": os.getpid(), "error": repr(exc)})
        raise
    finally:
        connection.close()
