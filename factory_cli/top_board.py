"""The data of ``fleet-factory top``: what the board shows, and how it is fetched.

``Feed`` gathers a ``Snapshot`` through a client, cheaply: every poll reads the queue-state
gate (one point read) and the product-wide event feed by its cursor, and re-fetches the lists
(jobs, factories, metrics: queries) only when the gate's version moved, new events arrived,
or ``FULL_EVERY`` seconds passed (factory health changes reach no gate and no event: the
periodic refresh shows them).

A failed refresh never empties the board: the snapshot keeps the last good lists, and its
``link`` (``factory_cli.top_live``) says since when the coordinator could not be read and why.
Everything here is pure but for the client it is given; no terminal.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from factory_cli.runs import latest_run
from factory_cli.top_live import Link

# Paths are relative to the client's base URL (``http://host:7071/api``).
QUEUE_STATE = "/fleet/queue-state"
METRICS = "/fleet/metrics"
FACTORIES = "/fleet/factories"
JOBS = "/fleet/jobs"
EVENTS = "/fleet/events"
BUDGETS = "/fleet/budgets"

STAGES = (
    "queued",
    "blocked",
    "assigned",
    "building",
    "review",
    "testing",
    "shipped",
    "failed",
    "dead_letter",
    "cancelled",
)
RUNNING = frozenset({"assigned", "building", "testing"})  # the stages that hold a lease
# The jobs an operator may act on, in the order the board lists them.
SELECTABLE = ("assigned", "building", "testing", "review", "failed", "dead_letter", "queued")
FULL_EVERY = 30.0  # seconds: re-fetch the lists at least this often
EVENTS_KEPT = 200  # recent events kept for the event pane
EVENT_PAGES = 5  # event pages fetched per refresh at most (catching up on a busy product)
EVENT_CATCHUP_PAGES = 50  # on the first poll (the feed starts at the oldest event)
EVENT_PAGE = 200
JOB_PAGE = 1000  # jobs a page (the largest the coordinator serves)
JOB_PAGES = 5  # job pages fetched per refresh at most: a bigger product is listed in part
# The sources whose failure is an outage (the board's data is no longer current); a failed
# metrics read only leaves its numbers as they were.
VITAL = ("queue-state", "events", "jobs", "factories")


class TopClient(Protocol):
    """What the board needs of the CLI's HTTP client: parsed JSON back (``None`` for an
    empty reply), an exception with ``.status`` and ``.body`` on an HTTP error."""

    def get(self, path: str, params: Mapping[str, str] | None = None, /) -> Any: ...

    def post(self, path: str, json: Any = None, /) -> Any: ...


class RequestClient(Protocol):
    """The other shape the CLI's ``FleetClient`` has: one ``request`` method (``path`` after
    the base URL, JSON decoded, ``None`` for 204, an ``ApiError`` with ``.status``, ``.code``
    and ``.message`` on an HTTP error). ``top_client`` adapts it to ``TopClient``."""

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any: ...


class _Requests:
    """``TopClient`` over a ``RequestClient``."""

    def __init__(self, client: RequestClient) -> None:
        self._client = client

    def get(self, path: str, params: Mapping[str, str] | None = None, /) -> Any:
        return self._client.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, /) -> Any:
        return self._client.request("POST", path, json_body=json)


def top_client(client: TopClient | RequestClient) -> TopClient:
    """The client as the board uses it: as is if it has ``get`` and ``post``, else through
    its ``request`` method."""
    if callable(getattr(client, "get", None)) and callable(getattr(client, "post", None)):
        return client  # type: ignore[return-value]
    if callable(getattr(client, "request", None)):
        return _Requests(client)  # type: ignore[arg-type]
    raise TypeError(f"{type(client).__name__} has neither get/post nor request")


# --------------------------------------------------------------------------- the snapshot


@dataclass(frozen=True)
class FactoryRow:
    id: str
    health: str  # live | stale | down (the self-healer's verdict)
    flags: tuple[str, ...]  # paused, draining, revoked, deregistered
    load: int
    seats: int
    version: str | None
    last_seen: datetime | None


@dataclass(frozen=True)
class JobRow:
    id: str
    title: str
    stage: str
    holder: str | None
    epoch: int
    since: datetime | None  # when it entered its stage (its last event)
    stalled: bool
    unroutable: bool
    # The newest of the job's embedded run records (None: it lists none).
    last_run: Mapping[str, Any] | None = field(default=None, compare=False)
    priority: int | None = None  # 0-9, 9 the most urgent (None: not listed)


@dataclass(frozen=True)
class Utilization:
    """Seats in use: jobs holding a lease over the seats of the live factories."""

    held: int
    seats: int
    fraction: float | None  # None: no seat
    source: str  # "metrics" (the metrics timer's) or "lists" (counted from the lists)


@dataclass(frozen=True)
class Snapshot:
    """Everything the board shows, as last fetched. ``problems``: what could not be read;
    ``link``: whether the data is current (see ``factory_cli.top_live``)."""

    at: datetime
    product: str | None = None
    version: int | None = None
    max_skip: int | None = None
    stages: Mapping[str, int] = field(default_factory=dict)
    oldest_queued_seconds: float | None = None
    unroutable: int = 0
    factories: tuple[FactoryRow, ...] = ()
    jobs: tuple[JobRow, ...] = ()
    events: tuple[Mapping[str, Any], ...] = ()
    problems: tuple[str, ...] = ()
    full_at: datetime | None = None  # when the lists were last fetched (all of them)
    utilization: Utilization | None = None  # the metrics document's, when it has one
    budget_paused: bool | None = None  # the metrics document's budget (None: no budget)
    link: Link = field(default_factory=Link)


def parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def factory_row(raw: Mapping[str, Any]) -> FactoryRow:
    status = raw.get("status")
    health = status if status in ("live", "stale", "down") else "down"
    if raw.get("revoked") or raw.get("deregistered"):
        health = "down"
    flags = tuple(f for f in ("paused", "draining", "revoked", "deregistered") if raw.get(f))
    version = raw.get("version")
    return FactoryRow(
        id=str(raw.get("id", "?")),
        health=health,
        flags=flags,
        load=_int(raw.get("load")),
        seats=_int(raw.get("seats"), 1),
        version=str(version) if version is not None else None,
        last_seen=parse_ts(raw.get("lastSeen")),
    )


def job_row(raw: Mapping[str, Any]) -> JobRow:
    lease = raw.get("lease") if isinstance(raw.get("lease"), Mapping) else None
    holder = raw.get("holder") or (lease.get("holder") if lease else None)
    priority = raw.get("priority")
    return JobRow(
        id=str(raw.get("id", "?")),
        title=str(raw.get("title", "")),
        stage=str(raw.get("stage", "?")),
        holder=str(holder) if holder else None,
        epoch=_int(raw.get("epoch")),
        since=parse_ts(raw.get("lastEventAt")) or parse_ts(raw.get("updatedAt")),
        stalled=bool(raw.get("stalled")),
        unroutable=bool(raw.get("unroutable")),
        last_run=latest_run(raw),
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
    )


def utilization_of(raw: Any) -> Utilization | None:
    """The metrics document's ``utilization`` (``{held, seats, fraction}``), if it has one."""
    if not isinstance(raw, Mapping) or "held" not in raw or "seats" not in raw:
        return None
    held, seats = _int(raw.get("held")), _int(raw.get("seats"))
    fraction = raw.get("fraction")
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        fraction = held / seats if seats > 0 else None
    return Utilization(held, seats, float(fraction) if fraction is not None else None, "metrics")


