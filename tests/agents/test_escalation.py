"""The escalation check: rules as admins write them, the self-check line, the verdict."""

from __future__ import annotations

import pytest

from agents.escalation import (
    DEFAULT_RULES_TEXT,
    SELF_CHECK_INSTRUCTION,
    SELF_CHECK_TAG,
    AnswerReading,
    RuleKind,
    RulesInvalid,
    SelfAssessment,
    answer_check,
    answer_read,
    refusal_phrase,
    rules_ask_self_assessment,
    rules_parse,
    schema_errors,
)
from agents.sandbox import behaviour as sandbox_behaviour


def check(text: str, rules: str, *, truncated: bool = False):
    return answer_check(
        reading=answer_read(text=text), rules=rules_parse(text=rules), truncated=truncated
    )


# --- Parsing --------------------------------------------------------------------------------


def test_rules_are_parsed_in_order_with_comments_and_blank_lines_skipped():
    rules = rules_parse(
        text="# what a good answer is\nempty\n\n  refusal  \nmin_chars 200\ntruncated\n"
        'json_schema {"type": "object", "required": ["title"]}\nself_assessment\n'
    )

    assert [rule.kind for rule in rules] == [
        RuleKind.EMPTY,
        RuleKind.REFUSAL,
        RuleKind.MIN_CHARS,
        RuleKind.TRUNCATED,
        RuleKind.JSON_SCHEMA,
        RuleKind.SELF_ASSESSMENT,
    ]
    assert rules[2].min_chars == 200
    assert rules[4].schema == {"type": "object", "required": ["title"]}
    assert rules_ask_self_assessment(rules)


def test_no_rules_means_the_default_rules():
    assert rules_parse(text="  \n# nothing\n") == rules_parse(text=DEFAULT_RULES_TEXT)
    assert [r.kind for r in rules_parse(text="")] == [
        RuleKind.EMPTY,
        RuleKind.REFUSAL,
        RuleKind.SELF_ASSESSMENT,
    ]


def test_rule_names_are_case_insensitive():
    assert rules_parse(text="EMPTY\nMin_Chars 5")[1].min_chars == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("emptyy", "line 1 (emptyy): unknown rule 'emptyy'; known rules: empty, refusal"),
        ("empty\nmin_chars", "line 2 (min_chars): min_chars needs a whole number from 1"),
        ("min_chars -3", "min_chars needs a whole number"),
        ("min_chars 0", "min_chars needs a whole number from 1"),
        ("min_chars lots", "min_chars needs a whole number"),
        ("refusal please", "the rule 'refusal' takes no argument"),
        ("json_schema", "json_schema needs a JSON schema after it"),
        ("json_schema {type: object}", "the schema is not valid JSON"),
        ('json_schema ["object"]', "schema must be a JSON object"),
        ('json_schema {"pattern": "^a"}', "schema uses 'pattern', which is not supported"),
        ('json_schema {"type": "dict"}', "schema.type 'dict' is not one of object, array"),
        (
            'json_schema {"properties": {"n": {"type": "float"}}}',
            "schema.properties.n.type 'float' is not one of",
        ),
        ('json_schema {"required": "title"}', "schema.required must be a list"),
        ('json_schema {"additionalProperties": {}}', "additionalProperties must be true or false"),
        ("empty\nempty", "the rule 'empty' is written more than once"),
    ],
)
def test_bad_rules_are_refused_with_a_message_naming_the_line(text, message):
    with pytest.raises(RulesInvalid) as caught:
        rules_parse(text=text)

    assert message in str(caught.value)


def test_every_bad_line_is_reported_at_once():
    with pytest.raises(RulesInvalid) as caught:
        rules_parse(text="nonsense\nempty\nmin_chars x")

    assert [p.split(" ", 2)[:2] for p in caught.value.problems] == [
        ["line", "1"],
        ["line", "3"],
    ]


# --- The self-check line --------------------------------------------------------------------


def test_the_self_check_line_is_read_and_stripped_from_the_answer():
    reading = answer_read(
        text='Here is the plan.\nStep two.\nROSTER-SELF-CHECK: {"confident": false, '
        '"reason": "no data for March"}\n'
    )

    assert reading.text == "Here is the plan.\nStep two."
    assert reading.self_assessment == SelfAssessment(confident=False, reason="no data for March")


def test_a_missing_self_check_line_is_reported_as_missing():
    reading = answer_read(text="Just an answer.")

    assert reading == AnswerReading(
        text="Just an answer.", self_assessment=None, self_check_problem="missing"
    )


def test_an_unreadable_self_check_line_is_stripped_and_reported():
    reading = answer_read(text="Answer.\nROSTER-SELF-CHECK: I think so")

    assert reading.text == "Answer."
    assert reading.self_assessment is None
    assert reading.self_check_problem.startswith("unreadable (I think so")


def test_the_last_of_several_self_check_lines_counts():
    reading = answer_read(
        text='ROSTER-SELF-CHECK: {"confident": false}\nAnswer.\n'
        'ROSTER-SELF-CHECK: {"confident": true}'
    )

    assert reading.text == "Answer."
    assert reading.self_assessment == SelfAssessment(confident=True, reason="")


