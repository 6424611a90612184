from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.domain.manifest import (
    Manifest,
    ProfileSpec,
    parse_json,
    parse_markdown,
    parse_profile_json,
    parse_profile_markdown,
    problems_from,
    render_markdown,
    render_profile_markdown,
    validate_profile_name,
)
from fleet.domain.models import Deps
from fleet.errors import Problem, ValidationFailed

J1 = "j" + "0" * 26
J2 = "j" + "a" * 26
J3 = "j01hzy8k3m4n5p6q7r8s9t0v1w2"


def doc(front: str, body: str = "") -> str:
    return f"---\n{front}\n---\n\n{body}"


def problems(parse: Any, arg: object) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        parse(arg)
    return [(p.path, p.code) for p in info.value.problems]


FULL = f"""---
title: "  Add retries to the uploader  "
persona: careful-reviewer
capabilities: [os:linux, engine:claude, has:docker, python, python]
priority: 9
budget: 2.5
channel: nightly
deps: [{J1}, {J2}]
idempotencyKey: release-42/uploader
maxAttempts: 5
leaseSeconds: 900
verify: make test
---

# Task

Make the uploader retry.
"""


def test_manifest_full_document_sets_every_field() -> None:
    m = parse_markdown(FULL)
    assert m == Manifest(
        title="Add retries to the uploader",
        persona="careful-reviewer",
        capabilities=("os:linux", "engine:claude", "has:docker", "python"),
        priority=9,
        budgetUsd=2.5,
        channel="nightly",
        deps=Deps(mode="all", jobs=(J1, J2)),
        idempotencyKey="release-42/uploader",
        maxAttempts=5,
        leaseSeconds=900,
        verify="make test",
        body="# Task\n\nMake the uploader retry.\n",
    )
    assert type(m.deps) is Deps


def test_manifest_defaults() -> None:
    m = parse_markdown("---\ntitle: Do it\n---\n")
    assert (m.title, m.body, m.persona, m.capabilities, m.priority) == ("Do it", "", None, (), 5)
    assert (m.budgetUsd, m.channel, m.deps, m.idempotencyKey, m.verify) == (None,) * 5
    assert (m.maxAttempts, m.leaseSeconds) == (3, 300)


