"""Job manifests and persona profiles: markdown with YAML front matter, parsed and checked.

A manifest is what an operator submits: front matter (title, persona, capabilities, priority,
budget, channel, deps, ...) and a markdown body, the agent's instructions. A profile is a
persona's preamble (its markdown body) with an engine and capabilities in the front matter.

Every problem in a document is reported at once, each with a path in the document
(``capabilities[1]``, ``budget.estimateUsd``; ``""`` for the whole document) and a
machine-readable code, so an operator fixes a manifest in one round trip.

The document is split here and its front matter read with PyYAML's safe loader (a general
front-matter library would strip the body, which must stay verbatim, silently ignore front
matter that is not a mapping or is never closed, sniff JSON/TOML, and swallow blank lines
after the closing ``---``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet.domain.models import Deps, ReviewSpec
from fleet.errors import Problem, ValidationFailed

__all__ = [
    "CAPABILITY_PATTERN",
    "ENGINE_PATTERN",
    "JOB_ID_PATTERN",
    "PROFILE_NAME_PATTERN",
    "Manifest",
    "ProfileSpec",
    "parse_json",
    "parse_markdown",
    "parse_profile_json",
    "parse_profile_markdown",
    "problems_from",
    "render_markdown",
    "render_profile_markdown",
    "validate_profile_name",
]

PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
CAPABILITY_PATTERN = r"^[a-z0-9][a-z0-9._/+-]*(:[a-z0-9][a-z0-9._/+-]*)?$"
ENGINE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
JOB_ID_PATTERN = r"^j[0-9a-z]{26}$"

MAX_TITLE_CHARS = 200
MAX_CAPABILITIES = 32
MAX_CAPABILITY_CHARS = 128
MAX_BUDGET_USD = 100_000
MAX_DEPS = 100
MAX_KEY_CHARS = 200
MAX_VERIFY_CHARS = 2000
MAX_BODY_BYTES = 256 * 1024
MAX_REVIEW_APPROVALS = 5
MAX_REVIEW_ROUNDS = 10
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 1000
MAX_REPO_CHARS = 2048
MAX_BRANCH_CHARS = 255
MIN_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 86_400
# Read before any YAML is parsed: a cheap bound on the work one document can cause.
MAX_DOCUMENT_CHARS = 1024 * 1024
MAX_FRONT_MATTER_CHARS = 64 * 1024

_NAME = re.compile(PROFILE_NAME_PATTERN)
_CAPABILITY = re.compile(CAPABILITY_PATTERN)
_JOB_ID = re.compile(JOB_ID_PATTERN)


# --- field types ----------------------------------------------------------------------


def _error(code: str, message: str) -> PydanticCustomError:
    # The message is passed as a template with no context, so braces in user input are safe.
    return PydanticCustomError(code, message)


def _list_only(value: Any) -> Any:
    """Sequences come as lists (YAML/JSON arrays). A YAML !!set has no order, a string is one
    item written without brackets: both are refused rather than guessed at."""
    if isinstance(value, list | tuple):
        return value
    hint = f", e.g. [{value}]" if isinstance(value, str) and value else ""
    raise _error("list_type", f"should be a list{hint}")


def _capability(value: str) -> str:
    if len(value) > MAX_CAPABILITY_CHARS:
        raise _error(
            "string_too_long", f"a capability has at most {MAX_CAPABILITY_CHARS} characters"
        )
    if not _CAPABILITY.fullmatch(value):
        if _CAPABILITY.fullmatch(value.lower()):
            hint = f"; capabilities are lower-case: use {value.lower()!r}"
        elif _CAPABILITY.fullmatch(value.strip().lower()):
            hint = f"; use {value.strip().lower()!r}"
        else:
            hint = ""
        raise _error(
            "string_pattern_mismatch",
            f"capability {_show(value)} should be 'name' or 'kind:name' "
            f"(lower-case letters, digits and . _ / + -){hint}",
        )
    return value


def _show(value: object, limit: int = 60) -> str:
    """A value quoted in a message, cut short: messages never echo a whole document."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dedupe(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _job_id(value: str) -> str:
    if not _JOB_ID.fullmatch(value):
        raise _error(
            "string_pattern_mismatch",
            f"{_show(value)} is not a job id ('j' and 26 lower-case letters or digits)",
        )
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise _error("string_not_printable", "must contain only printable characters")
    return value