def utilization(snapshot: Snapshot) -> Utilization | None:
    """Seats in use: the metrics document's figure, else counted from the lists (jobs in a
    running stage over the seats of the live factories); None before anything was read."""
    if snapshot.utilization is not None:
        return snapshot.utilization
    if snapshot.full_at is None:
        return None
    held = sum(_int(snapshot.stages.get(stage)) for stage in RUNNING)
    seats = sum(
        f.seats
        for f in snapshot.factories
        if f.health == "live" and not {"revoked", "deregistered"} & set(f.flags)
    )
    return Utilization(held, seats, held / seats if seats > 0 else None, "lists")


def _severity(factory: FactoryRow) -> tuple[int, str]:
    """Down first, then stale, then live; by id within each."""
    return ({"down": 0, "stale": 1}.get(factory.health, 2), factory.id)


def stage_counts(jobs: Iterable[JobRow]) -> dict[str, int]:
    counts = dict.fromkeys(STAGES, 0)
    for job in jobs:
        counts[job.stage] = counts.get(job.stage, 0) + 1
    return counts


def running(snapshot: Snapshot) -> list[JobRow]:
    return sorted(
        (j for j in snapshot.jobs if j.stage in RUNNING),
        key=lambda j: (j.since or snapshot.at, j.id),
    )