@pytest.mark.parametrize(
    ("front", "path", "code"),
    [
        ("title: ''", "title", "string_too_short"),
        ("title: '   '", "title", "string_too_short"),
        (f"title: {'x' * 201}", "title", "string_too_long"),
        ("title: [a]", "title", "string_type"),
        ("title: 42", "title", "string_type"),
        ("title: x\npersona: Reviewer", "persona", "string_pattern_mismatch"),
        ("title: x\npersona: -lead", "persona", "string_pattern_mismatch"),
        (f"title: x\npersona: {'a' * 64}", "persona", "string_pattern_mismatch"),
        (
            "title: x\ncapabilities: [python, OS:Linux]",
            "capabilities[1]",
            "string_pattern_mismatch",
        ),
        ("title: x\ncapabilities: ['a b']", "capabilities[0]", "string_pattern_mismatch"),
        ("title: x\ncapabilities: ['os:linux:x']", "capabilities[0]", "string_pattern_mismatch"),
        ("title: x\ncapabilities: [python, 3]", "capabilities[1]", "string_type"),
        (f"title: x\ncapabilities: [{'a' * 129}]", "capabilities[0]", "string_too_long"),
        ("title: x\ncapabilities: python", "capabilities", "list_type"),
        ("title: x\ncapabilities: !!set {a, b}", "capabilities", "list_type"),
        (
            "title: x\ncapabilities: [" + ", ".join(f"c{i}" for i in range(33)) + "]",
            "capabilities",
            "too_long",
        ),
        ("title: x\npriority: 10", "priority", "less_than_equal"),
        ("title: x\npriority: -1", "priority", "greater_than_equal"),
        ("title: x\npriority: high", "priority", "int_type"),
        ("title: x\npriority: 5.0", "priority", "int_type"),
        ("title: x\npriority: true", "priority", "int_type"),
        ("title: x\nbudget: -0.01", "budget", "greater_than_equal"),
        ("title: x\nbudget: 100000.01", "budget", "less_than_equal"),
        ("title: x\nbudget: .nan", "budget", "finite_number"),
        ("title: x\nbudget: '3'", "budget", "float_type"),
        ("title: x\nbudget: {estimateUsd: -1}", "budget.estimateUsd", "greater_than_equal"),
        ("title: x\nbudget: {}", "budget.estimateUsd", "missing"),
        ("title: x\nbudget_usd: -1", "budgetUsd", "greater_than_equal"),
        ("title: x\nchannel: Nightly", "channel", "string_pattern_mismatch"),
        ("title: x\ndeps: [nope]", "deps[0]", "string_pattern_mismatch"),
        (f"title: x\ndeps: [{J1.upper()}]", "deps[0]", "string_pattern_mismatch"),
        (f"title: x\ndeps: [{J1}, {J2}, {J1}]", "deps[2]", "duplicate"),
        (f"title: x\ndeps: {{mode: any, jobs: [{J1}, {J1}]}}", "deps.jobs[1]", "duplicate"),
        (f"title: x\ndeps: {{mode: some, jobs: [{J1}]}}", "deps.mode", "literal_error"),
        ("title: x\ndeps: {mode: any}", "deps.jobs", "missing"),
        (f"title: x\ndeps: {J1}", "deps", "list_type"),
        (f"title: x\ndeps: [{', '.join([J1] * 101)}]", "deps", "too_long"),
        ("title: x\nidempotencyKey: ''", "idempotencyKey", "string_too_short"),
        (f"title: x\nidempotencyKey: {'k' * 201}", "idempotencyKey", "string_too_long"),
        ('title: x\nidempotencyKey: "a\\tb"', "idempotencyKey", "string_not_printable"),
        ("title: x\nidempotency_key: 7", "idempotencyKey", "string_type"),
        ("title: x\nmaxAttempts: 0", "maxAttempts", "greater_than_equal"),
        ("title: x\nmax_attempts: 21", "maxAttempts", "less_than_equal"),
        ("title: x\nleaseSeconds: 29", "leaseSeconds", "greater_than_equal"),
        ("title: x\nlease_seconds: 3601", "leaseSeconds", "less_than_equal"),
        ("title: x\nverify: ''", "verify", "string_too_short"),
        (f"title: x\nverify: {'v' * 2001}", "verify", "string_too_long"),
        ("title: x\nverify: [make, test]", "verify", "string_type"),
    ],
)
def test_manifest_invalid_field_reports_path_and_code(front: str, path: str, code: str) -> None:
    assert problems(parse_markdown, doc(front)) == [(path, code)]


def test_manifest_body_too_large_is_reported_on_body() -> None:
    assert problems(parse_markdown, doc("title: x", "é" * (128 * 1024 + 1))) == [
        ("body", "string_too_long")
    ]
    assert parse_markdown(doc("title: x", "x" * 256 * 1024)).body == "x" * 256 * 1024


def test_manifest_reports_every_problem_at_once() -> None:
    front = "\n".join(
        [
            "priority: 12",
            "capabilities: [ok, NOT-OK, fine, 'no way']",
            "budget: {estimateUsd: -3, ceiling: 9}",
            "deps: [bad]",
            "maxAttempts: 0",
            "flavour: vanilla",
        ]
    )
    with pytest.raises(ValidationFailed) as info:
        parse_markdown(doc(front))
    error = info.value
    assert sorted((p.path, p.code) for p in error.problems) == sorted(
        [
            ("title", "missing"),
            ("priority", "less_than_equal"),
            ("capabilities[1]", "string_pattern_mismatch"),
            ("capabilities[3]", "string_pattern_mismatch"),
            ("budget.estimateUsd", "greater_than_equal"),
            ("budget.ceiling", "unknown_field"),
            ("deps[0]", "string_pattern_mismatch"),
            ("maxAttempts", "greater_than_equal"),
            ("flavour", "unknown_field"),
        ]
    )
    assert error.code == "validation_failed"
    assert error.details["problems"] == [p.as_dict() for p in error.problems]
    assert error.message.startswith("title: Field required")
    assert error.message.endswith("and 4 more")