def _unicode(value: str) -> str:
    """Text must be encodable: a lone surrogate (a JSON "\\ud800" escape) cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _error("string_unicode", "must be valid Unicode text (no lone surrogates)") from None
    return value


def _max_bytes(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value.encode("utf-8")) > limit:  # after _unicode
            raise _error("string_too_long", f"must be at most {limit // 1024} KiB (UTF-8)")
        return value

    return check


_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//).+$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)$")
_REPO_SCHEMES = ("https", "ssh", "file")


def _repo(value: str) -> str:
    """A git URL the factory can clone with the machine's own credentials: https, ssh,
    scp-like ``git@host:path`` or ``file://``. Never one carrying a credential: the
    coordinator stores and hands out manifests, it must not hold git secrets."""
    if len(value) > MAX_REPO_CHARS:
        raise _error("string_too_long", f"a repository URL has at most {MAX_REPO_CHARS} characters")
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise _error("invalid", "a repository URL has no whitespace or control characters")
    url = _URL.match(value)
    if url is None:
        if _SCP_LIKE.match(value):
            return value
        raise _error(
            "invalid",
            f"{_show(value)} is not a git URL (https://, ssh://, git@host:path or file://)",
        )
    scheme, authority = url["scheme"].lower(), url["authority"]
    if scheme not in _REPO_SCHEMES:
        raise _error(
            "invalid",
            f"scheme {scheme!r} is not supported: use https://, ssh://, git@host:path or file://",
        )
    userinfo = authority.rpartition("@")[0] if "@" in authority else None
    # https user names are tokens in practice; an ssh user name alone (git@) is no secret.
    if userinfo is not None and (scheme == "https" or ":" in userinfo):
        raise _error(
            "invalid",
            "a repository URL must not carry credentials: the factory uses its machine's own "
            "(credential helper, SSH agent)",
        )
    if scheme != "file" and not authority.rpartition("@")[2]:
        raise _error("invalid", f"{_show(value)} names no host")
    return value


_BAD_REF = re.compile(r"(\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\])")


def _branch(value: str) -> str:
    """A valid git branch name (the rules of ``git check-ref-format --branch``)."""
    if (
        not value
        or _BAD_REF.search(value)
        or value == "@"
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or "/." in value
        or ".lock/" in value
    ):
        raise _error("invalid", f"{_show(value)} is not a valid git branch name")
    return value


def _str(*, min_length: int | None = None, max_length: int | None = None) -> Any:
    return StringConstraints(strict=True, min_length=min_length, max_length=max_length)


Title = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=MAX_TITLE_CHARS),
    AfterValidator(_unicode),
]
Name = Annotated[str, StringConstraints(strict=True, pattern=PROFILE_NAME_PATTERN)]
Engine = Annotated[str, StringConstraints(strict=True, pattern=ENGINE_PATTERN)]
Capability = Annotated[str, _str(), AfterValidator(_capability)]
Capabilities = Annotated[
    tuple[Capability, ...],
    Field(max_length=MAX_CAPABILITIES),
    BeforeValidator(_list_only),
    AfterValidator(_dedupe),
]
JobId = Annotated[str, _str(), AfterValidator(_job_id)]
JobIds = Annotated[tuple[JobId, ...], Field(max_length=MAX_DEPS), BeforeValidator(_list_only)]
Usd = Annotated[float, Field(strict=True, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]
IdempotencyKey = Annotated[
    str, _str(min_length=1, max_length=MAX_KEY_CHARS), AfterValidator(_printable)
]
Verify = Annotated[str, _str(min_length=1, max_length=MAX_VERIFY_CHARS), AfterValidator(_unicode)]
Body = Annotated[str, _str(), AfterValidator(_unicode), AfterValidator(_max_bytes(MAX_BODY_BYTES))]
Repo = Annotated[str, _str(), AfterValidator(_repo)]
Branch = Annotated[
    str, _str(max_length=MAX_BRANCH_CHARS), AfterValidator(_unicode), AfterValidator(_branch)
]
TimeoutSeconds = Annotated[int, Field(strict=True, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)]
MaxCostUsd = Annotated[float, Field(strict=True, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]


def _aliases(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _BudgetSpec(_Strict):
    """The mapping form of ``budget``."""

    estimateUsd: Usd = Field(validation_alias=_aliases("estimateUsd", "estimate_usd"))


class _DepsSpec(_Strict):
    """The mapping form of ``deps``."""

    mode: Literal["all", "any"] = "all"
    jobs: JobIds


class _ReviewSpec(_Strict):
    """The mapping form of ``review``."""

    approvals: Annotated[int, Field(strict=True, ge=1, le=MAX_REVIEW_APPROVALS)] = 1
    distinctKind: Annotated[bool, Field(strict=True)] = Field(
        default=False, validation_alias=_aliases("distinctKind", "distinct_kind")
    )
    maxRounds: Annotated[int, Field(strict=True, ge=1, le=MAX_REVIEW_ROUNDS)] = Field(
        default=3, validation_alias=_aliases("maxRounds", "max_rounds")
    )


_BUDGET_SPEC = TypeAdapter(_BudgetSpec)
_REVIEW_SPEC = TypeAdapter(_ReviewSpec)
_DEPS_SPEC = TypeAdapter(_DepsSpec)
_JOB_IDS = TypeAdapter(JobIds)


def _budget(value: Any) -> Any:
    """``budget: 2.5`` or ``budget: {estimateUsd: 2.5}``, stored as the number."""
    if isinstance(value, Mapping):
        # A ValidationError raised here keeps its locations, under this field's.
        return _BUDGET_SPEC.validate_python(dict(value)).estimateUsd
    return value


def _deps(value: Any) -> Deps | None:
    """``deps: [ids]`` (all of them) or ``deps: {mode: any, jobs: [ids]}``, as a ``Deps``.
    No jobs means no dependencies (``None``): an empty "any" could never be satisfied."""
    if value is None:
        return None
    if isinstance(value, Deps):
        value = {"mode": value.mode, "jobs": list(value.jobs)}
    jobs_loc: tuple[str, ...]
    if isinstance(value, Mapping):
        spec = _DEPS_SPEC.validate_python(dict(value))
        mode, jobs, jobs_loc = spec.mode, spec.jobs, ("jobs",)
    elif isinstance(value, list | tuple):
        mode, jobs, jobs_loc = "all", _JOB_IDS.validate_python(value), ()
    else:
        raise _error("list_type", "should be a list of job ids, or {mode, jobs}")
    seen: set[str] = set()
    duplicates: list[InitErrorDetails] = []
    for index, job_id in enumerate(jobs):
        if job_id in seen:
            duplicates.append(
                {
                    "type": _error("duplicate", f"job {job_id} is listed more than once"),
                    "loc": (*jobs_loc, index),
                    "input": job_id,
                }
            )
        seen.add(job_id)
    if duplicates:
        raise ValidationError.from_exception_data("deps", duplicates)
    return Deps(mode=mode, jobs=jobs) if jobs else None


def _review(value: Any) -> ReviewSpec | None:
    """``review: 2`` (two approvals) or ``review: {approvals, distinctKind, maxRounds}``."""
    if value is None:
        return None
    if isinstance(value, ReviewSpec):
        return value
    if isinstance(value, Mapping):
        spec = _REVIEW_SPEC.validate_python(dict(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        spec = _REVIEW_SPEC.validate_python({"approvals": value})
    else:
        raise _error(
            "review_type",
            "should be a number of approvals, or {approvals, distinctKind, maxRounds}",
        )
    return ReviewSpec(
        approvals=spec.approvals, distinctKind=spec.distinctKind, maxRounds=spec.maxRounds
    )


# --- the manifest ---------------------------------------------------------------------


class Manifest(_Strict):
    """A job as submitted. Field names match ``fleet.domain.models.Job``; input also accepts
    ``budget`` (a number or ``{estimateUsd}``), ``deps`` as a plain list, and snake_case
    spellings of the multi-word keys. Build one with ``parse_markdown`` or ``parse_json``."""

    title: Title
    persona: Name | None = None
    capabilities: Capabilities = ()
    priority: Annotated[int, Field(strict=True, ge=0, le=9)] = 5  # 9 is the most urgent
    budgetUsd: Annotated[Usd | None, BeforeValidator(_budget)] = Field(
        default=None, validation_alias=_aliases("budgetUsd", "budget", "budget_usd")
    )
    channel: Name | None = None
    deps: Annotated[Deps | None, BeforeValidator(_deps)] = None
    idempotencyKey: IdempotencyKey | None = Field(
        default=None, validation_alias=_aliases("idempotencyKey", "idempotency_key")
    )
    maxAttempts: Annotated[int, Field(strict=True, ge=1, le=20)] = Field(
        default=3, validation_alias=_aliases("maxAttempts", "max_attempts")
    )
    leaseSeconds: Annotated[int, Field(strict=True, ge=30, le=3600)] = Field(
        default=300, validation_alias=_aliases("leaseSeconds", "lease_seconds")
    )
    verify: Verify | None = None
    review: Annotated[ReviewSpec | None, BeforeValidator(_review)] = None
    repo: Repo | None = None
    base: Branch | None = None
    pr: Annotated[bool, Field(strict=True)] = False
    timeoutSeconds: TimeoutSeconds | None = Field(
        default=None, validation_alias=_aliases("timeoutSeconds", "timeout_seconds")
    )
    maxCostUsd: MaxCostUsd | None = Field(
        default=None, validation_alias=_aliases("maxCostUsd", "max_cost_usd")
    )
    body: Body = ""


def _preamble(value: str) -> str:
    if not value.strip():
        raise _error("missing", "a profile needs a preamble (the markdown body)")
    return value


class ProfileSpec(_Strict):
    """A persona profile as submitted; the coordinator names and versions it."""

    preamble: Annotated[
        str,
        _str(),
        AfterValidator(_unicode),
        AfterValidator(_preamble),
        AfterValidator(_max_bytes(MAX_PREAMBLE_BYTES)),
    ]
    engine: Engine | None = None
    capabilities: Capabilities = ()
    description: (
        Annotated[
            str,
            StringConstraints(
                strict=True, strip_whitespace=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS
            ),
            AfterValidator(_unicode),
        ]
        | None
    ) = None


def validate_profile_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValidationFailed.one("name", "string_type", "a profile name should be a string")
    if not _NAME.fullmatch(name):
        raise ValidationFailed.one(
            "name",
            "string_pattern_mismatch",
            f"profile name {_show(name)} should be 1-63 lower-case letters, digits and '-', "
            "starting with a letter or digit",
        )
    return name


# --- markdown -------------------------------------------------------------------------

_OPEN = re.compile(r"\A\ufeff?(?:[ \t]*\r?\n)*-{3,}[ \t]*(?:\r?\n|\Z)")
_CLOSE = re.compile(r"^-{3,}[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


@dataclass(frozen=True)
class _Split:
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


def _split(text: object) -> _Split:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed.one("", "empty", "the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValidationFailed.one(
            "", "string_too_long", f"the document is longer than {MAX_DOCUMENT_CHARS} characters"
        )
    opening = _OPEN.match(text)
    if opening is None:
        return _Split(None, text)
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
    return _Split(data, body)


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
            f"the front matter should be a mapping of keys to values, not a {_kind(data)}",
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


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, date):
        return "date"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    return "string" if isinstance(value, str) else type(value).__name__


def parse_markdown(text: str) -> Manifest:
    """A manifest from markdown: YAML front matter (at least a title) and the body."""
    split = _split(text)
    if split.front_matter is None:
        raise ValidationFailed.one(
            "",
            "missing_front_matter",
            "a manifest starts with YAML front matter between '---' lines (at least a title)",
        )
    problems = _reserved(split.front_matter, "body")
    return _validate(
        Manifest, {**split.front_matter, "body": split.body}, problems, yaml_source=True
    )


def parse_json(obj: object) -> Manifest:
    """A manifest from a JSON object: ``{"manifest": "<markdown>"}``, or the fields and
    ``body`` (what ``Manifest.model_dump(mode="json")`` gives also parses)."""
    data = _object(obj)
    if "manifest" in data:
        text = _wrapped(data, "manifest")
        return parse_markdown(text)
    return _validate(Manifest, data, [], yaml_source=False)


def render_markdown(manifest: Manifest) -> str:
    """Front matter (fields that differ from their defaults) and the body, verbatim:
    ``parse_markdown(render_markdown(m)) == m``."""
    meta: dict[str, Any] = {"title": manifest.title}
    if manifest.persona is not None:
        meta["persona"] = manifest.persona
    if manifest.capabilities:
        meta["capabilities"] = list(manifest.capabilities)
    if manifest.priority != 5:
        meta["priority"] = manifest.priority
    if manifest.budgetUsd is not None:
        meta["budget"] = manifest.budgetUsd
    if manifest.channel is not None:
        meta["channel"] = manifest.channel
    if manifest.deps is not None:
        jobs = list(manifest.deps.jobs)
        meta["deps"] = jobs if manifest.deps.mode == "all" else {"mode": "any", "jobs": jobs}
    for name in (
        "idempotencyKey",
        "maxAttempts",
        "leaseSeconds",
        "verify",
        "repo",
        "base",
        "pr",
        "timeoutSeconds",
        "maxCostUsd",
    ):
        value = getattr(manifest, name)
        if value != Manifest.model_fields[name].default:
            meta[name] = value
    if manifest.review is not None:
        review = manifest.review
        shorthand = review == ReviewSpec(approvals=review.approvals)
        meta["review"] = review.approvals if shorthand else review.model_dump(mode="json")
    return _render(meta, manifest.body)


def parse_profile_markdown(text: str) -> ProfileSpec:
    """A profile from markdown: optional front matter (engine, capabilities, description);
    the body is the preamble."""
    split = _split(text)
    meta = split.front_matter or {}
    problems = _reserved(meta, "preamble")
    return _validate(ProfileSpec, {**meta, "preamble": split.body}, problems, yaml_source=True)


def parse_profile_json(obj: object) -> ProfileSpec:
    """A profile from a JSON object: ``{"profile": "<markdown>"}`` or the fields and
    ``preamble``."""
    data = _object(obj)
    if "profile" in data:
        return parse_profile_markdown(_wrapped(data, "profile"))
    return _validate(ProfileSpec, data, [], yaml_source=False)


def render_profile_markdown(profile: ProfileSpec) -> str:
    meta: dict[str, Any] = {}
    if profile.engine is not None:
        meta["engine"] = profile.engine
    if profile.capabilities:
        meta["capabilities"] = list(profile.capabilities)
    if profile.description is not None:
        meta["description"] = profile.description
    return _render(meta, profile.preamble)


# libyaml's dumper where it is built in (it escapes line separators such as U+2028 and NEL,
# which the pure-Python one folds into the text): the same text on every machine with it.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _render(meta: dict[str, Any], body: str) -> str:
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


def _object(obj: object) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValidationFailed.one("", "not_an_object", f"expected a JSON object, not {_kind(obj)}")
    return dict(obj)


def _wrapped(data: dict[str, Any], key: str) -> str:
    problems = [_unknown("", str(other), [key]) for other in data if other != key]
    text = data[key]
    if not isinstance(text, str):
        problems.insert(0, Problem(key, "string_type", f"{key} should be a markdown string"))
    if problems:
        raise ValidationFailed(problems)
    return str(text)


def _reserved(front_matter: dict[str, Any], key: str) -> list[Problem]:
    if key in front_matter:
        return [
            Problem(
                key,
                "unknown_field",
                f"the {key} is the markdown after the front matter, not a front matter key",
            )
        ]
    return []


# --- pydantic errors to problems ------------------------------------------------------


def _spellings(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted key of a model, mapped to the field it sets."""
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [name]
        for choice in choices:
            if isinstance(choice, str):
                out[choice] = name
    return out