def selectable(snapshot: Snapshot) -> list[JobRow]:
    """The jobs the cursor moves over: running first, then those waiting on an operator,
    then the queue; oldest first within a stage."""
    order = {stage: i for i, stage in enumerate(SELECTABLE)}
    return sorted(
        (j for j in snapshot.jobs if j.stage in order),
        key=lambda j: (order[j.stage], j.since or snapshot.at, j.id),
    )


@dataclass(frozen=True)
class Alert:
    kind: str  # stalled | unroutable | factory | oldest
    text: str


def alerts(snapshot: Snapshot) -> list[Alert]:
    out = [
        Alert("stalled", f"stalled: {j.id} held by {j.holder or '?'} ({j.stage}), no progress")
        for j in snapshot.jobs
        if j.stalled
    ]
    flagged = [j.id for j in snapshot.jobs if j.unroutable and j.stage in ("queued", "blocked")]
    if snapshot.unroutable or flagged:
        count = max(snapshot.unroutable, len(flagged))
        names = f": {', '.join(flagged[:5])}" if flagged else ""
        out.append(
            Alert("unroutable", f"unroutable: {count} queued job(s) no factory can run{names}")
        )
    out += [
        Alert("factory", f"factory {f.id} is {f.health}")
        for f in snapshot.factories
        if f.health != "live" and not {"revoked", "deregistered"} & set(f.flags)
    ]
    return out


# --------------------------------------------------------------------------- fetching

# What the CLI client puts before the server's message (``POST /fleet/jobs/j1/ship: HTTP 409:``):
# the status is shown on its own.
_REQUEST_PREFIX = re.compile(r"^(?:[A-Z]+ \S+: )?HTTP \d{3}(?:: |$)")


def describe_error(exc: BaseException) -> str:
    """``403 forbidden: ...`` from an HTTP error (``.status`` and ``.body``, or the CLI
    client's ``.code`` and ``.message``); the exception's text otherwise."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if isinstance(body, Mapping):
        code = body.get("error", code)
        message = body.get("message", message)
    elif isinstance(body, str) and body and not message:
        message = body[:200]
    if status is None and code is None:
        return str(exc) or type(exc).__name__
    if isinstance(message, str):
        message = _REQUEST_PREFIX.sub("", message).strip()
    parts = [str(p) for p in (status, code) if p is not None]
    return " ".join(parts) + (f": {message}" if message else "")


_TRANSPORT = (
    ("refused", "connection refused"),
    ("timed out", "timed out"),
    ("timeout", "timed out"),
    ("name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("reset by peer", "connection reset"),
    ("connectionerror", "cannot connect"),
)


def short_reason(exc: BaseException) -> str:
    """Why a read failed, in a few words: the HTTP status and code, or what the transport
    said (``connection refused``, ``timed out``), for the board's header."""
    status = getattr(exc, "status", None)
    if status is not None:
        return describe_error(exc)[:80]
    text = (str(exc) or type(exc).__name__).lower()
    for needle, said in _TRANSPORT:
        if needle in text:
            return said
    return (str(exc) or type(exc).__name__)[:80]


