"""Failpoints: named places in a task's life where the fault-injection suite
(tests/faults) makes the worker process die at once, as a crash or an OOM kill would.

`ROSTER_FAILPOINTS` (settings) maps a point's name to the probability that a worker
reaching it SIGKILLs itself there: no `finally`, no cleanup, every thread of the process
gone with it. Empty in production, where `failpoint()` is one lookup in an empty dict.

The points, in a task's order:
- `task_claimed`: the task is claimed (running, held by this worker), nothing called;
- `call_opened`: a call's pending ledger row is committed, the request not yet sent;
- `call_answered`: the provider answered and billed, the call not yet settled;
- `call_settled`: the call is settled, the task's outcome not yet recorded.
"""

from __future__ import annotations

import logging
import os
import random
import signal

from django.conf import settings

logger = logging.getLogger(__name__)

POINTS = ("task_claimed", "call_opened", "call_answered", "call_settled")


def failpoint(name: str) -> None:
    """Die here (SIGKILL) with the probability ROSTER_FAILPOINTS gives `name`."""
    chance = settings.ROSTER_FAILPOINTS.get(name)
    if chance and random.random() < chance:
        # Written before dying, so the suite can count where its faults landed.
        logger.warning("failpoint %s: killing worker process %s", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def failpoints_parse(text: str) -> dict[str, float]:
    """Parse `name=probability,name=probability`. Raises ValueError naming what is wrong."""
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        try:
            chance = float(value)
        except ValueError:
            raise ValueError(f"failpoint {name}: {value!r} is not a probability") from None
        if not 0 <= chance <= 1:
            raise ValueError(f"failpoint {name}: {value} is not between 0 and 1")
        points[name] = chance
    return points