def test_the_instruction_names_the_tag_the_sandbox_answers():
    assert SELF_CHECK_TAG == sandbox_behaviour.SELF_CHECK_TAG
    assert f"{SELF_CHECK_TAG}: " in SELF_CHECK_INSTRUCTION


# --- Verdicts -------------------------------------------------------------------------------


def test_a_good_answer_passes_every_rule():
    verdict = check(
        'A complete answer with enough words.\nROSTER-SELF-CHECK: {"confident": true}',
        "empty\nrefusal\nmin_chars 20\nself_assessment",
    )

    assert verdict.good
    assert verdict.failures == ()
    assert verdict.passed == ("empty", "refusal", "min_chars 20", "self_assessment")


def test_an_empty_answer_fails():
    verdict = check("   \n", "empty")

    assert not verdict.good
    assert verdict.failures == ("the answer is empty",)


@pytest.mark.parametrize(
    "text",
    [
        "I can't help with that.",
        "Sorry, I cannot answer that properly.",
        "I\u2019m unable to browse the web.",
        "As an AI language model, I do not have opinions.",
    ],
)
def test_refusals_fail(text):
    verdict = check(text, "refusal")

    assert not verdict.good
    assert verdict.failures[0].startswith("the answer is a refusal (starts with")


def test_a_limitation_mentioned_late_is_not_a_refusal():
    text = (
        "def iban_ok(s):\n    return s.isalnum()\n" + "x" * 150 + "\nI can't test this on Windows."
    )

    assert refusal_phrase(text) == ""
    assert check(text, "refusal").good


def test_a_short_answer_fails_min_chars_with_both_lengths():
    verdict = check("Too short.", "min_chars 200")

    assert verdict.failures == ("the answer has 10 characters, fewer than 200",)


def test_min_chars_does_not_count_the_self_check_line():
    text = "abcde\n" + 'ROSTER-SELF-CHECK: {"confident": true, "reason": "long reason here"}'

    assert not check(text, "min_chars 10").good


def test_truncated_answers_fail_the_truncated_rule():
    assert check("Half an answ", "truncated", truncated=True).failures == (
        "the answer was cut off at the output token limit",
    )
    assert check("Whole answer.", "truncated", truncated=False).good


def test_json_schema_accepts_matching_json_even_in_a_fence():
    rules = 'json_schema {"type": "object", "required": ["title", "tags"], ' + (
        '"properties": {"title": {"type": "string", "minLength": 3}, '
        '"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}'
    )

    assert check('{"title": "Invoice", "tags": ["q3"]}', rules).good
    assert check('```json\n{"title": "Invoice", "tags": ["q3"]}\n```', rules).good


def test_json_schema_rejects_bad_json_and_says_why():
    rules = 'json_schema {"type": "object", "required": ["title"]}'

    assert (
        check("Here you go: {title}", rules)
        .failures[0]
        .startswith("the answer is not valid JSON (")
    )
    assert check('{"name": 1}', rules).failures == (
        "the JSON does not match the schema: $ is missing 'title'",
    )


@pytest.mark.parametrize(
    ("schema", "value", "errors"),
    [
        ({"type": "integer"}, 3.0, []),
        ({"type": "integer"}, True, ["$ should be integer"]),
        ({"type": "number", "minimum": 1, "maximum": 5}, 7, ["$ should be at most 5"]),
        ({"type": ["string", "null"]}, None, []),
        ({"enum": ["a", "b"]}, "c", ['$ should be one of ["a", "b"]']),
        ({"type": "string", "maxLength": 2}, "abc", ["$ should have at most 2 characters"]),
        ({"type": "array", "maxItems": 1}, [1, 2], ["$ should have at most 1 items"]),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
            },
            {"a": 1, "b": 2},
            ["$.a should be string", "$ has an unexpected property 'b'"],
        ),
        ({"items": {"type": "boolean"}}, [True, "no"], ["$[1] should be boolean"]),
    ],
)
def test_the_schema_subset(schema, value, errors):
    assert schema_errors(schema, value) == errors


def test_self_assessment_false_fails_with_the_models_reason():
    verdict = check(
        'Answer.\nROSTER-SELF-CHECK: {"confident": false, "reason": "unsure about the law"}',
        "self_assessment",
    )

    assert verdict.failures == ("the model says it is not confident: unsure about the law",)


def test_self_assessment_true_passes():
    assert check('Answer.\nROSTER-SELF-CHECK: {"confident": true}', "self_assessment").good


def test_a_missing_self_assessment_fails():
    verdict = check("Answer without the line.", "self_assessment")

    assert verdict.failures == ("no self-assessment: the self-check line is missing",)


def test_every_failing_rule_is_listed():
    verdict = check(
        'Sorry, I cannot answer that properly.\nROSTER-SELF-CHECK: {"confident": false}',
        DEFAULT_RULES_TEXT + "\nmin_chars 100",
    )

    assert not verdict.good
    assert len(verdict.failures) == 3
    assert verdict.passed == ("empty",)


