"""Is a cheap model's answer good enough? Rules, the self-check line, and the verdict.

The `escalate` routing policy lets a cheap model answer first and re-runs the task on the
strong model when this module's check says the answer is not good enough. Two signals:

- the cheap model's own self-assessment: its system prompt asks it to end with one line
  `ROSTER-SELF-CHECK: {"confident": true|false, "reason": "..."}`, which is read and
  stripped from the answer people see;
- rules an admin writes, one per line (docs/routing.md): `empty`, `refusal`,
  `min_chars N`, `truncated`, `json_schema {...}`, `self_assessment`.

Pure functions, no database: the admin, the API and the worker share them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The tag of the self-check line. The sandbox provider answers the instruction below when
# it finds this tag in the system prompt (agents/sandbox/behaviour.py).
SELF_CHECK_TAG = "ROSTER-SELF-CHECK"

SELF_CHECK_INSTRUCTION = (
    "After your answer, add one last line, exactly in this form and nothing after it:\n"
    f'{SELF_CHECK_TAG}: {{"confident": true, "reason": "..."}}\n'
    'Set "confident" to false if you are not sure your answer is correct and complete, '
    'and say why in "reason" (one short sentence).'
)

# Rules applied when an escalate policy has none written: the cheapest useful signals.
DEFAULT_RULES_TEXT = "empty\nrefusal\nself_assessment"

# A refusal is recognised by these openings (lower case, straight apostrophes) within the
# answer's first REFUSAL_WINDOW characters: looking further would flag answers that merely
# mention a limitation ("Here is the code. I can't test it on Windows, but...").
REFUSAL_PHRASES = (
    "i can't",
    "i cannot",
    "i can not",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i won't",
    "i will not",
    "i'm sorry",
    "i am sorry",
    "sorry, i",
    "sorry, but",
    "i apologize, but",
    "as an ai",
)
REFUSAL_WINDOW = 120

MAX_RULES = 20
MAX_MIN_CHARS = 1_000_000

_SELF_CHECK_LINE = re.compile(
    rf"^[ \t]*{SELF_CHECK_TAG}[ \t]*:[ \t]*(?P<body>.*?)[ \t]*(?:\r?\n|\Z)", re.MULTILINE
)
_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(?P<body>.*?)\n\s*```\s*$", re.DOTALL)


class RuleKind(StrEnum):
    EMPTY = "empty"
    REFUSAL = "refusal"
    MIN_CHARS = "min_chars"
    TRUNCATED = "truncated"
    JSON_SCHEMA = "json_schema"
    SELF_ASSESSMENT = "self_assessment"


@dataclass(frozen=True)
class Rule:
    """One parsed rule. `text` is the line as written, for messages."""

    kind: RuleKind
    text: str
    min_chars: int = 0
    schema: Mapping[str, Any] | None = None


class RulesInvalid(ValueError):
    """Rules that cannot be parsed; `problems` holds one readable message per bad line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class SelfAssessment:
    confident: bool
    reason: str


@dataclass(frozen=True)
class AnswerReading:
    """An answer with its self-check line taken out.

    `text` is what people see. `self_assessment` is None when the line is missing or
    unreadable; `self_check_problem` then says which.
    """

    text: str
    self_assessment: SelfAssessment | None
    self_check_problem: str = ""


@dataclass(frozen=True)
class Verdict:
    """The check's outcome: `good` unless some rule failed; each failure says why."""

    good: bool
    failures: tuple[str, ...]
    passed: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"good": self.good, "failures": list(self.failures), "passed": list(self.passed)}


# --- Rules ----------------------------------------------------------------------------------


def rules_parse(*, text: str) -> tuple[Rule, ...]:
    """Parse rules written one per line; blank lines and lines starting with # are skipped.

    Returns the rules in the order written (the default rules when there are none).
    Raises RulesInvalid listing every line that cannot be parsed, by line number.
    """
    rules: list[Rule] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rules.append(_rule_parse(line))
        except ValueError as exc:
            problems.append(f"line {number} ({_shorten(line)}): {exc}")
    if problems:
        raise RulesInvalid(problems)
    if not rules:
        return rules_parse(text=DEFAULT_RULES_TEXT)
    if len(rules) > MAX_RULES:
        raise RulesInvalid([f"{len(rules)} rules; at most {MAX_RULES} are allowed"])
    kinds = [rule.kind for rule in rules]
    duplicated = sorted({kind.value for kind in kinds if kinds.count(kind) > 1})
    if duplicated:
        raise RulesInvalid([f"the rule {duplicated[0]!r} is written more than once"])
    return tuple(rules)


