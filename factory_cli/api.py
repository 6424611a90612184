"""The coordinator's HTTP API, as the factory CLI sees it: one client, one error tree.

``FleetClient`` is the only code in the CLI that speaks HTTP. Every call returns decoded JSON
(or ``None`` for ``204``) and raises an ``ApiError`` for anything else:

- ``Fenced`` — ``409 {"error": "fenced"}``: the lease epoch is not current; the job is no
  longer ours. The caller stops the engine and reports nothing more for that job.
- ``Unauthorized`` — ``401``: the token is unknown, expired or revoked. Not retryable.
- ``Forbidden`` — ``403`` (``details.disallowed`` names refused capabilities, if that is why).
- ``NotFound`` — ``404``; ``Conflict`` — any other ``409``; ``Rejected`` — any other ``4xx``.
- ``Unavailable`` — ``5xx``, ``429``, timeouts and connection errors: retry with backoff
  (``retry_after`` carries the server's ``Retry-After`` when it sent one).

A factory client carries the factory token (its product is the token's); an operator
client carries an operator token and names the product with ``X-Fleet-Product``. The
methods mirror the routes of ``GET /api/openapi.json``; ``request`` reaches any other.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from factory_cli.workdir import open_regular

# Connect fast, read a little longer: a slow coordinator must not stall the run loop.
DEFAULT_TIMEOUT = (5.0, 20.0)
# An artifact upload may be large: connect fast, allow each read/write a minute.
UPLOAD_TIMEOUT = (5.0, 60.0)
PRODUCT_HEADER = "X-Fleet-Product"
JOBS_PAGE_MAX = 1000  # the largest page of ``GET /fleet/jobs``


class ApiError(Exception):
    """The coordinator refused the request or could not be reached."""

    retryable = False

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.status = status
        self.code = code
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)


class Unavailable(ApiError):
    """The coordinator is unreachable, overloaded or failing; retry later."""

    retryable = True

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, details=details)
        self.retry_after = retry_after


class Unauthorized(ApiError):
    """The token is missing, unknown, expired or revoked."""


class Forbidden(ApiError):
    """The token may not do this."""

    @property
    def disallowed(self) -> list[str]:
        """Capabilities the token's enrollment allowlist refuses (empty: another reason)."""
        value = self.details.get("disallowed")
        return [str(v) for v in value] if isinstance(value, list) else []


class NotFound(ApiError):
    """No such thing."""


class Fenced(ApiError):
    """The lease epoch is not current: the job was taken back or given to another factory."""


class Conflict(ApiError):
    """The request conflicts with the current state (not a fence)."""


class Rejected(ApiError):
    """The request is invalid."""


# The attempt is no longer ours: reassigned (fenced), or ended by the coordinator because it
# passed its time or cost limit. Either way: stop the engine, report nothing more.
FENCING_CODES = frozenset({"fenced", "timeout", "budget_exceeded"})