def test_manifest_uppercase_capability_message_suggests_lower_case() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_markdown(doc("title: x\ncapabilities: [OS:Linux]"))
    assert "use 'os:linux'" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("title: x\nprority: 3", [("prority", "unknown_field")]),
        ("title: x\nbody: inline", [("body", "unknown_field")]),
        ("title: x\nTitle: y", [("Title", "unknown_field")]),
        (
            "title: x\nbudget: {estimate: 1}",
            [("budget.estimate", "unknown_field"), ("budget.estimateUsd", "missing")],
        ),
        (f"title: x\ndeps: {{jobs: [{J1}], when: now}}", [("deps.when", "unknown_field")]),
        ("title: x\n7: seven", [("7", "invalid_key")]),
        ("title: x\nmaxAttempts: 2\nmax_attempts: 3", [("maxAttempts", "duplicate_field")]),
        ("title: x\nbudget: 1\nbudgetUsd: 2", [("budget", "duplicate_field")]),
    ],
)
def test_manifest_unknown_fields_are_reported_with_their_path(
    front: str, expected: list[tuple[str, str]]
) -> None:
    assert sorted(problems(parse_markdown, doc(front))) == sorted(expected)


def test_manifest_unknown_field_suggests_the_near_miss() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_markdown(doc("title: x\nleaseSecond: 60"))
    assert (
        info.value.problems[0].message
        == "unknown field 'leaseSecond' (did you mean 'leaseSeconds'?)"
    )


@pytest.mark.parametrize(
    ("front", "field", "value"),
    [
        ("idempotency_key: k-1", "idempotencyKey", "k-1"),
        ("max_attempts: 7", "maxAttempts", 7),
        ("lease_seconds: 60", "leaseSeconds", 60),
        ("budget_usd: 4", "budgetUsd", 4.0),
        ("budgetUsd: 4", "budgetUsd", 4.0),
        ("budget: {estimate_usd: 4}", "budgetUsd", 4.0),
    ],
)
def test_manifest_snake_case_aliases(front: str, field: str, value: object) -> None:
    assert getattr(parse_markdown(doc(f"title: x\n{front}")), field) == value
    assert getattr(parse_json({"title": "x", **_yaml_pair(front)}), field) == value


def _yaml_pair(front: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(front)
    return loaded


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ("0", 0.0),
        ("3", 3.0),
        ("2.75", 2.75),
        ("100000", 100000.0),
        ("{estimateUsd: 1.5}", 1.5),
        ("{estimateUsd: 0}", 0.0),
        ("null", None),
    ],
)
def test_manifest_budget_number_or_mapping(budget: str, expected: float | None) -> None:
    m = parse_markdown(doc(f"title: x\nbudget: {budget}"))
    assert m.budgetUsd == expected
    assert m.budgetUsd is None or isinstance(m.budgetUsd, float)


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        (f"[{J1}]", Deps(mode="all", jobs=(J1,))),
        (f"[{J1}, {J3}]", Deps(mode="all", jobs=(J1, J3))),
        (f"{{jobs: [{J2}, {J1}]}}", Deps(mode="all", jobs=(J2, J1))),
        (f"{{mode: any, jobs: [{J1}, {J2}]}}", Deps(mode="any", jobs=(J1, J2))),
        ("[]", None),
        ("{mode: any, jobs: []}", None),
        ("null", None),
    ],
)
def test_manifest_deps_list_or_mapping(deps: str, expected: Deps | None) -> None:
    m = parse_markdown(doc(f"title: x\ndeps: {deps}"))
    assert m.deps == expected
    assert m.deps is None or type(m.deps) is Deps


@pytest.mark.parametrize(
    ("text", "code", "path"),
    [
        ("", "empty", ""),
        ("  \n\n", "empty", ""),
        (None, "empty", ""),
        (42, "empty", ""),
        ("# Just a heading\n\nNo front matter.", "missing_front_matter", ""),
        ("title: x\n", "missing_front_matter", ""),
        ("---\ntitle: x\n", "unclosed_front_matter", ""),
        ("---\ntitle: [unclosed\n---\nbody", "invalid_yaml", ""),
        ("---\ntitle: x\n  bad: indent\n---\n", "invalid_yaml", ""),
        ("---\n- a list\n---\n", "invalid_front_matter", ""),
        ("---\njust a string\n---\n", "invalid_front_matter", ""),
        ("---\ntitle: a\ntitle: b\n---\n", "duplicate_key", "title"),
        ("---\ntitle: " + "[" * 3000 + "\n---\n", "invalid_yaml", ""),
        ("---\ntitle: x\npriority: " + "9" * 5000 + "\n---\n", "invalid_yaml", ""),
        ("---\ntitle: '" + "x" * 70_000 + "'\n---\n", "string_too_long", ""),
        ("---\ntitle: x\n---\n" + "x" * 1_100_000, "string_too_long", ""),
    ],
)
def test_manifest_document_level_errors(text: object, code: str, path: str) -> None:
    assert problems(parse_markdown, text) == [(path, code)]