def needs_full_refresh(
    *,
    last_version: int | None,
    version: int | None,
    new_events: int,
    last_full: float | None,
    now: float,
    every: float = FULL_EVERY,
) -> bool:
    """Whether to re-fetch the lists: never fetched, the gate's version moved, events
    arrived (stage changes do not move the gate), or ``every`` seconds passed."""
    if last_full is None:
        return True
    if version is not None and version != last_version:
        return True
    return new_events > 0 or now - last_full >= every


class Feed:
    """Gathers snapshots through the client, cheaply: see the module docstring."""

    def __init__(
        self,
        client: TopClient,
        product: str | None = None,
        *,
        full_every: float = FULL_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.product = product
        self.full_every = full_every
        self._monotonic = monotonic
        self._wall = wall
        self.cursor: str | None = None
        self.events: deque[Mapping[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.events_allowed = True
        self.last_full: float | None = None
        self.snapshot = Snapshot(at=wall(), product=product)
        self.calls: list[str] = []  # paths fetched by the last poll (for tests and --json)
        self._failures: list[tuple[str, BaseException]] = []  # this poll's, by source

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        self.calls.append(path)
        return self.client.get(path, params)

    def _failed(self, problems: list[str], source: str, exc: BaseException) -> None:
        problems.append(f"{source}: {describe_error(exc)}")
        self._failures.append((source, exc))

    def invalidate(self) -> None:
        """Re-fetch the lists on the next poll (after an action)."""
        self.last_full = None

    def poll(self) -> Snapshot:
        self.calls = []
        self._failures = []
        problems: list[str] = []
        now = self._monotonic()
        at = self._wall()
        snap = replace(self.snapshot, at=at, problems=())
        try:
            gate = self._get(QUEUE_STATE) or {}
            snap = replace(
                snap,
                version=_int(gate.get("version")),
                max_skip=_int(gate.get("maxSkipSeconds")) or None,
            )
        except Exception as exc:
            self._failed(problems, "queue-state", exc)
            if getattr(exc, "status", None) is None:
                # Not reached at all (refused, timed out): the other reads would only wait
                # as long again each. The board keeps what it had, marked by its link.
                return self._done(snap, problems, at)
        new_events = self._poll_events(problems)
        snap = replace(snap, events=tuple(self.events))
        if self.snapshot.link.failing_since is not None:
            self.last_full = None  # back after an outage: what changed meanwhile, at once
        if needs_full_refresh(
            last_version=self.snapshot.version,
            version=snap.version,
            new_events=new_events,
            last_full=self.last_full,
            now=now,
            every=self.full_every,
        ):
            snap = self._full(snap, problems)
            if not any(source in ("jobs", "factories") for source, _ in self._failures):
                self.last_full = now
        return self._done(snap, problems, at)

    def _done(self, snap: Snapshot, problems: list[str], at: datetime) -> Snapshot:
        vital = [exc for source, exc in self._failures if source in VITAL]
        link = snap.link.failed(at, short_reason(vital[0])) if vital else snap.link.ok(at)
        self.snapshot = replace(snap, problems=tuple(problems), link=link)
        return self.snapshot

    def _poll_events(self, problems: list[str]) -> int:
        if not self.events_allowed:
            problems.append("events: need an operator token")
            return 0
        new = 0
        # The feed starts at the oldest event: catch up harder on the first poll.
        pages = EVENT_CATCHUP_PAGES if self.cursor is None else EVENT_PAGES
        for _ in range(pages):
            params = {"limit": str(EVENT_PAGE)}
            if self.cursor:
                params["after"] = self.cursor
            try:
                page = self._get(EVENTS, params) or {}
            except Exception as exc:
                if getattr(exc, "status", None) == 403:
                    self.events_allowed = False  # a factory token: do not ask again
                    problems.append("events: need an operator token")
                else:
                    self._failed(problems, "events", exc)
                return new
            raw = page.get("events") if isinstance(page, Mapping) else None
            events = [e for e in raw or [] if isinstance(e, Mapping)]
            self.events.extend(events)
            new += len(events)
            cursor = page.get("cursor") if isinstance(page, Mapping) else None
            cursor = cursor if isinstance(cursor, str) and cursor else None
            moved = cursor is not None and cursor != self.cursor
            self.cursor = cursor if cursor is not None else self.cursor
            if len(events) < EVENT_PAGE or not moved:
                break
        return new

    def _full(self, snap: Snapshot, problems: list[str]) -> Snapshot:
        # Counts come from the job list (fresh) when it is the whole product: an operator's,
        # every page of it. A factory token lists only the jobs it holds and jobs in review
        # (its events were refused), and a product past JOB_PAGES pages is listed only in
        # part: then from the metrics document (written by the metrics timer, up to its
        # period old).
        counts_from_list = False
        try:
            rows: list[JobRow] = []
            cursor: str | None = None
            for _ in range(JOB_PAGES):
                params = {"limit": str(JOB_PAGE)} | ({"cursor": cursor} if cursor else {})
                listed = self._get(JOBS, params) or {}
                rows += [job_row(j) for j in listed.get("jobs") or [] if isinstance(j, Mapping)]
                after = listed.get("next")
                cursor = after if isinstance(after, str) and after else None
                if cursor is None:
                    break
            else:
                problems.append(f"jobs: more than {len(rows)}; the board shows the newest")
            jobs = tuple(rows)
            snap = replace(snap, jobs=jobs)
            if self.events_allowed and cursor is None:
                snap = replace(snap, stages=stage_counts(jobs))
                counts_from_list = True
        except Exception as exc:
            self._failed(problems, "jobs", exc)
        try:
            listed = self._get(FACTORIES) or {}
            factories = tuple(
                factory_row(f) for f in listed.get("factories") or [] if isinstance(f, Mapping)
            )
            snap = replace(snap, factories=tuple(sorted(factories, key=_severity)))
        except Exception as exc:
            self._failed(problems, "factories", exc)
        try:
            metrics = self._get(METRICS) or {}
            oldest = metrics.get("oldestQueuedSeconds")
            budget = metrics.get("budget")
            snap = replace(
                snap,
                unroutable=_int(metrics.get("unroutable")),
                oldest_queued_seconds=float(oldest) if isinstance(oldest, int | float) else None,
                utilization=utilization_of(metrics.get("utilization")),
                budget_paused=(
                    bool(budget.get("paused") or budget.get("autoPaused"))
                    if isinstance(budget, Mapping)
                    else None
                ),
            )
            depth = metrics.get("queueDepth")
            if not counts_from_list and isinstance(depth, Mapping):
                snap = replace(snap, stages={str(k): _int(v) for k, v in depth.items()})
        except Exception as exc:
            self._failed(problems, "metrics", exc)
        if any(source in ("jobs", "factories") for source, _ in self._failures):
            return snap  # the lists shown are the last good ones: their time stays theirs
        return replace(snap, full_at=snap.at)


def move(selected: int, delta: int, count: int) -> int:
    """The cursor after a key: clamped to the list (0 when it is empty)."""
    if count <= 0:
        return 0
    return min(max(selected + delta, 0), count - 1)


def follow(rows: Sequence[JobRow | FactoryRow], row_id: str | None, index: int) -> int:
    """Where the selection is after a refresh: on the same row if it is still listed
    (lists re-sort as jobs move), else at the same position, clamped."""
    for i, row in enumerate(rows):
        if row.id == row_id:
            return i
    return move(index, 0, len(rows))


def window(count: int, selected: int, size: int) -> tuple[int, int]:
    """The ``[start, end)`` slice of a list of ``count`` rows shown in ``size`` rows, keeping
    ``selected`` in view (centred when it can be)."""
    if size <= 0:
        return 0, 0
    if count <= size:
        return 0, count
    start = min(max(selected - size // 2, 0), count - size)
    return start, start + size
