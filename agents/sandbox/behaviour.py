"""What the sandbox provider answers, and how it counts: pure rules, no HTTP.

Every wire format parses its request into a `Prompt`; the rules below turn a prompt and
its directives into a `Completion` with a normalised `TokenUsage` (the conventions of
`billing.pricing`: input includes cached and cache-write tokens, output includes
reasoning). The wire formats then report that usage in their own shapes. The rules are
documented for users in docs/sandbox.md; keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from billing.pricing import TokenUsage

# Every system prompt and every message costs its text's tokens plus this overhead, the
# way real chat templates wrap each turn in role markers.
MESSAGE_OVERHEAD_TOKENS = 4

# The rule is "about four characters a token", the rule of thumb providers document.
CHARS_PER_TOKEN = 4

ANSWER_PREVIEW_WORDS = 12

# Deterministic filler for `words=N`: readable, and each word is short enough that a
# long answer is still a realistic number of tokens.
FILLER_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
)

# Bounds on directive values: generous for tests and benchmarks, small enough that one
# request cannot make the server build a gigabyte answer or sleep past any sane timeout.
MAX_WORDS = 1_000_000
MAX_REASONING_TOKENS = 10_000_000
MAX_LATENCY_SECONDS = 3600.0
MAX_RETRY_AFTER_SECONDS = 86_400.0

# Roster's escalate policy asks the cheap model to end its answer with a self-check line
# (agents.escalation.SELF_CHECK_INSTRUCTION). When a system prompt carries this tag, the
# sandbox answers the instruction the way a compliant model would.
SELF_CHECK_TAG = "ROSTER-SELF-CHECK"
POOR_ANSWER = "Sorry, I cannot answer that properly."
POOR_REASON = "simulated poor answer"

DIRECTIVE_MARKER = re.compile(r"\[\[sandbox(?P<body>[^\]]*)\]\]")
DIRECTIVE_SEPARATORS = re.compile(r"[\s,;]+")


class Fault(StrEnum):
    """The faults a request can ask for with `fault=...`."""

    RATE_LIMITED = "429"
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    UNAUTHORIZED = "401"
    BAD_REQUEST = "400"
    HANG = "hang"
    MALFORMED = "malformed"
    NO_USAGE = "no_usage"
    # The answer is produced and billed, but the connection drops halfway through it.
    TRUNCATED = "truncated"


class Quality(StrEnum):
    """What kind of answer a request asks for with `quality=...`."""

    GOOD = "good"
    POOR = "poor"  # short, refusing, and not confident in its self-check


class SelfCheck(StrEnum):
    """How the answer's self-check line reads with `self_check=...`."""

    CONFIDENT = "confident"
    UNSURE = "unsure"
    MISSING = "missing"  # the line is left out, as a model ignoring the instruction


class CacheMode(StrEnum):
    """How a wire format caches prompts.

    AUTOMATIC (OpenAI, OpenRouter, Gemini): any repeated system prompt is a cache read.
    EXPLICIT (Anthropic): only a system prompt marked with cache_control is written to the
    cache, and read back on later requests.
    """

    AUTOMATIC = "automatic"
    EXPLICIT = "explicit"


_Choice = TypeVar("_Choice", bound=StrEnum)


class DirectiveError(ValueError):
    """A directive with an unknown key or a value out of range."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user", "assistant", or "tool"; Gemini's "model" arrives as "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request, independent of its wire format."""

    model: str
    system: str
    turns: tuple[Turn, ...]
    max_tokens: int | None = None
    stream: bool = False
    # OpenAI: stream_options.include_usage asks for a final chunk with usage.
    stream_usage: bool = False
    # Anthropic: a system block carries cache_control, so the system prompt is cacheable.
    cache_marked: bool = False

    def texts(self) -> Iterable[str]:
        """Yield the system prompt and every turn's text, in order."""
        yield self.system
        for turn in self.turns:
            yield turn.text