def test_manifest_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_markdown("\n---\ntitle: x\npriority: [1\nchannel: a\n---\n")
    assert "line 5" in info.value.problems[0].message
    with pytest.raises(ValidationFailed) as info:
        parse_markdown("---\ntitle: a\nchannel: b\ntitle: c\n---\n")
    assert "line 4" in info.value.problems[0].message


def test_manifest_empty_front_matter_reports_missing_title() -> None:
    assert problems(parse_markdown, "---\n---\nbody") == [("title", "missing")]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("2024-01-01", "date"),
        ("2024-01-01T10:00:00Z", "date"),
        ("yes", "boolean"),
        ("12", "number"),
        ("1.5", "number"),
    ],
)
def test_manifest_yaml_non_string_scalars_are_type_errors(value: str, kind: str) -> None:
    for front in (f"title: {value}", f"title: x\nidempotencyKey: {value}"):
        with pytest.raises(ValidationFailed) as info:
            parse_markdown(doc(front))
        (problem,) = info.value.problems
        assert problem.code == "string_type"
        assert f"as a {kind}: put it in quotes" in problem.message
    assert parse_markdown(doc(f"title: '{value}'")).title == value


def test_manifest_yaml_alias_bomb_and_recursion_do_not_blow_up() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(9)
    ]
    found = problems(parse_markdown, doc("\n".join([*levels, "title: *j"])))
    assert ("title", "string_type") in found
    found = problems(parse_markdown, doc("title: &t [*t]\ncapabilities: &c [*c]"))
    assert found == [("title", "string_type"), ("capabilities[0]", "string_type")]