def _error_for(response: requests.Response) -> ApiError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    code = message = None
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        code = body.get("error") if isinstance(body.get("error"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if isinstance(body.get("details"), dict):
            details = body["details"]
    text = message or (response.text or "").strip()[:300] or response.reason or ""
    message = f"HTTP {status}" + (f": {text}" if text else "")
    kw: dict[str, Any] = {"status": status, "code": code, "details": details}
    if status >= 500 or status == 429:
        return Unavailable(message, retry_after=_retry_after(response), **kw)
    if status == 401:
        return Unauthorized(message, **kw)
    if status == 403:
        return Forbidden(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return (Fenced if code in FENCING_CODES else Conflict)(message, **kw)
    return Rejected(message, **kw)


def _names_the_name(error: ApiError) -> bool:
    """Whether a 400 refused the enrollment for want of a ``name``."""
    problems = error.details.get("problems")
    return (
        error.status == 400
        and isinstance(problems, list)
        and any(
            isinstance(p, dict) and p.get("path") == "name" and p.get("code") == "missing"
            for p in problems
        )
    )


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare enough to ignore; the backoff still applies


class FleetClient:
    """A thin, typed wrapper of the coordinator's API.

    ``api`` is the base URL including ``/api`` (``http://127.0.0.1:7071/api``). ``product``
    is sent as ``X-Fleet-Product`` when given (operators need it; a factory may omit it).
    Not thread-safe by itself (a ``requests.Session``): give each thread its own client.
    """

    def __init__(
        self,
        api: str,
        token: str | None,
        *,
        product: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        user_agent: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.api = api.rstrip("/")
        self.token = token
        self.product = product
        self.timeout = timeout
        self.session = session or requests.Session()
        if user_agent:
            self.session.headers["User-Agent"] = user_agent

    # --- plumbing ----------------------------------------------------------------------

    def headers(self, token: str | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        bearer = token if token is not None else self.token
        if bearer:
            out["Authorization"] = f"Bearer {bearer}"
        if self.product:
            out[PRODUCT_HEADER] = self.product
        return out

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | str | None = None,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        """One call: the decoded JSON body, ``None`` for 204 (or an empty body), or an
        ``ApiError``. ``path`` starts after the base URL (``/fleet/jobs``)."""
        headers = self.headers(token)
        body: bytes | str | None = data
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        elif content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.session.request(
                method,
                self.api + path,
                data=body,
                params=dict(params) if params else None,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            error = _error_for(response)
            error.message = f"{method} {path}: {error.message}"
            error.args = (error.message,)
            raise error
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise Unavailable(
                f"{method} {path}: HTTP {response.status_code} with a body that is not JSON",
                status=response.status_code,
            ) from exc

    def close(self) -> None:
        self.session.close()

    # --- enrollment and the factory's own calls -----------------------------------------

    def enroll(
        self,
        enrollment_token: str,
        *,
        name: str | None,
        capabilities: Sequence[str],
        seats: int,
        version: str,
        cost: float | None = None,
        fallback_name: str | None = None,
    ) -> dict[str, Any]:
        """``POST /fleet/factories/enroll`` with the enrollment token as the bearer:
        ``{factoryId, token, product}`` (the factory's own token, shown once).

        ``name`` None: no name is sent, and the coordinator names the factory (an
        ephemeral token's: ``factoryId`` says how). A token that is not ephemeral refuses
        that with a 400 on ``name`` (as a coordinator older than ephemeral tokens does);
        then, given ``fallback_name``, it enrolls again as that (a refusal uses nothing
        of the token)."""
        body: dict[str, Any] = {
            "capabilities": list(capabilities),
            "seats": seats,
            "version": version,
        }
        if name is not None:
            body["name"] = name
        if cost is not None:
            body["cost"] = cost
        try:
            result = self.request(
                "POST", "/fleet/factories/enroll", json_body=body, token=enrollment_token
            )
        except Rejected as exc:
            if name is not None or fallback_name is None or not _names_the_name(exc):
                raise
            result = self.request(
                "POST",
                "/fleet/factories/enroll",
                json_body={**body, "name": fallback_name},
                token=enrollment_token,
            )
        return _object(result)

    def queue_state(self) -> dict[str, Any]:
        """``GET /fleet/queue-state``: ``{version, maxSkipSeconds}`` (one point read)."""
        return _object(self.request("GET", "/fleet/queue-state"))

    def claim(
        self,
        *,
        capabilities: Sequence[str],
        seats: int,
        load: int,
        cost: float,
        version: str | None = None,
        request_id: str | None = None,
        retry: bool = False,
        start: bool = False,
    ) -> dict[str, Any] | None:
        """``POST /fleet/claim``: ``{job, lease, cadence, score}``, or ``None`` (204).
        With ``start`` the coordinator also starts the job (it comes back ``building``): the
        factory then sends no ``building`` report.

        ``request_id`` names this claim (see ``new_request_id``). After an ``Unavailable``
        other than a 429 the reply may be all that was lost (``reply_may_be_lost``): send the same
        ``request_id`` again with ``retry=True`` and the coordinator answers with the job
        that claim won, if any, instead of assigning another (this client never retries by
        itself: the run loop does, with its backoff)."""
        body: dict[str, Any] = {
            "capabilities": list(capabilities),
            "seats": seats,
            "load": load,
            "cost": cost,
        }
        if version is not None:
            body["version"] = version
        if request_id is not None:
            body["requestId"] = request_id
            if retry:
                body["retry"] = True
        if start:
            body["start"] = True
        result = self.request("POST", "/fleet/claim", json_body=body)
        return None if result is None else _object(result)

    def report(self, job_id: str, lease_epoch: int, **fields: Any) -> dict[str, Any]:
        """``PATCH /fleet/jobs/{id}``: ``stage``, ``retryable``, ``reason``, ``checkpoint``,
        ``progress``, ``result`` (``None`` values are left out). Fenced."""
        body = {"leaseEpoch": lease_epoch, **{k: v for k, v in fields.items() if v is not None}}
        return _object(self.request("PATCH", f"/fleet/jobs/{job_id}", json_body=body))

    def renew(self, job_id: str, lease_epoch: int) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/lease/renew``: ``{lease, cadence}``. Fenced."""
        return _object(
            self.request(
                "POST", f"/fleet/jobs/{job_id}/lease/renew", json_body={"leaseEpoch": lease_epoch}
            )
        )

    def release(
        self,
        job_id: str,
        lease_epoch: int,
        *,
        checkpoint: Any = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/lease/release``: queued again, checkpoint kept. Fenced."""
        body: dict[str, Any] = {"leaseEpoch": lease_epoch}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        if reason is not None:
            body["reason"] = reason
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/lease/release", json_body=body))

    def heartbeat(self, beat: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /fleet/factories/heartbeat``: ``{status, cadence, commands}``."""
        return _object(self.request("POST", "/fleet/factories/heartbeat", json_body=dict(beat)))

    def post_events(
        self, job_id: str, lease_epoch: int, events: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/events``: ``{stored, received}``. Fenced; idempotent per
        ``seq`` within the attempt."""
        body = {"leaseEpoch": lease_epoch, "events": [dict(e) for e in events]}
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/events", json_body=body))

    def artifact_upload_url(
        self, job_id: str, lease_epoch: int, name: str, content_type: str | None = None
    ) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/artifacts``: a short-lived, write-only URL for the blob
        ``name`` of this attempt: ``{artifactId, url, method, headers, expiresAt, blob}``.
        Fenced. The ``url`` carries a SAS token: a secret, never logged or shown."""
        body: dict[str, Any] = {"leaseEpoch": lease_epoch, "name": name}
        if content_type:
            body["contentType"] = content_type
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/artifacts", json_body=body))

    def put_artifact(
        self,
        upload: Mapping[str, Any],
        path: Path,
        *,
        timeout: float | tuple[float, float] = UPLOAD_TIMEOUT,
    ) -> None:
        """PUT the file at ``path`` to an ``artifact_upload_url`` answer (its ``url`` with its
        ``headers``), streamed from the file. See ``put_file``."""
        headers = upload.get("headers")
        put_file(
            str(upload.get("url") or ""),
            headers if isinstance(headers, Mapping) else {},
            path,
            method=str(upload.get("method") or "PUT"),
            timeout=timeout,
        )

    def deregister(self, factory_id: str) -> dict[str, Any]:
        """``DELETE /fleet/factories/{id}``: leave the fleet (the token stops working)."""
        return _object(self.request("DELETE", f"/fleet/factories/{factory_id}"))

    # --- operators (and reads open to any token) ------------------------------------------

    def submit_markdown(self, text: str) -> dict[str, Any]:
        """``POST /fleet/jobs`` with a markdown manifest: ``{job, created, warning?}``."""
        return _object(
            self.request(
                "POST",
                "/fleet/jobs",
                data=text.encode("utf-8"),
                content_type="text/markdown; charset=utf-8",
            )
        )

    def submit_json(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /fleet/jobs`` with JSON fields: ``{job, created, warning?}``."""
        return _object(self.request("POST", "/fleet/jobs", json_body=dict(fields)))

    def jobs_page(
        self, stage: str | None = None, limit: int = JOBS_PAGE_MAX, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``GET /fleet/jobs[?stage=&limit=&cursor=]``: one page of jobs (without body and
        events) by id, and the cursor of the next page (None: the last)."""
        params = {"limit": str(limit)}
        if stage:
            params["stage"] = stage
        if cursor:
            params["cursor"] = cursor
        result = _object(self.request("GET", "/fleet/jobs", params=params))
        jobs = [j for j in result.get("jobs", []) if isinstance(j, dict)]
        after = result.get("next")
        return jobs, after if isinstance(after, str) and after else None

    def list_jobs(self, stage: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Every job (or the newest ``limit``), newest first, following the pages' ``next``."""
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while limit is None or len(jobs) < limit:
            size = JOBS_PAGE_MAX if limit is None else min(JOBS_PAGE_MAX, limit - len(jobs))
            page, cursor = self.jobs_page(stage, size, cursor)
            jobs.extend(page)
            if cursor is None:
                break
        return jobs if limit is None else jobs[:limit]

    def get_job(self, job_id: str) -> dict[str, Any]:
        """``GET /fleet/jobs/{id}``: the job with its recent events."""
        return _object(self.request("GET", f"/fleet/jobs/{job_id}"))

    def job_events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """``GET /fleet/jobs/{id}/events?after=SEQ``: the transition history."""
        result = _object(
            self.request("GET", f"/fleet/jobs/{job_id}/events", params={"after": str(after)})
        )
        return [e for e in result.get("events", []) if isinstance(e, dict)]

    def agent_events(
        self, job_id: str, after: str | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``GET /fleet/jobs/{id}/agent-events``: what the engines wrote, and the cursor."""
        params = {"limit": str(limit)}
        if after:
            params["after"] = after
        result = _object(self.request("GET", f"/fleet/jobs/{job_id}/agent-events", params=params))
        events = [e for e in result.get("events", []) if isinstance(e, dict)]
        cursor = result.get("cursor")
        return events, cursor if isinstance(cursor, str) else None

    def explain(self, job_id: str) -> dict[str, Any]:
        """``GET /fleet/jobs/{id}/explain``: why it is (not) running, factory by factory."""
        return _object(self.request("GET", f"/fleet/jobs/{job_id}/explain"))

    def job_runs(self, job_id: str) -> list[dict[str, Any]]:
        """``GET /fleet/jobs/{id}/runs``: every attempt's run record, oldest first."""
        result = _object(self.request("GET", f"/fleet/jobs/{job_id}/runs"))
        return [r for r in result.get("runs", []) if isinstance(r, dict)]

    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """``GET /fleet/jobs/{id}/artifacts``: the job's artifacts, every attempt's (by epoch,
        then name), without download URLs (``GET .../artifacts/{artifactId}`` issues one)."""
        result = _object(self.request("GET", f"/fleet/jobs/{job_id}/artifacts"))
        return [a for a in result.get("artifacts", []) if isinstance(a, dict)]

    def job_action(self, job_id: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/{action}`` — ``cancel``, ``requeue``, ``ship``, ``reject``."""
        body = {"reason": reason} if reason else {}
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/{action}", json_body=body))

    def review(
        self, job_id: str, verdict: str, comments: str = "", kind: str | None = None
    ) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/review``: approve or reject; the job as it is now."""
        body: dict[str, Any] = {"verdict": verdict, "comments": comments}
        if kind:
            body["kind"] = kind
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/review", json_body=body))

    def request_review(
        self, job_id: str, reviewers: Sequence[str] = (), note: str | None = None
    ) -> dict[str, Any]:
        """``POST /fleet/jobs/{id}/review/request``: ask for reviewers (recorded)."""
        body: dict[str, Any] = {"reviewers": list(reviewers)}
        if note:
            body["note"] = note
        return _object(self.request("POST", f"/fleet/jobs/{job_id}/review/request", json_body=body))

    def list_factories(self) -> list[dict[str, Any]]:
        """``GET /fleet/factories``: every factory of the product, with ``live``."""
        result = _object(self.request("GET", "/fleet/factories"))
        return [f for f in result.get("factories", []) if isinstance(f, dict)]

    def factory_heartbeat(self, factory_id: str) -> dict[str, Any]:
        """``GET /fleet/factories/{id}/heartbeat``: its last beat and pending commands."""
        return _object(self.request("GET", f"/fleet/factories/{factory_id}/heartbeat"))

    def command(
        self,
        factory_id: str,
        command: str,
        *,
        job_id: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """``POST /fleet/factories/{id}/commands``: drain, pause, resume, restart-engine,
        cancel-job (with ``job_id``)."""
        body: dict[str, Any] = {"command": command}
        if job_id:
            body["jobId"] = job_id
        if reason:
            body["reason"] = reason
        return _object(
            self.request("POST", f"/fleet/factories/{factory_id}/commands", json_body=body)
        )

    def revoke_factory(self, factory_id: str) -> dict[str, Any]:
        """``POST /fleet/factories/{id}/token/revoke`` (operators)."""
        return _object(self.request("POST", f"/fleet/factories/{factory_id}/token/revoke"))

    def product_events(
        self, after: str | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``GET /fleet/events``: every job's events after a cursor (operators)."""
        params = {"limit": str(limit)}
        if after:
            params["after"] = after
        result = _object(self.request("GET", "/fleet/events", params=params))
        events = [e for e in result.get("events", []) if isinstance(e, dict)]
        cursor = result.get("cursor")
        return events, cursor if isinstance(cursor, str) else after

    def metrics(self) -> dict[str, Any]:
        """``GET /fleet/metrics``: stage counts and the product's numbers."""
        return _object(self.request("GET", "/fleet/metrics"))


def put_file(
    url: str,
    headers: Mapping[str, Any],
    path: Path,
    *,
    method: str = "PUT",
    timeout: float | tuple[float, float] = UPLOAD_TIMEOUT,
) -> None:
    """Send the file at ``path`` to a storage URL (a SAS URL: the coordinator's bearer token is
    never sent there), streamed from the file with an explicit length.

    Raises ``Unavailable`` for a 5xx, a 429 or a transport failure (retry), another
    ``ApiError`` for any other status (see ``_error_for``). The URL carries a secret: no error
    message names it, nor the storage's error text (which may quote the signature); only the
    status and the storage's error code (``x-ms-error-code``)."""
    try:
        with open_regular(path) as handle:  # never through a link an engine left
            size = os.fstat(handle.fileno()).st_size
            sent = {str(k): str(v) for k, v in headers.items()}
            sent["Content-Length"] = str(size)
            # An empty file is sent as b"": requests would otherwise chunk an empty stream.
            response = requests.request(
                method, url, data=handle if size else b"", headers=sent, timeout=timeout
            )
    except requests.RequestException as exc:
        raise Unavailable(f"{method} artifact: {type(exc).__name__}") from None
    status = response.status_code
    if status < 400:
        return
    code = response.headers.get("x-ms-error-code")
    message = f"{method} artifact: HTTP {status}" + (f" {code}" if code else "")
    if status >= 500 or status == 429:
        raise Unavailable(message, status=status, code=code, retry_after=_retry_after(response))
    kind = {401: Unauthorized, 403: Forbidden, 404: NotFound}.get(status, Rejected)
    raise kind(message, status=status, code=code)


def new_request_id() -> str:
    """A fresh id for one claim: 16 url-safe characters (96 random bits)."""
    return secrets.token_urlsafe(12)


def reply_may_be_lost(error: Unavailable) -> bool:
    """Whether the coordinator may have acted on a request whose reply did not reach us:
    a transport failure (timeout, dropped connection), a 5xx, a reply that is not JSON.
    Only a 429 says for sure that it was turned away before anything happened."""
    return error.status != 429


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unavailable(
            f"expected a JSON object from the coordinator, got {type(value).__name__}"
        )
    return value
