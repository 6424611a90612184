"""Job manifests: markdown with YAML front matter, parsed and checked.

A manifest is what an operator submits: front matter (title, persona, capabilities, priority,
budget, channel, deps, ...) and a markdown body, the agent's instructions. Every problem in a
document is reported at once, each with a path and a code, so an operator fixes a manifest in
one round trip.

This is the public module of manifests and profiles; its parts live beside it:
``fleet.domain.fields`` (patterns, limits, field types), ``fleet.domain.front_matter``
(splitting and rendering markdown), ``fleet.domain.problems`` (pydantic errors as problems)
and ``fleet.domain.profiles`` (persona profiles). Their public names are importable from
here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails

from fleet.domain import front_matter
from fleet.domain.fields import (
    CAPABILITY_PATTERN,
    ENGINE_PATTERN,
    JOB_ID_PATTERN,
    MAX_BODY_BYTES,
    MAX_BRANCH_CHARS,
    MAX_BUDGET_USD,
    MAX_CAPABILITIES,
    MAX_CAPABILITY_CHARS,
    MAX_DEPS,
    MAX_DESCRIPTION_CHARS,
    MAX_KEY_CHARS,
    MAX_PREAMBLE_BYTES,
    MAX_REPO_CHARS,
    MAX_REVIEW_APPROVALS,
    MAX_REVIEW_ROUNDS,
    MAX_TIMEOUT_SECONDS,
    MAX_TITLE_CHARS,
    MAX_VERIFY_CHARS,
    MIN_TIMEOUT_SECONDS,
    PROFILE_NAME_PATTERN,
    Body,
    Branch,
    Capabilities,
    Capability,
    Engine,
    IdempotencyKey,
    JobId,
    JobIds,
    MaxCostUsd,
    Name,
    Repo,
    Strict,
    TimeoutSeconds,
    Title,
    Usd,
    Verify,
    field_error,
)
from fleet.domain.front_matter import MAX_DOCUMENT_CHARS, MAX_FRONT_MATTER_CHARS
from fleet.domain.models import Deps, ReviewSpec
from fleet.domain.problems import (
    Contexts,
    json_object,
    problems_in,
    spellings,
    validate,
    wrapped,
)
from fleet.domain.profiles import (
    PROFILE_CONTEXTS,
    ProfileSpec,
    parse_profile_json,
    parse_profile_markdown,
    render_profile_markdown,
    validate_profile_name,
)
from fleet.errors import Problem, ValidationFailed

__all__ = [
    "CAPABILITY_PATTERN",
    "ENGINE_PATTERN",
    "JOB_ID_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_BRANCH_CHARS",
    "MAX_BUDGET_USD",
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY_CHARS",
    "MAX_DEPS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DOCUMENT_CHARS",
    "MAX_FRONT_MATTER_CHARS",
    "MAX_KEY_CHARS",
    "MAX_PREAMBLE_BYTES",
    "MAX_REPO_CHARS",
    "MAX_REVIEW_APPROVALS",
    "MAX_REVIEW_ROUNDS",
    "MAX_TIMEOUT_SECONDS",
    "MAX_TITLE_CHARS",
    "MAX_VERIFY_CHARS",
    "MIN_TIMEOUT_SECONDS",
    "PROFILE_NAME_PATTERN",
    "Body",
    "Branch",
    "Capabilities",
    "Capability",
    "Engine",
    "IdempotencyKey",
    "JobId",
    "JobIds",
    "Manifest",
    "MaxCostUsd",
    "Name",
    "ProfileSpec",
    "Repo",
    "TimeoutSeconds",
    "Title",
    "Usd",
    "Verify",
    "parse_json",
    "parse_markdown",
    "parse_profile_json",
    "parse_profile_markdown",
    "problems_from",
    "render_markdown",
    "render_profile_markdown",
    "validate_profile_name",
]


def _aliases(*names: str) -> AliasChoices:
    return AliasChoices(*names)


# --- the shorthand forms --------------------------------------------------------------


class _BudgetSpec(Strict):
    """The mapping form of ``budget``."""

    estimateUsd: Usd = Field(validation_alias=_aliases("estimateUsd", "estimate_usd"))


class _DepsSpec(Strict):
    """The mapping form of ``deps``."""

    mode: Literal["all", "any"] = "all"
    jobs: JobIds


class _ReviewSpec(Strict):
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
        raise field_error("list_type", "should be a list of job ids, or {mode, jobs}")
    seen: set[str] = set()
    duplicates: list[InitErrorDetails] = []
    for index, job_id in enumerate(jobs):
        if job_id in seen:
            duplicates.append(
                {
                    "type": field_error("duplicate", f"job {job_id} is listed more than once"),
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
        raise field_error(
            "review_type",
            "should be a number of approvals, or {approvals, distinctKind, maxRounds}",
        )
    return ReviewSpec(
        approvals=spec.approvals, distinctKind=spec.distinctKind, maxRounds=spec.maxRounds
    )


# --- the manifest ---------------------------------------------------------------------


class Manifest(Strict):
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


# Which model reads the mapping at each location, to name keys and spot unknown ones.
_MANIFEST_CONTEXTS: Contexts = {
    (): spellings(Manifest),
    ("budget",): spellings(_BudgetSpec),
    ("budgetUsd",): spellings(_BudgetSpec),
    ("budget_usd",): spellings(_BudgetSpec),
    ("deps",): spellings(_DepsSpec),
    ("review",): spellings(_ReviewSpec),
}
_CONTEXTS_BY_TITLE: dict[str, Contexts] = {
    Manifest.__name__: _MANIFEST_CONTEXTS,
    ProfileSpec.__name__: PROFILE_CONTEXTS,
}


# --- markdown and JSON ----------------------------------------------------------------


def parse_markdown(text: str) -> Manifest:
    """A manifest from markdown: YAML front matter (at least a title) and the body."""
    split = front_matter.split(text)
    if split.front_matter is None:
        raise ValidationFailed.one(
            "",
            "missing_front_matter",
            "a manifest starts with YAML front matter between '---' lines (at least a title)",
        )
    problems = front_matter.reserved(split.front_matter, "body")
    return validate(
        Manifest,
        {**split.front_matter, "body": split.body},
        problems,
        contexts=_MANIFEST_CONTEXTS,
        yaml_source=True,
    )


def parse_json(obj: object) -> Manifest:
    """A manifest from a JSON object: ``{"manifest": "<markdown>"}``, or the fields and
    ``body`` (what ``Manifest.model_dump(mode="json")`` gives also parses)."""
    data = json_object(obj)
    if "manifest" in data:
        return parse_markdown(wrapped(data, "manifest"))
    return validate(Manifest, data, [], contexts=_MANIFEST_CONTEXTS, yaml_source=False)


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
    return front_matter.render(meta, manifest.body)


def problems_from(exc: ValidationError, *, yaml_source: bool = False) -> list[Problem]:
    """Any pydantic error as problems: ``a.b[2]`` paths, pydantic's error types as codes
    (``extra_forbidden`` is ``unknown_field``). Keys of the manifest's and the profile's
    models are named in camelCase, whichever spelling was used."""
    contexts = _CONTEXTS_BY_TITLE.get(exc.title, {})
    return problems_in(exc, contexts, yaml_source=yaml_source)