@dataclass(frozen=True, slots=True)
class Directives:
    """What a request asked the sandbox to do besides answering."""

    latency: float | None = None  # None: the server's default latency
    fault: Fault | None = None
    fault_model: str | None = None  # `fault=500@NAME`: only requests for model NAME
    times: int | None = None  # None: the fault applies to every request carrying it
    retry_after: str | None = None  # seconds, sent verbatim as Retry-After with fault=429
    reasoning: int = 0
    words: int | None = None
    quality: Quality = Quality.GOOD
    quality_model: str | None = None  # `quality=poor@NAME`: only requests for model NAME
    self_check: SelfCheck | None = None  # None: follows quality (good: confident)
    # The directive text as written (header, then markers); part of the fault-counter key.
    source: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer to one prompt and the tokens it used."""

    text: str
    truncated: bool  # the answer hit max_tokens
    usage: TokenUsage


def count_tokens(text: str) -> int:
    """Return the tokens in text: ceil(code points / 4), 0 for the empty string."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def system_prompt_tokens(system: str) -> int:
    """Return what the system prompt adds to the input: its tokens + 4, or 0 if empty."""
    return count_tokens(system) + MESSAGE_OVERHEAD_TOKENS if system else 0


def count_input_tokens(prompt: Prompt) -> int:
    """Return the prompt's input tokens: the system prompt and each turn, 4 tokens apiece
    on top of their text."""
    total = system_prompt_tokens(prompt.system)
    for turn in prompt.turns:
        total += count_tokens(turn.text) + MESSAGE_OVERHEAD_TOKENS
    return total