# Which model reads the mapping at each location, to name keys and spot unknown ones.
_CONTEXTS: dict[type[BaseModel], dict[tuple[str, ...], dict[str, str]]] = {
    Manifest: {
        (): _spellings(Manifest),
        ("budget",): _spellings(_BudgetSpec),
        ("budgetUsd",): _spellings(_BudgetSpec),
        ("budget_usd",): _spellings(_BudgetSpec),
        ("deps",): _spellings(_DepsSpec),
        ("review",): _spellings(_ReviewSpec),
    },
    ProfileSpec: {(): _spellings(ProfileSpec)},
}
_CONTEXTS_BY_TITLE = {model.__name__: contexts for model, contexts in _CONTEXTS.items()}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


M = TypeVar("M", bound=BaseModel)


def problems_from(exc: ValidationError, *, yaml_source: bool = False) -> list[Problem]:
    """Any pydantic error as problems: ``a.b[2]`` paths, pydantic's error types as codes
    (``extra_forbidden`` is ``unknown_field``). Keys of this module's models are named in
    camelCase, whichever spelling was used."""
    contexts = _CONTEXTS_BY_TITLE.get(exc.title, {})
    return [_problem(err, contexts, yaml_source) for err in exc.errors()]


def _validate(
    model: type[M], data: dict[str, Any], problems: list[Problem], *, yaml_source: bool
) -> M:
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        problems = problems + problems_from(exc, yaml_source=yaml_source)
        raise ValidationFailed(problems) from None
    if problems:
        raise ValidationFailed(problems)
    return result