BODIES = [
    "",
    "plain",
    "# Heading\n\nText.\n",
    "```yaml\n---\ntitle: not front matter\n---\n```\n",
    "Above\n\n---\n\nBelow the rule\n",
    "---\nstarts with a rule\n",
    "\n\n\ntwo blank lines kept\n",
    "no trailing newline",
    "trailing spaces   \n\n\n",
    "crlf\r\nlines\r\n",
    "  indented first line\n",
    "unicode: é 日本 😀 \u2028 \x85\n",
    "{not: json front matter}\n",
    "+++\ntoml = 'no'\n+++\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_manifest_body_is_verbatim(body: str) -> None:
    # The one blank line after the closing --- is the separator, not part of the body.
    assert parse_markdown(f"---\ntitle: x\n---\n\n{body}").body == body
    assert parse_markdown(f"---\ntitle: x\n---\n{body}").body == body.removeprefix("\n")
    assert parse_markdown(f"---\r\ntitle: x\r\n---\r\n\r\n{body}").body == body


def test_manifest_front_matter_may_follow_blank_lines_and_a_bom() -> None:
    assert parse_markdown("\ufeff\n\n---\ntitle: x\n---\nb").body == "b"
    assert parse_markdown("---\ntitle: x\n---").body == ""


ROUND_TRIP: list[dict[str, Any]] = [
    {"title": "x"},
    {
        "title": "Full",
        "persona": "p",
        "capabilities": ["os:linux", "a.b/c+d"],
        "priority": 0,
        "budgetUsd": 0.1,
        "channel": "c-1",
        "deps": [J1, J2],
        "idempotencyKey": "k",
        "maxAttempts": 20,
        "leaseSeconds": 3600,
        "verify": "pytest -q && ruff check .",
        "body": "# T\n\n---\n```\n---\n```\n",
    },
    {"title": "any deps", "deps": {"mode": "any", "jobs": [J3]}},
    {"title": "2024-01-01", "idempotencyKey": "yes", "verify": "null", "body": "~"},
    {"title": "a: b # not a comment", "verify": "echo 'it''s' \"quoted\" \\ done"},
    {"title": "multi\nline\n---\ntitle", "verify": "set -e\nmake\n...\nmake test\n"},
    {"title": "- dash", "idempotencyKey": "&anchor *alias !tag %dir @at `tick`"},
    {"title": "{flow} [seq]", "verify": "|\n>\n"},
    {"title": "é 日本 😀", "idempotencyKey": "ключ é 日本 😀", "body": "\u2028\u2029\x85"},
    {"title": "ctrl \x07 \x1b \x00 chars", "verify": "\t\r\n\ufeff"},
    {"title": "t" * 200, "verify": "v " * 1000, "idempotencyKey": "k" * 200},
    {"title": "tiny budget", "budgetUsd": 5e-324},
    {"title": "big budget", "budgetUsd": 100000},
    {"title": "float budget", "budgetUsd": 1 / 3},
]

_ATOMS = [
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "---",
    "...",
    "#",
    ":",
    ": ",
    "- ",
    "'",
    '"',
    "\\",
    "{",
    "}",
    "[",
    "]",
    "&a",
    "*a",
    "!",
    "%",
    "@",
    "`",
    "|",
    ">",
    "?",
    "yes",
    "null",
    "~",
    "0x1f",
    "1e3",
    "2024-01-01",
    "\x85",
    "\u2028",
    "\ufeff",
    "\x00",
    "é",
    "日本",
    "😀",
    "<<",
]


def _random_fields(seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)

    def text(n: int) -> str:
        return "".join(
            rnd.choice(_ATOMS) if rnd.random() < 0.6 else rnd.choice("abcxyz019 ")
            for _ in range(rnd.randint(0, n))
        )

    fields: dict[str, Any] = {"title": text(12).strip()[:200].strip() or "t", "body": text(40)}
    if rnd.random() < 0.5:
        fields["verify"] = text(20) or "v"
    key = text(10)
    if key and key.isprintable():
        fields["idempotencyKey"] = key
    if rnd.random() < 0.5:
        fields["budgetUsd"] = round(rnd.uniform(0, 500), rnd.randint(0, 6))
    if rnd.random() < 0.5:
        fields["deps"] = {"mode": rnd.choice(["all", "any"]), "jobs": [J1, J3][: rnd.randint(1, 2)]}
    return fields


@pytest.mark.parametrize("fields", ROUND_TRIP + [_random_fields(seed) for seed in range(300)])
def test_manifest_render_round_trip(fields: dict[str, Any]) -> None:
    m = parse_json(fields)
    text = render_markdown(m)
    assert parse_markdown(text) == m
    assert render_markdown(parse_markdown(text)) == text
    assert parse_json(m.model_dump(mode="json")) == m


def test_manifest_render_omits_defaults_and_writes_budget_as_a_number() -> None:
    m = parse_json({"title": "x", "budget": {"estimateUsd": 2}, "deps": [J1], "body": "b\n"})
    assert render_markdown(m) == f"---\ntitle: x\nbudget: 2.0\ndeps:\n- {J1}\n---\n\nb\n"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"manifest": FULL}, parse_markdown(FULL)),
        ({"title": "x"}, Manifest(title="x")),
        ({"title": " x ", "body": "  keep  "}, Manifest(title="x", body="  keep  ")),
        (
            {"title": "x", "deps": {"mode": "any", "jobs": [J1]}, "budget": 1, "max_attempts": 4},
            Manifest(title="x", deps=Deps(mode="any", jobs=(J1,)), budgetUsd=1.0, maxAttempts=4),
        ),
    ],
)
def test_manifest_json_forms(obj: dict[str, Any], expected: Manifest) -> None:
    assert parse_json(obj) == expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2], [("", "not_an_object")]),
        ("---\ntitle: x\n---\n", [("", "not_an_object")]),
        (None, [("", "not_an_object")]),
        ({"manifest": 3}, [("manifest", "string_type")]),
        ({"manifest": "---\ntitle: x\n---\n", "priority": 3}, [("priority", "unknown_field")]),
        (
            {"manifest": "---\npriority: 11\n---\n"},
            [("title", "missing"), ("priority", "less_than_equal")],
        ),
        ({"manifest": ""}, [("", "empty")]),
        ({}, [("title", "missing")]),
        ({"title": "x", "priority": "5"}, [("priority", "int_type")]),
        ({"title": "x", "priority": 5.0}, [("priority", "int_type")]),
        ({"title": "x", "budget": True}, [("budget", "float_type")]),
        ({"title": "x", "body": None}, [("body", "string_type")]),
        ({"title": "x", "body": "\ud800"}, [("body", "string_unicode")]),
        (
            {"title": "a\ud800b", "verify": "\udfff"},
            [("title", "string_unicode"), ("verify", "string_unicode")],
        ),
        ({"title": "x", "idempotencyKey": "\ud800"}, [("idempotencyKey", "string_unicode")]),
        (
            {"title": "x", "capabilities": ("a", "B")},
            [("capabilities[1]", "string_pattern_mismatch")],
        ),
        (
            {"title": "x", "deps": {"jobs": [J1], "mode": "any", "x": 1}},
            [("deps.x", "unknown_field")],
        ),
    ],
)
def test_manifest_json_errors(obj: object, expected: list[tuple[str, str]]) -> None:
    assert problems(parse_json, obj) == expected