def prompt_digest(prompt: Prompt) -> str:
    """Return the sha256 hex digest of the canonical prompt.

    Canonical form: compact JSON (UTF-8, keys as written) of
    `[system, [[role, text], ...]]`. The model is not part of it: the answer names the
    model anyway, and the same conversation gets the same reference on every wire format.
    """
    canonical = json.dumps(
        [prompt.system, [[turn.role, turn.text] for turn in prompt.turns]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def answer_text(
    prompt: Prompt,
    *,
    digest: str,
    words: int | None = None,
    quality: Quality = Quality.GOOD,
    self_check: SelfCheck | None = None,
) -> str:
    """Return the deterministic answer to a prompt (before any max_tokens truncation).

    "Sandbox answer from {model}: {first 12 words of the last user message}
    [ref {first 8 hex digits of the prompt digest}]"; with `words`, exactly that many
    words: the answer's own words, then filler words. A poor answer is
    "Sorry, I cannot answer that properly. [ref ...]" (`words` does not apply).
    When the system prompt carries the self-check tag, a last line follows:
    `ROSTER-SELF-CHECK: {"confident": true}` (or false with a reason; none if missing).
    """
    body = _answer_body(prompt, digest=digest, words=words, quality=quality)
    if SELF_CHECK_TAG not in prompt.system:
        return body
    check = self_check or (SelfCheck.CONFIDENT if quality is Quality.GOOD else SelfCheck.UNSURE)
    if check is SelfCheck.MISSING:
        return body
    if check is SelfCheck.CONFIDENT:
        return f'{body}\n{SELF_CHECK_TAG}: {{"confident": true}}'
    return f'{body}\n{SELF_CHECK_TAG}: {{"confident": false, "reason": "{POOR_REASON}"}}'


def _answer_body(prompt: Prompt, *, digest: str, words: int | None, quality: Quality) -> str:
    if quality is Quality.POOR:
        return f"{POOR_ANSWER} [ref {digest[:8]}]"
    last_user = next((t.text for t in reversed(prompt.turns) if t.role == "user"), "")
    preview = " ".join(last_user.split()[:ANSWER_PREVIEW_WORDS]) or "(no user message)"
    answer = f"Sandbox answer from {prompt.model}: {preview} [ref {digest[:8]}]"
    if words is None:
        return answer
    chosen = answer.split()[:words]
    missing = words - len(chosen)
    chosen.extend(FILLER_WORDS[i % len(FILLER_WORDS)] for i in range(missing))
    return " ".join(chosen)


def fit_to_max_tokens(
    text: str, *, reasoning: int, max_tokens: int | None
) -> tuple[str, int, bool]:
    """Apply max_tokens to an answer: return (text, reasoning tokens, truncated).

    Reasoning comes first (as with real reasoning models it is spent before the answer):
    it is capped at max_tokens, and the visible answer is cut to the remaining tokens x 4
    characters, so output tokens never exceed max_tokens.
    """
    if max_tokens is None:
        return text, reasoning, False
    truncated = reasoning > max_tokens
    reasoning = min(reasoning, max_tokens)
    visible_budget = max_tokens - reasoning
    if count_tokens(text) > visible_budget:
        return text[: visible_budget * CHARS_PER_TOKEN], reasoning, True
    return text, reasoning, truncated


def parse_directives(header: str | None, texts: Iterable[str]) -> Directives:
    """Read directives from the X-Sandbox-Directives header and `[[sandbox ...]]` markers.

    Both hold whitespace- (or comma-) separated key=value pairs. Markers are read in
    message order and the header last, so the header wins a conflict.
    Raises DirectiveError for an unknown key or a bad value.
    """
    sources: list[str] = []
    pairs: list[str] = []
    for text in texts:
        if "[[sandbox" not in text:  # the cheap test first: almost no message has one
            continue
        for match in DIRECTIVE_MARKER.finditer(text):
            sources.append(match.group(0))
            pairs.extend(p for p in DIRECTIVE_SEPARATORS.split(match.group("body")) if p)
    if header and header.strip():
        sources.append(header.strip())
        pairs.extend(p for p in DIRECTIVE_SEPARATORS.split(header) if p)
    if not pairs:
        return Directives()
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise DirectiveError(f"sandbox directive {pair!r} is not key=value")
        values[key.lower()] = value
    return _directives_from(values, source=" ".join(sources))


def _directives_from(values: Mapping[str, str], *, source: str) -> Directives:
    known_keys = (
        "latency",
        "fault",
        "times",
        "retry_after",
        "reasoning",
        "words",
        "quality",
        "self_check",
    )
    unknown = set(values) - set(known_keys)
    if unknown:
        raise DirectiveError(
            f"unknown sandbox directive {sorted(unknown)[0]!r}; known: {', '.join(known_keys)}"
        )
    fault: Fault | None = None
    fault_value, fault_model = _scoped(values.get("fault"), key="fault")
    if fault_value is not None:
        try:
            fault = Fault(fault_value.lower())
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise DirectiveError(
                f"unknown sandbox fault {values['fault']!r}; known: {known}"
            ) from None
    quality_value, quality_model = _scoped(values.get("quality"), key="quality")
    quality = _choice("quality", quality_value, Quality) or Quality.GOOD
    self_check = _choice("self_check", values.get("self_check"), SelfCheck)
    retry_after = values.get("retry_after")
    if retry_after is not None:
        _bounded_number("retry_after", retry_after, MAX_RETRY_AFTER_SECONDS)
    latency = values.get("latency")
    return Directives(
        latency=None
        if latency is None
        else _bounded_number("latency", latency, MAX_LATENCY_SECONDS),
        fault=fault,
        fault_model=fault_model,
        times=_bounded_int("times", values.get("times"), maximum=None),
        retry_after=retry_after,
        reasoning=_bounded_int("reasoning", values.get("reasoning"), MAX_REASONING_TOKENS) or 0,
        words=_bounded_int("words", values.get("words"), MAX_WORDS),
        quality=quality,
        quality_model=quality_model,
        self_check=self_check,
        source=source,
    )


def _scoped(raw: str | None, *, key: str) -> tuple[str | None, str | None]:
    """Split `VALUE@MODEL` into the value and the model it is limited to (None: any)."""
    if raw is None or "@" not in raw:
        return raw, None
    value, _, model = raw.partition("@")
    if not value or not model:
        raise DirectiveError(f"sandbox directive {key}={raw!r} must be VALUE or VALUE@MODEL")
    return value, model


def model_matches(model: str, wanted: str | None) -> bool:
    """Return True when a request for `model` is one a `@wanted` scope names (None: any).

    Names match exactly or by the part after the vendor prefix, so `@openai/gpt-4o` also
    names `gpt-4o` as a direct provider spells it.
    """
    if wanted is None:
        return True
    return model == wanted or model.split("/", 1)[-1] == wanted.split("/", 1)[-1]


def _choice(key: str, raw: str | None, kind: type[_Choice]) -> _Choice | None:
    if raw is None:
        return None
    try:
        return kind(raw.lower())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise DirectiveError(f"sandbox directive {key}={raw!r} must be one of: {known}") from None


def _bounded_number(key: str, raw: str, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DirectiveError(f"sandbox directive {key}={raw!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise DirectiveError(f"sandbox directive {key}={raw!r} must be between 0 and {maximum:g}")
    return value


def _bounded_int(key: str, raw: str | None, maximum: int | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise DirectiveError(f"sandbox directive {key}={raw!r} is not a whole number >= 0")
    value = int(raw)
    if maximum is not None and value > maximum:
        raise DirectiveError(f"sandbox directive {key}={raw!r} is above the limit {maximum}")
    return value


class FaultCounter:
    """Counts requests per fault key so that `times=N` faults only the first N of them."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def fault_applies(self, directives: Directives, *, model: str, digest: str) -> bool:
        """Count this request and return whether its fault (if any) applies to it.

        The key is the directive text + model + prompt digest: a retry of the very same
        request is "the same request" and eventually succeeds.
        """
        if directives.fault is None or not model_matches(model, directives.fault_model):
            return False
        if directives.times is None:
            return True
        key = hashlib.sha256(
            "\x00".join((directives.source, model, digest)).encode("utf-8")
        ).hexdigest()
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        return count <= directives.times

    def clear(self) -> None:
        self._seen.clear()


class PromptCacheMemory:
    """The system prompts the server has seen, per wire format and model."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()

    def account(self, prompt: Prompt, *, scope: str, mode: CacheMode) -> tuple[int, int]:
        """Remember the prompt's system prompt; return (cached read, cache write) tokens.

        AUTOMATIC: the first request writes nothing it reports, later ones read
        tokens(system) + 4. EXPLICIT: only a cache-marked system prompt counts: written
        the first time, read afterwards.
        """
        if not prompt.system or (mode is CacheMode.EXPLICIT and not prompt.cache_marked):
            return 0, 0
        key = (scope, prompt.model, prompt.system)
        tokens = system_prompt_tokens(prompt.system)
        if key in self._seen:
            return tokens, 0
        self._seen.add(key)
        return 0, tokens if mode is CacheMode.EXPLICIT else 0

    def clear(self) -> None:
        self._seen.clear()


def complete(
    prompt: Prompt,
    directives: Directives,
    *,
    digest: str,
    cache: PromptCacheMemory,
    scope: str,
    mode: CacheMode,
) -> Completion:
    """Answer a prompt and count its tokens, updating the cache memory.

    `scope` names the provider whose cache this is (the wire format).
    """
    in_scope = model_matches(prompt.model, directives.quality_model)
    text = answer_text(
        prompt,
        digest=digest,
        words=directives.words,
        quality=directives.quality if in_scope else Quality.GOOD,
        self_check=directives.self_check,
    )
    text, reasoning, truncated = fit_to_max_tokens(
        text, reasoning=directives.reasoning, max_tokens=prompt.max_tokens
    )
    cached, written = cache.account(prompt, scope=scope, mode=mode)
    usage = TokenUsage(
        input_tokens=count_input_tokens(prompt),
        output_tokens=count_tokens(text) + reasoning,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )
    return Completion(text=text, truncated=truncated, usage=usage)
