"""Validation problems: pydantic errors as paths and codes an operator can act on.

Every problem in a document is reported at once, each with a path in the document
(``capabilities[1]``, ``budget.estimateUsd``; ``""`` for the whole document) and a
machine-readable code, so an operator fixes a manifest in one round trip. Keys are named in
camelCase whichever accepted spelling was used, and an unknown key gets a "did you mean".

Which keys a model accepts at each location is its ``Contexts``: the caller that validates
a model passes them, so this module knows no model.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import date
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ValidationError

from fleet.errors import Problem, ValidationFailed

# Location in the document (keys only) -> every accepted key there -> the field it sets.
Contexts = dict[tuple[str, ...], dict[str, str]]

M = TypeVar("M", bound=BaseModel)


def show(value: object, limit: int = 60) -> str:
    """A value quoted in a message, cut short: messages never echo a whole document."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(value: object) -> str:
    """What a value is, in the words of JSON and YAML."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, date):
        return "date"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    return "string" if isinstance(value, str) else type(value).__name__


def spellings(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted key of a model, mapped to the field it sets."""
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [name]
        for choice in choices:
            if isinstance(choice, str):
                out[choice] = name
    return out


def problems_in(
    exc: ValidationError, contexts: Contexts, *, yaml_source: bool = False
) -> list[Problem]:
    """A pydantic error as problems: ``a.b[2]`` paths, pydantic's error types as codes
    (``extra_forbidden`` is ``unknown_field``), keys known to ``contexts`` in camelCase."""
    return [_problem(err, contexts, yaml_source) for err in exc.errors()]


def validate(
    model: type[M],
    data: dict[str, Any],
    problems: list[Problem],
    *,
    contexts: Contexts,
    yaml_source: bool,
) -> M:
    """``model`` from ``data``, or ``ValidationFailed`` with ``problems`` (found earlier,
    e.g. a reserved key) followed by every problem the model finds."""
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        problems = problems + problems_in(exc, contexts, yaml_source=yaml_source)
        raise ValidationFailed(problems) from None
    if problems:
        raise ValidationFailed(problems)
    return result


def json_object(obj: object) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValidationFailed.one(
            "", "not_an_object", f"expected a JSON object, not {kind_of(obj)}"
        )
    return dict(obj)


def wrapped(data: dict[str, Any], key: str) -> str:
    """The markdown of ``{key: "<markdown>"}``, the only key such an object may have."""
    problems = [unknown("", str(other), [key]) for other in data if other != key]
    text = data[key]
    if not isinstance(text, str):
        problems.insert(0, Problem(key, "string_type", f"{key} should be a markdown string"))
    if problems:
        raise ValidationFailed(problems)
    return str(text)


def unknown(parent: str, key: str, known: list[str]) -> Problem:
    camel = sorted({_camel(k) for k in known})
    close = difflib.get_close_matches(key, camel, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return Problem(_child(parent, key), "unknown_field", f"unknown field {show(key)}{hint}")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _problem(err: Any, contexts: Contexts, yaml_source: bool) -> Problem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    code: str = err["type"]
    message: str = err["msg"]
    path = ""
    for depth, part in enumerate(loc):
        if isinstance(part, int) and not (code == "invalid_key" and depth == len(loc) - 1):
            path += f"[{part}]"
            continue
        accepted = contexts.get(tuple(str(p) for p in loc[:depth]), {})
        key = str(part)
        last = depth == len(loc) - 1
        if last and code == "extra_forbidden":
            if key in accepted:
                # Another spelling of the same field was also given (max_attempts + maxAttempts).
                key = _camel(key)
                code, message = "duplicate_field", "given more than once (in two spellings)"
            else:
                return unknown(path, key, list(accepted))
        elif key in accepted:
            key = _camel(key)
        path = _child(path, key)
    value = err.get("input")
    if code == "string_type" and yaml_source and isinstance(value, date | int | float):
        message = f"{message}; YAML read {show(value)} as a {kind_of(value)}: put it in quotes"
    elif code == "invalid_key":
        message = f"keys should be strings, not {kind_of(loc[-1])}"
    return Problem(path, code, message)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