def _problem(
    err: Any, contexts: dict[tuple[str, ...], dict[str, str]], yaml_source: bool
) -> Problem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    code: str = err["type"]
    message: str = err["msg"]
    path = ""
    for depth, part in enumerate(loc):
        if isinstance(part, int) and not (code == "invalid_key" and depth == len(loc) - 1):
            path += f"[{part}]"
            continue
        spellings = contexts.get(tuple(str(p) for p in loc[:depth]), {})
        key = str(part)
        last = depth == len(loc) - 1
        if last and code == "extra_forbidden":
            if key in spellings:
                # Another spelling of the same field was also given (max_attempts + maxAttempts).
                key = _camel(key)
                code, message = "duplicate_field", "given more than once (in two spellings)"
            else:
                return _unknown(path, key, list(spellings))
        elif key in spellings:
            key = _camel(key)
        path = _child(path, key)
    value = err.get("input")
    if code == "string_type" and yaml_source and isinstance(value, date | int | float):
        message = f"{message}; YAML read {_show(value)} as a {_kind(value)}: put it in quotes"
    elif code == "invalid_key":
        message = f"keys should be strings, not {_kind(loc[-1])}"
    return Problem(path, code, message)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(parent: str, key: str, known: list[str]) -> Problem:
    camel = sorted({_camel(k) for k in known})
    close = difflib.get_close_matches(key, camel, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return Problem(_child(parent, key), "unknown_field", f"unknown field {_show(key)}{hint}")