def test_manifest_model_validate_checks_deps_given_as_a_model() -> None:
    with pytest.raises(ValueError, match="job id"):
        Manifest(title="x", deps=Deps(jobs=("nope",)))


PROFILE = """---
engine: claude
capabilities: [engine:claude, python]
description: "  Reviews carefully.  "
---

You are a careful reviewer.

---

Never merge without tests.
"""


@pytest.mark.parametrize(
    ("parse", "arg", "expected"),
    [
        (
            parse_profile_markdown,
            PROFILE,
            ProfileSpec(
                preamble="You are a careful reviewer.\n\n---\n\nNever merge without tests.\n",
                engine="claude",
                capabilities=("engine:claude", "python"),
                description="Reviews carefully.",
            ),
        ),
        (parse_profile_markdown, "Just a preamble.\n", ProfileSpec(preamble="Just a preamble.\n")),
        (parse_profile_json, {"profile": "Be brief."}, ProfileSpec(preamble="Be brief.")),
        (
            parse_profile_json,
            {"preamble": "Be brief.", "engine": "codex", "capabilities": ["os:linux"]},
            ProfileSpec(preamble="Be brief.", engine="codex", capabilities=("os:linux",)),
        ),
    ],
)
def test_manifest_profile_parses(parse: Any, arg: object, expected: ProfileSpec) -> None:
    profile = parse(arg)
    assert profile == expected
    assert parse_profile_markdown(render_profile_markdown(profile)) == profile


@pytest.mark.parametrize(
    ("parse", "arg", "expected"),
    [
        (parse_profile_markdown, "---\nengine: claude\n---\n", [("preamble", "missing")]),
        (parse_profile_markdown, "---\nengine: claude\n---\n \n\n", [("preamble", "missing")]),
        (parse_profile_markdown, "", [("", "empty")]),
        (parse_profile_markdown, "---\nengine: x\n", [("", "unclosed_front_matter")]),
        (
            parse_profile_markdown,
            doc("engine: Claude", "p"),
            [("engine", "string_pattern_mismatch")],
        ),
        (
            parse_profile_markdown,
            doc(f"engine: {'e' * 33}", "p"),
            [("engine", "string_pattern_mismatch")],
        ),
        (
            parse_profile_markdown,
            doc("capabilities: [A]", "p"),
            [("capabilities[0]", "string_pattern_mismatch")],
        ),
        (
            parse_profile_markdown,
            doc("name: x\nmodel: y", "p"),
            [("name", "unknown_field"), ("model", "unknown_field")],
        ),
        (parse_profile_markdown, doc("preamble: inline", "p"), [("preamble", "unknown_field")]),
        (
            parse_profile_markdown,
            doc("description: ''", "p"),
            [("description", "string_too_short")],
        ),
        (parse_profile_markdown, "x" * (64 * 1024 + 1), [("preamble", "string_too_long")]),
        (parse_profile_json, {"engine": "claude"}, [("preamble", "missing")]),
        (parse_profile_json, {"preamble": ""}, [("preamble", "missing")]),
        (parse_profile_json, {"preamble": "\ud800"}, [("preamble", "string_unicode")]),
        (parse_profile_json, {"profile": None}, [("profile", "string_type")]),
        (parse_profile_json, ["x"], [("", "not_an_object")]),
    ],
)
def test_manifest_profile_errors(parse: Any, arg: object, expected: list[tuple[str, str]]) -> None:
    assert problems(parse, arg) == expected


@pytest.mark.parametrize("name", ["a", "reviewer", "senior-dev-2", "0x", "a" * 63])
def test_manifest_profile_name_valid(name: str) -> None:
    assert validate_profile_name(name) == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "string_pattern_mismatch"),
        ("Reviewer", "string_pattern_mismatch"),
        ("-x", "string_pattern_mismatch"),
        ("a_b", "string_pattern_mismatch"),
        ("a" * 64, "string_pattern_mismatch"),
        ("ok\n", "string_pattern_mismatch"),
        (7, "string_type"),
    ],
)
def test_manifest_profile_name_invalid(name: object, code: str) -> None:
    assert problems(validate_profile_name, name) == [("name", code)]


