"""Failpoints (agents.failpoints): the fault suite's switch for killing a worker at a
named point. Parsed strictly, so a typo in the suite never silently injects nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.failpoints import POINTS, failpoints_parse


def test_failpoints_parse_names_and_probabilities():
    assert failpoints_parse("") == {}
    assert failpoints_parse(" call_opened=0.5 , call_settled=1") == {
        "call_opened": 0.5,
        "call_settled": 1.0,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("call_sent=0.5", "unknown failpoint 'call_sent'; known: " + ", ".join(POINTS)),
        ("call_opened=often", "failpoint call_opened: 'often' is not a probability"),
        ("call_opened=1.5", "failpoint call_opened: 1.5 is not between 0 and 1"),
    ],
)
def test_failpoints_parse_refuses_what_it_cannot_honour(text, message):
    with pytest.raises(ValueError) as refused:
        failpoints_parse(text)
    assert str(refused.value) == message


def test_a_failpoint_at_certainty_kills_its_process_with_sigkill():
    code = (
        "import django; django.setup()\n"
        "from agents.failpoints import failpoint\n"
        "failpoint('call_settled')\n"  # not armed: passes
        "print('passed call_settled', flush=True)\n"
        "failpoint('call_opened')\n"
        "print('survived call_opened', flush=True)\n"
    )
    env = {**os.environ, "ROSTER_FAILPOINTS": "call_opened=1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, done.stderr
    assert "passed call_settled" in done.stdout
    assert "survived" not in done.stdout
    assert "failpoint call_opened: killing worker process" in done.stderr
