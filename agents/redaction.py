"""Keep secrets out of logs: a logging filter that masks key-shaped strings."""

from __future__ import annotations

import logging
import re

# Shapes of provider keys (OpenAI/OpenRouter/Anthropic "sk-...", Google "AIza...", xAI
# "xai-...", Groq "gsk_...") and our own API tokens. Anything matching is masked, keeping
# the first four characters so a log reader can still tell which kind of key it was.
KEY_PATTERN = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|xai-[A-Za-z0-9]{16,}"
    r"|gsk_[A-Za-z0-9]{16,}|rst_[A-Za-z0-9_\-]{16,}|sandbox-[A-Za-z0-9_\-]{8,})"
)


def redact(text: str, *secrets: str) -> str:
    """Return text with the given secrets and any key-shaped strings masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return KEY_PATTERN.sub(lambda m: m.group(0)[:4] + "***", text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites each record's message with key-shaped strings masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            record.exc_info = None
        return True
