"""Token estimates for text whose usage no provider reported.

The rule is the common rough one, four characters a token; it is only used for calls
flagged `estimated`, never for calls the provider reported.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def tokens_estimate(text: str) -> int:
    """Estimated tokens of one text: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens_estimate(*texts: str) -> int:
    """Estimated input tokens of a request made of these messages (empty ones skipped)."""
    return sum(tokens_estimate(t) + MESSAGE_OVERHEAD_TOKENS for t in texts if t)


# Byte-level BPE tokenizers (GPT, Llama, Claude, Gemini's byte fallback) never produce more
# tokens than UTF-8 bytes; the message framing adds a few tokens per message.
MESSAGE_FRAMING_BOUND = 16


def prompt_tokens_bound(*texts: str) -> int:
    """An upper bound on the input tokens of a request made of these messages, for budget
    reservations: UTF-8 bytes plus framing. Never below the estimate."""
    return sum(len(t.encode("utf-8")) + MESSAGE_FRAMING_BOUND for t in texts if t)