def rules_ask_self_assessment(rules: Iterable[Rule]) -> bool:
    """Return True when the cheap call must be asked for a self-check line."""
    return any(rule.kind is RuleKind.SELF_ASSESSMENT for rule in rules)


def _rule_parse(line: str) -> Rule:
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    try:
        kind = RuleKind(name.lower())
    except ValueError:
        known = ", ".join(kind.value for kind in RuleKind)
        raise ValueError(f"unknown rule {name!r}; known rules: {known}") from None
    if kind is RuleKind.MIN_CHARS:
        if not argument.isdigit() or not 1 <= int(argument) <= MAX_MIN_CHARS:
            raise ValueError(f"min_chars needs a whole number from 1 to {MAX_MIN_CHARS:,}")
        return Rule(kind=kind, text=line, min_chars=int(argument))
    if kind is RuleKind.JSON_SCHEMA:
        if not argument:
            raise ValueError('json_schema needs a JSON schema after it, e.g. {"type": "object"}')
        try:
            schema = json.loads(argument)
        except ValueError as exc:
            raise ValueError(f"the schema is not valid JSON: {exc}") from None
        schema_check_definition(schema)
        return Rule(kind=kind, text=line, schema=schema)
    if argument:
        raise ValueError(f"the rule {kind.value!r} takes no argument")
    return Rule(kind=kind, text=line)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The self-check line --------------------------------------------------------------------


def answer_read(*, text: str) -> AnswerReading:
    """Take the self-check line(s) out of an answer and read the last one.

    Returns the answer without them (trailing whitespace trimmed) and the assessment:
    None, with the reason in `self_check_problem`, when no line is there or the last one
    is not `{"confident": <bool>, "reason": <text, optional>}`.
    """
    matches = list(_SELF_CHECK_LINE.finditer(text))
    if not matches:
        return AnswerReading(text=text, self_assessment=None, self_check_problem="missing")
    shown = _SELF_CHECK_LINE.sub("", text).rstrip()
    body = matches[-1].group("body")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("confident"), bool):
        return AnswerReading(
            text=shown,
            self_assessment=None,
            self_check_problem=f"unreadable ({_shorten(body)})",
        )
    reason = data.get("reason")
    return AnswerReading(
        text=shown,
        self_assessment=SelfAssessment(
            confident=data["confident"], reason=reason.strip() if isinstance(reason, str) else ""
        ),
    )


# --- The check ------------------------------------------------------------------------------


def answer_check(*, reading: AnswerReading, rules: Sequence[Rule], truncated: bool) -> Verdict:
    """Apply every rule to an answer (as read by `answer_read`).

    `truncated` says the provider stopped at max_tokens. Returns the verdict: good when
    no rule failed; each failure and each pass is one readable phrase.
    """
    failures: list[str] = []
    passed: list[str] = []
    for rule in rules:
        problem = _rule_failure(rule, reading=reading, truncated=truncated)
        if problem:
            failures.append(problem)
        else:
            passed.append(rule.text)
    return Verdict(good=not failures, failures=tuple(failures), passed=tuple(passed))


def _rule_failure(rule: Rule, *, reading: AnswerReading, truncated: bool) -> str:
    text = reading.text.strip()
    if rule.kind is RuleKind.EMPTY:
        return "" if text else "the answer is empty"
    if rule.kind is RuleKind.REFUSAL:
        phrase = refusal_phrase(text)
        return f"the answer is a refusal (starts with {phrase!r})" if phrase else ""
    if rule.kind is RuleKind.MIN_CHARS:
        if len(text) >= rule.min_chars:
            return ""
        return f"the answer has {len(text):,} characters, fewer than {rule.min_chars:,}"
    if rule.kind is RuleKind.TRUNCATED:
        return "the answer was cut off at the output token limit" if truncated else ""
    if rule.kind is RuleKind.JSON_SCHEMA:
        return _json_failure(text, rule.schema or {})
    assessment = reading.self_assessment
    if assessment is None:
        return f"no self-assessment: the self-check line is {reading.self_check_problem}"
    if assessment.confident:
        return ""
    why = f": {assessment.reason}" if assessment.reason else ""
    return f"the model says it is not confident{why}"


