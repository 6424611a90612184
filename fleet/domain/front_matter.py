"""Markdown documents with YAML front matter: split into front matter and body, and back.

The document is split here and its front matter read with PyYAML's safe loader (a general
front-matter library would strip the body, which must stay verbatim, silently ignore front
matter that is not a mapping or is never closed, sniff JSON/TOML, and swallow blank lines
after the closing ``---``). A key given twice is an error, not last-one-wins.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import yaml

from fleet.domain.problems import kind_of
from fleet.errors import Problem, ValidationFailed

# Read before any YAML is parsed: a cheap bound on the work one document can cause.
MAX_DOCUMENT_CHARS = 1024 * 1024
MAX_FRONT_MATTER_CHARS = 64 * 1024

_OPEN = re.compile(r"\A\ufeff?(?:[ \t]*\r?\n)*-{3,}[ \t]*(?:\r?\n|\Z)")
_CLOSE = re.compile(r"^-{3,}[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


@dataclass(frozen=True)
class Split:
    front_matter: dict[str, Any] | None  # None: the document has no front matter
    body: str


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: Hashable, node: yaml.Node, mark: yaml.Mark) -> None:
        super().__init__("while constructing a mapping", node.start_mark, None, mark)
        self.key = key


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice is an error, not last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Typed, so that 1 and true (equal in Python) are different keys, as in YAML.
        seen: set[tuple[type, Hashable]] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            try:
                duplicate = (type(key), key) in seen
            except TypeError:  # a tuple holding something unhashable
                continue
            if duplicate:
                raise _DuplicateKey(key, node, key_node.start_mark)
            seen.add((type(key), key))
        return super().construct_mapping(node, deep=deep)


def split(text: object) -> Split:
    """The front matter (``None`` if there is none, ``{}`` if it is empty) and the body,
    verbatim but for the one blank line after the closing ``---``."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed.one("", "empty", "the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValidationFailed.one(
            "", "string_too_long", f"the document is longer than {MAX_DOCUMENT_CHARS} characters"
        )
    opening = _OPEN.match(text)
    if opening is None:
        return Split(None, text)
    closing = _CLOSE.search(text, opening.end())
    if closing is None:
        raise ValidationFailed.one(
            "", "unclosed_front_matter", "the front matter opened by '---' is never closed"
        )
    source = text[opening.end() : closing.start()]
    if len(source) > MAX_FRONT_MATTER_CHARS:
        raise ValidationFailed.one(
            "",
            "string_too_long",
            f"the front matter is longer than {MAX_FRONT_MATTER_CHARS} characters",
        )
    first_line = text.count("\n", 0, opening.end()) + 1  # 1-based line of the YAML
    data = _load_yaml(source, first_line)
    body = text[closing.end() :]
    # The blank line that conventionally follows the front matter is not part of the body.
    if body.startswith("\r\n"):
        body = body[2:]
    elif body.startswith("\n"):
        body = body[1:]
    return Split(data, body)


def _load_yaml(source: str, first_line: int) -> dict[str, Any]:
    try:
        data = yaml.load(source, Loader=_Loader)  # _Loader is a SafeLoader
    except _DuplicateKey as exc:
        line = f" (line {exc.problem_mark.line + first_line})" if exc.problem_mark else ""
        raise ValidationFailed.one(
            str(exc.key), "duplicate_key", f"given more than once{line}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ValidationFailed.one("", "invalid_yaml", _yaml_message(exc, first_line)) from exc
    except RecursionError as exc:
        raise ValidationFailed.one(
            "", "invalid_yaml", "invalid YAML in the front matter: nested too deeply"
        ) from exc
    except (ValueError, OverflowError) as exc:  # e.g. an integer too long to convert
        raise ValidationFailed.one(
            "", "invalid_yaml", f"invalid YAML in the front matter: {str(exc)[:200]}"
        ) from exc
    if data is None:
        return {}  # an empty front matter; the model reports what is missing
    if not isinstance(data, dict):
        raise ValidationFailed.one(
            "",
            "invalid_front_matter",
            f"the front matter should be a mapping of keys to values, not a {kind_of(data)}",
        )
    return data


def _yaml_message(exc: yaml.YAMLError, first_line: int) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "syntax error"
        if mark is not None:
            return (
                f"invalid YAML in the front matter at line {mark.line + first_line}, "
                f"column {mark.column + 1}: {what}"
            )
        return f"invalid YAML in the front matter: {what}"
    return f"invalid YAML in the front matter: {exc}"


def reserved(front_matter: dict[str, Any], key: str) -> list[Problem]:
    """``key`` (the body's field) may not be set in the front matter."""
    if key in front_matter:
        return [
            Problem(
                key,
                "unknown_field",
                f"the {key} is the markdown after the front matter, not a front matter key",
            )
        ]
    return []


# libyaml's dumper where it is built in (it escapes line separators such as U+2028 and NEL,
# which the pure-Python one folds into the text): the same text on every machine with it.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render(meta: dict[str, Any], body: str) -> str:
    """``meta`` as front matter, then the body: what ``split`` reads back."""
    # No line folding: long values stay on one line, so nothing depends on YAML's folding rules.
    front = (
        yaml.dump(
            meta,
            Dumper=_DUMPER,
            default_flow_style=False,
            allow_unicode=True,
            sort_keys=False,
            width=2**31 - 1,
        )
        .strip()
        .replace("\r\n", "\n")
        if meta
        else ""
    )
    return f"---\n{front}\n---\n\n{body}" if front else f"---\n---\n\n{body}"
