"""Reply models: what the HTTP operations answer, as pydantic models.

Each operation declares its reply models per status (``fleet.http.operation``); the OpenAPI
document takes their schemas from them (serialization mode), and ``reply`` serializes them.
The views shared by several areas live here (a job, a page of jobs, the lease cadence);
each area's own replies live beside its handlers.

Two ways to build a view. On hot paths (a job, a claim, a heartbeat) from models already
validated, without validating again: ``model_construct`` (``JobView.of``). On cold paths
from what the coordinator answers as plain data: ``model_validate``, so a reply that does
not match its model fails loudly instead of reaching a client.
"""

from __future__ import annotations

from typing import Any, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from fleet.coordinator.claim import Cadence as LeaseCadence
from fleet.domain.models import Event, Job


def _is_none(value: object) -> bool:
    return value is None


def _never_null(schema: JsonDict) -> None:
    options = cast(list[JsonDict], schema.pop("anyOf"))
    (kept,) = [o for o in options if o != {"type": "null"}]
    schema.update(kept)
    schema.pop("default", None)


def omitted(description: str) -> Any:
    """A key the reply leaves out, rather than null, when it has no value: optional in the
    schema, never null."""
    return Field(
        default=None,
        exclude_if=_is_none,
        json_schema_extra=_never_null,
        description=description,
    )


class View(BaseModel):
    """A reply body."""

    model_config = ConfigDict(frozen=True)


class JobView(Job):
    """A job as replies show it: without its store-only fields, with its lease holder."""

    type: Literal["job"] = Field(default="job", exclude=True)
    holder: str | None = Field(description="The factory holding the lease, if any.")

    @classmethod
    def of(cls, job: Job) -> Self:
        values: dict[str, Any] = dict(job.__dict__)
        values["holder"] = job.lease.holder if job.lease else None
        return cls.model_construct(**values)


class JobSummary(JobView):
    """A job in a list: without its body, its events, and what its holder reports
    (checkpoint, progress, result): one job's reply has them (``GET /fleet/jobs/{id}``)."""

    body: str = Field(default="", exclude=True)
    events: tuple[Event, ...] = Field(default=(), exclude=True)
    checkpoint: Any = Field(default=None, exclude=True)
    progress: dict[str, Any] | None = Field(default=None, exclude=True)
    result: dict[str, Any] | None = Field(default=None, exclude=True)


class Cadence(View):
    """How often the lease holder must heartbeat and renew."""

    heartbeatSeconds: int
    renewSeconds: int

    @classmethod
    def of(cls, cadence: LeaseCadence) -> Self:
        return cls.model_construct(
            heartbeatSeconds=cadence.heartbeat_seconds, renewSeconds=cadence.renew_seconds
        )


class Problem(View):
    """One problem of an invalid request."""

    path: str = Field(description="Where: `capabilities[1]`; `` for all.")
    code: str = Field(description="What, machine-readable.")
    message: str


class ErrorDetails(View):
    """Context of an error; ``problems`` lists every problem of an invalid request."""

    model_config = ConfigDict(frozen=True, extra="allow")

    problems: list[Problem] | None = omitted("Every problem of an invalid request.")


class Error(View):
    """Every error's body (``fleet.http.responses.error_response``)."""

    error: str = Field(description="A machine-readable code.")
    message: str = Field(description="For people.")
    details: ErrorDetails | None = omitted(
        "Context; `problems` lists every problem of an invalid request."
    )