def refusal_phrase(text: str) -> str:
    """Return the refusal phrase an answer opens with, or "" if it does not refuse."""
    opening = text[:REFUSAL_WINDOW].lower().replace("\u2019", "'")
    found = [(opening.find(phrase), phrase) for phrase in REFUSAL_PHRASES]
    hits = sorted((index, phrase) for index, phrase in found if index >= 0)
    return hits[0][1] if hits else ""


def _json_failure(text: str, schema: Mapping[str, Any]) -> str:
    # Models often wrap JSON in a Markdown fence even when asked not to; one fence around
    # the whole answer is accepted.
    fenced = _FENCE.match(text)
    candidate = fenced.group("body") if fenced else text
    try:
        value = json.loads(candidate)
    except ValueError as exc:
        return f"the answer is not valid JSON ({exc})"
    errors = schema_errors(schema, value)
    if errors:
        return "the JSON does not match the schema: " + "; ".join(errors[:3])
    return ""


# --- A small JSON Schema subset -------------------------------------------------------------
# The jsonschema package is not a dependency; answers are checked against this documented
# subset, and a schema using any other keyword is refused when the rule is written (so an
# admin never believes a keyword is enforced when it is not).

SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        # Annotations, accepted and ignored.
        "$schema",
        "title",
        "description",
    }
)


def schema_check_definition(schema: Any, *, path: str = "schema") -> None:
    """Refuse a schema outside the supported subset. Raises ValueError saying where."""
    if not isinstance(schema, dict):
        raise ValueError(f"{path} must be a JSON object")
    unknown = sorted(set(schema) - SCHEMA_KEYWORDS)
    if unknown:
        supported = ", ".join(sorted(k for k in SCHEMA_KEYWORDS if not k.startswith("$")))
        raise ValueError(f"{path} uses {unknown[0]!r}, which is not supported ({supported})")
    types = schema.get("type")
    if types is not None:
        listed = types if isinstance(types, list) else [types]
        for name in listed:
            if name not in SCHEMA_TYPES:
                raise ValueError(f"{path}.type {name!r} is not one of {', '.join(SCHEMA_TYPES)}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{path}.properties must be an object")
    for name, sub in properties.items():
        schema_check_definition(sub, path=f"{path}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{path}.required must be a list of property names")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise ValueError(f"{path}.additionalProperties must be true or false")
    if "items" in schema:
        schema_check_definition(schema["items"], path=f"{path}.items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{path}.enum must be a list")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        value = schema.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{path}.{key} must be a whole number")
    for key in ("minimum", "maximum"):
        value = schema.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise ValueError(f"{path}.{key} must be a number")


def schema_errors(schema: Mapping[str, Any], value: Any, *, path: str = "$") -> list[str]:
    """Return where `value` breaks `schema` (a checked subset schema); [] if it fits."""
    types = schema.get("type")
    if types is not None:
        listed = types if isinstance(types, list) else [types]
        if not any(_is_type(value, name) for name in listed):
            return [f"{path} should be {' or '.join(listed)}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path} should be one of {json.dumps(schema['enum'])}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path} should have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path} should have at most {schema['maxLength']} characters")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path} should be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path} should be at most {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path} should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path} should have at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                errors.extend(schema_errors(schema["items"], item, path=f"{path}[{index}]"))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path} is missing {name!r}")
        for name, item in value.items():
            if name in properties:
                errors.extend(schema_errors(properties[name], item, path=f"{path}.{name}"))
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path} has an unexpected property {name!r}")
    return errors


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):  # True is an int in Python, never a number in JSON
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)  # number
