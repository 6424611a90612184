"""The project's one error tree.

Each class's docstring is its default message; leaf errors carry data. Store adapters
translate SDK errors into these (keeping the SDK error as ``__cause__``); the HTTP layer
maps them to status codes in one function (``fleet.http.responses.error_response``).
"""

from __future__ import annotations

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
