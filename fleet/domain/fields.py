"""The field types of manifests and profiles: patterns, limits and checked strings.

Each type refuses a bad value with a pydantic error whose code and message are meant for the
operator (``fleet.domain.problems`` turns them into problems); messages quote at most a
short piece of the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from fleet.domain.problems import show

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

PROFILE_NAME = re.compile(PROFILE_NAME_PATTERN)
CAPABILITY = re.compile(CAPABILITY_PATTERN)
_JOB_ID = re.compile(JOB_ID_PATTERN)


class Strict(BaseModel):
    """The base of every submitted model: frozen, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def field_error(code: str, message: str) -> PydanticCustomError:
    # The message is passed as a template with no context, so braces in user input are safe.
    return PydanticCustomError(code, message)


def _list_only(value: Any) -> Any:
    """Sequences come as lists (YAML/JSON arrays). A YAML !!set has no order, a string is one
    item written without brackets: both are refused rather than guessed at."""
    if isinstance(value, list | tuple):
        return value
    hint = f", e.g. [{value}]" if isinstance(value, str) and value else ""
    raise field_error("list_type", f"should be a list{hint}")


def _capability(value: str) -> str:
    if len(value) > MAX_CAPABILITY_CHARS:
        raise field_error(
            "string_too_long", f"a capability has at most {MAX_CAPABILITY_CHARS} characters"
        )
    if not CAPABILITY.fullmatch(value):
        if CAPABILITY.fullmatch(value.lower()):
            hint = f"; capabilities are lower-case: use {value.lower()!r}"
        elif CAPABILITY.fullmatch(value.strip().lower()):
            hint = f"; use {value.strip().lower()!r}"
        else:
            hint = ""
        raise field_error(
            "string_pattern_mismatch",
            f"capability {show(value)} should be 'name' or 'kind:name' "
            f"(lower-case letters, digits and . _ / + -){hint}",
        )
    return value


def _dedupe(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _job_id(value: str) -> str:
    if not _JOB_ID.fullmatch(value):
        raise field_error(
            "string_pattern_mismatch",
            f"{show(value)} is not a job id ('j' and 26 lower-case letters or digits)",
        )
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise field_error("string_not_printable", "must contain only printable characters")
    return value


def _unicode(value: str) -> str:
    """Text must be encodable: a lone surrogate (a JSON "\\ud800" escape) cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise field_error(
            "string_unicode", "must be valid Unicode text (no lone surrogates)"
        ) from None
    return value


def _max_bytes(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value.encode("utf-8")) > limit:  # after _unicode
            raise field_error("string_too_long", f"must be at most {limit // 1024} KiB (UTF-8)")
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
        raise field_error(
            "string_too_long", f"a repository URL has at most {MAX_REPO_CHARS} characters"
        )
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise field_error("invalid", "a repository URL has no whitespace or control characters")
    url = _URL.match(value)
    if url is None:
        if _SCP_LIKE.match(value):
            return value
        raise field_error(
            "invalid",
            f"{show(value)} is not a git URL (https://, ssh://, git@host:path or file://)",
        )
    scheme, authority = url["scheme"].lower(), url["authority"]
    if scheme not in _REPO_SCHEMES:
        raise field_error(
            "invalid",
            f"scheme {scheme!r} is not supported: use https://, ssh://, git@host:path or file://",
        )
    userinfo = authority.rpartition("@")[0] if "@" in authority else None
    # https user names are tokens in practice; an ssh user name alone (git@) is no secret.
    if userinfo is not None and (scheme == "https" or ":" in userinfo):
        raise field_error(
            "invalid",
            "a repository URL must not carry credentials: the factory uses its machine's own "
            "(credential helper, SSH agent)",
        )
    if scheme != "file" and not authority.rpartition("@")[2]:
        raise field_error("invalid", f"{show(value)} names no host")
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
        raise field_error("invalid", f"{show(value)} is not a valid git branch name")
    return value


def _preamble(value: str) -> str:
    if not value.strip():
        raise field_error("missing", "a profile needs a preamble (the markdown body)")
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
Preamble = Annotated[
    str,
    _str(),
    AfterValidator(_unicode),
    AfterValidator(_preamble),
    AfterValidator(_max_bytes(MAX_PREAMBLE_BYTES)),
]
Description = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS
    ),
    AfterValidator(_unicode),
]
