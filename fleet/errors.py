"""The project's one error tree.

Each class's docstring is its default message; leaf errors carry data. Store adapters
translate SDK errors into these (keeping the SDK error as ``__cause__``); the HTTP layer
maps them to status codes in one function (``fleet.http.responses.error_response``).

Every error another layer raises, catches or maps lives here, so this module sits below
all of ``fleet`` and imports none of it. A leaf raised and caught within one module (a
``NotFound`` of the coordinator, a ``ReviewRefused`` of the domain) may stay beside the code
that raises it, as a subclass of one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FleetError(Exception):
    """Something went wrong in agent-fleet."""

    code = "internal"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)


class SettingsError(FleetError):
    """A required setting is missing or invalid."""

    code = "settings"

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name} {problem}", setting=name)
        self.name = name


# --- store errors -----------------------------------------------------------------


class StoreError(FleetError):
    """The store refused the operation."""

    code = "store"


class NotFound(StoreError):
    """The item does not exist."""

    code = "not_found"


class AlreadyExists(StoreError):
    """An item with this id already exists."""

    code = "already_exists"


class ConditionFailed(StoreError):
    """A write's precondition did not hold; nothing was changed."""

    code = "condition_failed"


class ConcurrencyConflict(ConditionFailed):
    """The item changed since it was read (stale etag); nothing was changed."""

    code = "conflict"


class PreconditionFailed(ConditionFailed):
    """The item does not satisfy the write's filter predicate; nothing was changed."""

    code = "precondition_failed"


class StoreUnavailable(StoreError):
    """The store is unavailable or throttling; retry later."""

    code = "store_unavailable"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class InvalidStoreRequest(StoreError):
    """The store rejected the request as malformed (a bug in the caller, not a race)."""

    code = "invalid_store_request"


# --- invalid input ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (``path``), what (``code``), and why."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


class ValidationFailed(FleetError):
    """The document is invalid."""

    code = "validation_failed"

    def __init__(self, problems: Sequence[Problem], message: str | None = None) -> None:
        if not problems:
            raise ValueError("ValidationFailed needs at least one problem")
        self.problems = list(problems)
        super().__init__(
            message or _summary(self.problems),
            problems=[p.as_dict() for p in self.problems],
        )

    @classmethod
    def one(cls, path: str, code: str, message: str) -> ValidationFailed:
        return cls([Problem(path, code, message)])


def _summary(problems: list[Problem], shown: int = 5) -> str:
    parts = [f"{p.path}: {p.message}" if p.path else p.message for p in problems[:shown]]
    more = len(problems) - shown
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


# --- quotas -----------------------------------------------------------------------


class QuotaExceeded(FleetError):
    """The attempt has used up a quota (agent events, their bytes, artifacts); nothing was
    stored. The quota is the attempt's: the next attempt (epoch) starts afresh."""

    code = "quota_exceeded"


# --- who is calling ---------------------------------------------------------------


class Unauthorized(FleetError):
    """The request does not prove who is calling."""

    code = "unauthorized"


class Forbidden(FleetError):
    """The caller may not do this."""

    code = "forbidden"


# --- jobs: transitions, fencing, review --------------------------------------------
# Stages and actions are ``fleet.domain.stages``' StrEnums, typed here as StrEnum so that
# this module imports nothing of the domain.


class IllegalTransition(FleetError):
    """This action is not allowed from the job's current stage."""

    code = "illegal_transition"

    def __init__(self, stage: StrEnum, action: StrEnum) -> None:
        super().__init__(
            f"cannot {action.value} a job in stage {stage.value}",
            stage=stage.value,
            action=action.value,
        )
        self.stage = stage
        self.action = action


class Fenced(FleetError):
    """The lease epoch is stale: this job was reassigned. Nothing was changed."""

    code = "fenced"


class IllegalReport(FleetError):
    """A factory may report only building, testing, review, shipped or failed."""

    code = "illegal_report"

    def __init__(self, stage: StrEnum) -> None:
        super().__init__(f"a factory cannot report stage {stage.value}", stage=stage.value)


class IllegalReprioritize(FleetError):
    """A finished job cannot be reprioritized."""

    code = "illegal_transition"

    def __init__(self, stage: StrEnum) -> None:
        super().__init__(f"cannot reprioritize a job in stage {stage.value}", stage=stage.value)


class NotInReview(FleetError):
    """The job is not in review: there is nothing to vote on."""

    code = "not_in_review"

    def __init__(self, job_id: str, stage: StrEnum) -> None:
        super().__init__(
            f"job {job_id} is in stage {stage.value}, not review",
            jobId=job_id,
            stage=stage.value,
        )


class AlreadyVoted(FleetError):
    """This reviewer has already voted in this round."""

    code = "already_voted"


class ReviewRefused(FleetError):
    """This reviewer may not review this job."""

    code = "review_refused"