def test_manifest_validation_failed_carries_problems() -> None:
    error = ValidationFailed([Problem("a", "x", "bad a"), Problem("", "y", "bad doc")])
    assert error.message == "a: bad a; bad doc"
    assert error.details == {
        "problems": [
            {"path": "a", "code": "x", "message": "bad a"},
            {"path": "", "code": "y", "message": "bad doc"},
        ]
    }
    with pytest.raises(ValueError):
        ValidationFailed([])


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seats: int = Field(ge=1)
    tags: list[str] = []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"seats": 0}, [("seats", "greater_than_equal")]),
        ({"seats": 1, "tags": ["a", 2]}, [("tags[1]", "string_type")]),
        ({"seats": 1, "max_seats": 2}, [("max_seats", "unknown_field")]),
        ({}, [("seats", "missing")]),
    ],
)
def test_manifest_problems_from_any_pydantic_error(
    data: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValidationError) as info:
        _Request.model_validate(data)
    assert [(p.path, p.code) for p in problems_from(info.value)] == expected


def test_manifest_problems_from_names_manifest_keys_in_camel_case() -> None:
    with pytest.raises(ValidationError) as info:
        Manifest.model_validate(
            {"title": "x", "max_attempts": 0, "budget_usd": {"estimate_usd": -1}}
        )
    assert [(p.path, p.code) for p in problems_from(info.value)] == [
        ("budgetUsd.estimateUsd", "greater_than_equal"),
        ("maxAttempts", "greater_than_equal"),
    ]


# --- repository and per-attempt limits ------------------------------------------------


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/acme/app.git",
        "ssh://git@github.com/acme/app.git",
        "git@github.com:acme/app.git",
        "file:///srv/git/app.git",
    ],
)
def test_manifest_repo_accepts_git_urls_and_round_trips(repo: str) -> None:
    fields = {"title": "t", "repo": repo, "base": "release/1.x", "pr": True}
    m = parse_json({**fields, "timeoutSeconds": 10, "maxCostUsd": 2})
    assert (m.repo, m.base, m.pr, m.timeoutSeconds, m.maxCostUsd) == (
        repo,
        "release/1.x",
        True,
        10,
        2.0,
    )
    assert parse_markdown(render_markdown(m)) == m


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"repo": "https://user:token@github.com/a/b.git"}, [("repo", "invalid")]),
        ({"repo": "https://token@github.com/a/b.git"}, [("repo", "invalid")]),
        ({"repo": "ssh://git:secret@host/a.git"}, [("repo", "invalid")]),
        ({"repo": "http://github.com/a/b.git"}, [("repo", "invalid")]),
        ({"repo": "https://github.com/a b"}, [("repo", "invalid")]),
        ({"repo": "https://" + "a" * 2050}, [("repo", "string_too_long")]),
        ({"repo": "not a url"}, [("repo", "invalid")]),
        ({"base": "a..b"}, [("base", "invalid")]),
        ({"base": "-rf"}, [("base", "invalid")]),
        ({"base": "x.lock"}, [("base", "invalid")]),
        ({"base": "b" * 256}, [("base", "string_too_long")]),
        ({"pr": "yes"}, [("pr", "bool_type")]),
        ({"timeoutSeconds": 9}, [("timeoutSeconds", "greater_than_equal")]),
        ({"timeoutSeconds": 86_401}, [("timeoutSeconds", "less_than_equal")]),
        ({"timeoutSeconds": 10.5}, [("timeoutSeconds", "int_type")]),
        ({"maxCostUsd": 0}, [("maxCostUsd", "greater_than")]),
        ({"maxCostUsd": 100_001}, [("maxCostUsd", "less_than_equal")]),
        ({"max_cost_usd": 1, "maxCostUsd": 1}, [("maxCostUsd", "duplicate_field")]),
    ],
)
def test_manifest_repo_and_limits_errors(
    fields: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert problems(parse_json, {"title": "t", **fields}) == expected


def test_manifest_repo_credentials_are_never_echoed() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_json({"title": "t", "repo": "https://user:s3cret@example.com/r.git"})
    assert "s3cret" not in info.value.message