# --- The sandbox answers the instruction ----------------------------------------------------


def sandbox_answer(user: str, *, system: str = "", directives: str = "") -> str:
    request = sandbox_behaviour.Prompt(
        model="m", system=system, turns=(sandbox_behaviour.Turn(role="user", text=user),)
    )
    parsed = sandbox_behaviour.parse_directives(directives, request.texts())
    completion = sandbox_behaviour.complete(
        request,
        parsed,
        digest=sandbox_behaviour.prompt_digest(request),
        cache=sandbox_behaviour.PromptCacheMemory(),
        scope="openai",
        mode=sandbox_behaviour.CacheMode.AUTOMATIC,
    )
    return completion.text


def test_the_sandbox_adds_a_confident_self_check_only_when_asked():
    plain = sandbox_answer("Translate hello")
    asked = sandbox_answer("Translate hello", system=f"Be brief.\n\n{SELF_CHECK_INSTRUCTION}")

    assert SELF_CHECK_TAG not in plain
    reading = answer_read(text=asked)
    assert reading.self_assessment == SelfAssessment(confident=True, reason="")
    assert reading.text.startswith("Sandbox answer from m: Translate hello")
    assert asked == sandbox_answer(
        "Translate hello", system=f"Be brief.\n\n{SELF_CHECK_INSTRUCTION}"
    )


def test_the_sandbox_poor_answer_refuses_and_is_not_confident():
    answer = sandbox_answer(
        "Write the parser [[sandbox quality=poor]]", system=SELF_CHECK_INSTRUCTION
    )

    reading = answer_read(text=answer)
    assert reading.text.startswith("Sorry, I cannot answer that properly. [ref ")
    assert reading.self_assessment == SelfAssessment(
        confident=False, reason="simulated poor answer"
    )
    verdict = answer_check(
        reading=reading, rules=rules_parse(text=DEFAULT_RULES_TEXT), truncated=False
    )
    assert verdict.passed == ("empty",)


def test_the_sandbox_poor_answer_without_the_instruction_has_no_self_check():
    answer = sandbox_answer("Anything", directives="quality=poor words=50")

    assert answer.startswith("Sorry, I cannot answer that properly. [ref ")
    assert SELF_CHECK_TAG not in answer


@pytest.mark.parametrize(
    ("directive", "assessment"),
    [
        ("self_check=unsure", SelfAssessment(confident=False, reason="simulated poor answer")),
        ("self_check=missing", None),
        ("quality=poor self_check=confident", SelfAssessment(confident=True, reason="")),
    ],
)
def test_the_sandbox_self_check_directive(directive, assessment):
    answer = sandbox_answer("Q", system=SELF_CHECK_INSTRUCTION, directives=directive)

    assert answer_read(text=answer).self_assessment == assessment


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("quality=great", "quality='great' must be one of: good, poor"),
        ("self_check=maybe", "self_check='maybe' must be one of: confident, unsure, missing"),
    ],
)
def test_the_sandbox_refuses_bad_quality_directives(header, message):
    with pytest.raises(sandbox_behaviour.DirectiveError, match=message):
        sandbox_behaviour.parse_directives(header, [])


def test_a_poor_quality_scoped_to_a_model_leaves_other_models_good():
    def answer(model: str) -> str:
        request = sandbox_behaviour.Prompt(
            model=model,
            system=SELF_CHECK_INSTRUCTION,
            turns=(sandbox_behaviour.Turn(role="user", text="Q [[sandbox quality=poor@cheap/m]]"),),
        )
        return sandbox_behaviour.complete(
            request,
            sandbox_behaviour.parse_directives(None, request.texts()),
            digest=sandbox_behaviour.prompt_digest(request),
            cache=sandbox_behaviour.PromptCacheMemory(),
            scope="openai",
            mode=sandbox_behaviour.CacheMode.AUTOMATIC,
        ).text

    assert answer("cheap/m").startswith("Sorry, I cannot answer that properly.")
    assert answer("m").startswith("Sorry, I cannot answer that properly.")  # by its direct name
    strong = answer_read(text=answer("strong/big"))
    assert strong.text.startswith("Sandbox answer from strong/big")
    assert strong.self_assessment == SelfAssessment(confident=True, reason="")


def test_a_fault_scoped_to_a_model_applies_only_to_it():
    directives = sandbox_behaviour.parse_directives("fault=500@local/llama times=1", [])
    counter = sandbox_behaviour.FaultCounter()

    assert directives.fault is sandbox_behaviour.Fault.SERVER_ERROR
    assert not counter.fault_applies(directives, model="cloud/big", digest="d")
    assert counter.fault_applies(directives, model="local/llama", digest="d")
    assert not counter.fault_applies(directives, model="local/llama", digest="d")


@pytest.mark.parametrize("header", ["fault=@m", "fault=500@", "quality=poor@"])
def test_a_scope_needs_a_value_and_a_model(header):
    with pytest.raises(sandbox_behaviour.DirectiveError, match="must be VALUE or VALUE@MODEL"):
        sandbox_behaviour.parse_directives(header, [])
