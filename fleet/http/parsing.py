"""Request bodies: parsed and validated, every problem reported with its field path."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeVar

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fleet.coordinator.enrollment import MAX_USES, NAME_PREFIX_PATTERN
from fleet.coordinator.identity import NAME
from fleet.domain.manifest import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, problems_from
from fleet.domain.review import KIND_PATTERN
from fleet.domain.stages import Stage
from fleet.errors import Problem, ValidationFailed

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 512 * 1024


class PayloadTooLarge(ValidationFailed):
    """The request body is too large."""

    code = "too_large"


def body_bytes(req: func.HttpRequest) -> bytes:
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            [Problem(path="", code="too_large", message=f"at most {MAX_BODY_BYTES} bytes")],
            f"request body too large: {len(body)} bytes, at most {MAX_BODY_BYTES} bytes",
        )
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (numbers must be finite)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range (numbers must be finite)")
    return value


def strict_json(raw: bytes | str) -> Any:
    """``json.loads`` as the JSON standard reads it: ``NaN``, ``Infinity`` and ``-Infinity``
    (which Python's parser accepts) are refused, and so is a number too large for a float
    (``1e400`` would read as infinity), so no non-finite number reaches a model, a cost or
    a budget."""
    return json.loads(raw, parse_constant=_not_json, parse_float=_finite)


def json_value(req: func.HttpRequest, *, required: bool = True) -> Any:
    raw = body_bytes(req)
    if not raw.strip():
        if required:
            raise ValidationFailed(
                [Problem(path="", code="empty", message="empty body")], "a JSON body is required"
            )
        return {}
    try:
        return strict_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            [Problem(path="", code="invalid_json", message=str(exc)[:200])],
            "the body is not valid JSON",
        ) from None


def parse_model(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed(
            [Problem(path="", code="not_an_object", message="expected a JSON object")],
            "the body must be a JSON object",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(problems_from(exc), "invalid request") from None


def body_model(req: func.HttpRequest, model: type[M], *, required: bool = True) -> M:
    return parse_model(model, json_value(req, required=required))


def int_param(
    req: func.HttpRequest, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = req.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValidationFailed(
            [Problem(path=name, code="invalid_integer", message=f"got {raw!r}")],
            f"query parameter {name} must be an integer {bounds}",
        )
    return value


# --- request bodies ------------------------------------------------------------------

CAPABILITY = r"^[a-z0-9][a-z0-9._/+-]*(:[a-z0-9][a-z0-9._/+-]*)?$"
Capability = Annotated[str, StringConstraints(pattern=CAPABILITY, max_length=100)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FactorySelf(Body):
    """What a factory says about itself on claim and registration."""

    capabilities: tuple[Capability, ...] = Field(default=(), max_length=128)
    seats: int = Field(default=1, ge=1, le=256)
    load: int = Field(default=0, ge=0, le=256)
    cost: float = Field(default=0.5, ge=0, le=1)
    version: str | None = Field(default=None, max_length=64)


CLAIM_REQUEST_ID = r"^[A-Za-z0-9_-]{8,64}$"


class ClaimBody(FactorySelf):
    """A claim: what the factory says about itself, and its own id for this claim.

    ``requestId`` is stored in the lease the claim writes. A factory whose claim reply was
    lost (a timeout, a dropped connection) re-sends the same ``requestId`` with ``retry``:
    the coordinator then answers with the job it already won by it, if any, instead of
    assigning another."""

    requestId: str | None = Field(default=None, pattern=CLAIM_REQUEST_ID)
    retry: bool = False
    start: bool = Field(
        default=False,
        description="The factory starts the job at once: the claim's write also moves it to "
        "`building` (its `start` event), so no separate `building` report is sent.",
    )


FactoryName = Annotated[str, StringConstraints(pattern=NAME.pattern)]


class EnrollmentTokenBody(Body):
    """An operator creates an enrollment token: optional expiry (default: the configured TTL,
    7 days), capability allowlist, seat limit and review kind; how many enrollments it
    admits, and whether its factories are ephemeral."""

    expiresInSeconds: int | None = Field(default=None, ge=60, le=365 * 24 * 3600)
    capabilities: tuple[Capability, ...] | None = Field(default=None, max_length=128)
    maxSeats: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="The most jobs the enrolled factory may hold at once, whatever it says.",
    )
    kind: Annotated[str, StringConstraints(pattern=KIND_PATTERN)] | None = Field(
        default=None,
        description=(
            "The enrolled factory's review kind (for `distinctKind` quorums), whatever it "
            "advertises. Without it: the allowlist's `kind:`/`engine:` names, else those it "
            "enrolls with; fixed at enrollment either way."
        ),
    )
    maxUses: int = Field(
        default=1,
        ge=1,
        le=MAX_USES,
        strict=True,
        description=(
            "How many factories may enroll with it (1: single use). Autoscaled workers "
            "share one token of many uses."
        ),
    )
    ephemeral: bool = Field(
        default=False,
        strict=True,
        description=(
            "Its factories are ephemeral (autoscaled workers): each may enroll without a "
            "name (the coordinator names it `<namePrefix>-<8 hex>`), and the self-healer "
            "prunes it once it is silent for its down threshold rather than for days."
        ),
    )
    namePrefix: Annotated[str, StringConstraints(pattern=NAME_PREFIX_PATTERN)] | None = Field(
        default=None,
        description='An ephemeral token\'s generated names start with it (default "eph").',
    )


class EnrollBody(FactorySelf):
    """A factory enrolls: the name it asks for and what it says about itself. Without a
    name (an ephemeral enrollment token's factory only) the coordinator names it."""

    name: FactoryName | None = None


class LeaseBody(Body):
    leaseEpoch: int = Field(ge=1)
    checkpoint: Any = None
    reason: str | None = Field(default=None, max_length=2000)


class ReportBody(Body):
    leaseEpoch: int = Field(ge=1)
    stage: Stage | None = None
    retryable: bool = False
    reason: str | None = Field(default=None, max_length=2000)
    checkpoint: Any = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class ActionBody(Body):
    reason: str | None = Field(default=None, max_length=2000)


class RequeueBody(ActionBody):
    """A requeue may carry the operator's checkpoint: the next attempt resumes from it
    (it replaces the job's checkpoint; its size counts as a report's does)."""

    checkpoint: dict[str, Any] | None = None


class ReprioritizeBody(Body):
    priority: int = Field(ge=0, le=9)
    reason: str | None = Field(default=None, max_length=2000)


class WeightsBody(Body):
    """Scheduler weights for a product; omitted ones keep their defaults."""

    capability: float | None = Field(default=None, ge=0, le=100)
    affinity: float | None = Field(default=None, ge=0, le=100)
    load: float | None = Field(default=None, ge=0, le=100)
    cost: float | None = Field(default=None, ge=0, le=100)
    health: float | None = Field(default=None, ge=0, le=100)
    starvation: float | None = Field(default=None, ge=0, le=100)
    priority: float | None = Field(default=None, ge=0, le=100)
    aging_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    tie_band: float | None = Field(default=None, ge=0, le=10)
    exclude_after_failures: int | None = Field(default=None, ge=1, le=100)
    # Learned routing (``fleet.domain.routing``): 0 is shadow mode (recorded, not applied).
    outcome: float | None = Field(default=None, ge=0, le=100)


class PreemptionBody(Body):
    """A critical job with no free seat may evict the lowest-priority running job."""

    enabled: bool | None = None
    minPriority: int | None = Field(default=None, ge=0, le=9)
    afterSeconds: float | None = Field(default=None, ge=0, le=24 * 3600)


class AlertsBody(Body):
    """The metrics timer's alert rules; omitted ones are kept, 0 turns a threshold off."""

    enabled: bool | None = None
    starvationSeconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    staleFactories: int | None = Field(default=None, ge=0, le=10_000)
    stalledJobs: int | None = Field(default=None, ge=0, le=10_000)
    unroutableJobs: int | None = Field(default=None, ge=0, le=10_000)
    reviewWaitingSeconds: float | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    budgetFraction: float | None = Field(default=None, ge=0, le=10)
    noLiveFactories: bool | None = None


class SettingsBody(Body):
    weights: WeightsBody | None = None
    preemption: PreemptionBody | None = None
    alerts: AlertsBody | None = None
    # An attempt's timeout when its manifest names none; null removes it, omitted keeps it.
    timeoutSeconds: int | None = Field(
        default=None, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS, strict=True
    )


MAX_AGENT_EVENT_BYTES = 16 * 1024


class AgentEventBody(Body):
    """One line an engine wrote to FLEET_EVENTS_FILE, numbered by the forwarder."""

    seq: int = Field(ge=0, le=10**9)
    type: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=64)
    ]
    payload: Any = None

    def model_post_init(self, context: Any) -> None:
        size = len(json.dumps(self.payload, default=str))
        if size > MAX_AGENT_EVENT_BYTES:
            raise ValueError(f"payload is {size} bytes; at most {MAX_AGENT_EVENT_BYTES}")


class AgentEventsBody(Body):
    leaseEpoch: int = Field(ge=1)
    events: list[AgentEventBody] = Field(min_length=1, max_length=100)
