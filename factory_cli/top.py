"""``fleet-factory top``: the terminal control plane.

A live board of one product: job counts per stage, the factories and their health, the jobs
(holder, lease epoch, time in stage, and their latest run: outcome, cost, tokens, diff stat),
alerts (stalled jobs, unroutable work, silent factories) and the recent events. Keys: up/down
(or k/j) select a job, ``s`` ship, ``r`` requeue, ``x`` reject (each asks for confirmation),
``q`` quit.

It refreshes through the queue-state gate, like a factory: every ``--interval`` seconds it
polls ``GET /fleet/queue-state`` (one point read) and the product-wide event feed by its
cursor (``GET /fleet/events?after=``), and re-fetches the lists (jobs, factories, metrics:
queries) only when the gate's version moved, new events arrived, or ``FULL_EVERY`` seconds
passed (factory health changes reach no gate and no event: the periodic refresh shows them).

Without a terminal (output piped) it prints one snapshot as text and exits; ``--json``
prints one snapshot as JSON. The event feed and the operator actions need an operator token;
with a factory token the board says so and shows the rest.

The data logic is pure (``Feed`` gathers a ``Snapshot`` through a client; ``render`` turns a
snapshot into lines; ``snapshot_json`` into JSON) and tested with a fake client; only
``_curses_main`` touches the terminal.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from factory_cli.runs import latest_run, run_summary

if TYPE_CHECKING:
    import curses

# Paths are relative to the client's base URL (``http://host:7071/api``).
QUEUE_STATE = "/fleet/queue-state"
METRICS = "/fleet/metrics"
FACTORIES = "/fleet/factories"
JOBS = "/fleet/jobs"
EVENTS = "/fleet/events"

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
EVENTS_KEPT = 50  # recent events kept for the board
EVENT_PAGES = 5  # event pages fetched per refresh at most (catching up on a busy product)
EVENT_CATCHUP_PAGES = 50  # on the first poll (the feed starts at the oldest event)
EVENT_PAGE = 200
JOB_PAGE = 1000  # jobs a page (the largest the coordinator serves)
JOB_PAGES = 5  # job pages fetched per refresh at most: a bigger product is listed in part
REASON = "operator via fleet-factory top"
RUN_WIDTH = 34  # the board's "last run" column at most (``shipped $12.34 1.2M tok +1234-56``)
SECTIONS = ("FACTORIES", "JOBS", "ALERTS", "EVENTS")  # the board's section headings

Action = Literal["ship", "requeue", "reject"]
KEYS: dict[str, Action] = {"s": "ship", "r": "requeue", "x": "reject"}


class TopClient(Protocol):
    """What the board needs of the CLI's HTTP client: parsed JSON back (``None`` for an
    empty reply), an exception with ``.status`` and ``.body`` on an HTTP error."""

    def get(self, path: str, params: Mapping[str, str] | None = None, /) -> Any: ...

    def post(self, path: str, json: Any = None, /) -> Any: ...


class RequestClient(Protocol):
    """The other shape the CLI's ``FleetClient`` has: one ``request`` method (``path`` after
    the base URL, JSON decoded, ``None`` for 204, an ``ApiError`` with ``.status``, ``.code``
    and ``.message`` on an HTTP error). ``run_top`` adapts it to ``TopClient``."""

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


class TopArgs(Protocol):
    @property
    def interval(self) -> float: ...

    @property
    def product(self) -> str | None: ...

    @property
    def json(self) -> bool: ...


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


@dataclass(frozen=True)
class Snapshot:
    """Everything the board shows, as last fetched. ``problems``: what could not be read."""

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
    full_at: datetime | None = None  # when the lists were last fetched


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
    )


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
    parts = [str(p) for p in (status, code) if p is not None]
    return " ".join(parts) + (f": {message}" if message else "")


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

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        self.calls.append(path)
        return self.client.get(path, params)

    def invalidate(self) -> None:
        """Re-fetch the lists on the next poll (after an action)."""
        self.last_full = None

    def poll(self) -> Snapshot:
        self.calls = []
        problems: list[str] = []
        now = self._monotonic()
        snap = replace(self.snapshot, at=self._wall(), problems=())
        try:
            gate = self._get(QUEUE_STATE) or {}
            snap = replace(
                snap,
                version=_int(gate.get("version")),
                max_skip=_int(gate.get("maxSkipSeconds")) or None,
            )
        except Exception as exc:
            problems.append(f"queue-state: {describe_error(exc)}")
        new_events = self._poll_events(problems)
        snap = replace(snap, events=tuple(self.events))
        if needs_full_refresh(
            last_version=self.snapshot.version,
            version=snap.version,
            new_events=new_events,
            last_full=self.last_full,
            now=now,
            every=self.full_every,
        ):
            snap = self._full(snap, problems)
            if not any(p.startswith(("jobs:", "factories:")) for p in problems):
                self.last_full = now
        self.snapshot = replace(snap, problems=tuple(problems))
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
                    problems.append(f"events: {describe_error(exc)}")
                return new
            events = [e for e in page.get("events") or [] if isinstance(e, Mapping)]
            self.events.extend(events)
            new += len(events)
            cursor = page.get("cursor")
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
            problems.append(f"jobs: {describe_error(exc)}")
        try:
            listed = self._get(FACTORIES) or {}
            factories = tuple(
                factory_row(f) for f in listed.get("factories") or [] if isinstance(f, Mapping)
            )
            snap = replace(snap, factories=tuple(sorted(factories, key=_severity)))
        except Exception as exc:
            problems.append(f"factories: {describe_error(exc)}")
        try:
            metrics = self._get(METRICS) or {}
            oldest = metrics.get("oldestQueuedSeconds")
            snap = replace(
                snap,
                unroutable=_int(metrics.get("unroutable")),
                oldest_queued_seconds=float(oldest) if isinstance(oldest, int | float) else None,
            )
            depth = metrics.get("queueDepth")
            if not counts_from_list and isinstance(depth, Mapping):
                snap = replace(snap, stages={str(k): _int(v) for k, v in depth.items()})
        except Exception as exc:
            problems.append(f"metrics: {describe_error(exc)}")
        return replace(snap, full_at=snap.at)


def act(client: TopClient, action: Action, job_id: str, reason: str = REASON) -> str:
    """Ship, requeue or reject a job; the line to show (never raises on an HTTP error)."""
    try:
        reply = client.post(f"{JOBS}/{job_id}/{action}", {"reason": reason})
    except Exception as exc:
        return f"{action} {job_id} failed: {describe_error(exc)}"
    job = reply.get("job", reply) if isinstance(reply, Mapping) else None
    stage = job.get("stage") if isinstance(job, Mapping) else None
    return f"{action} {job_id}: done" + (f", now {stage}" if stage else "")


def confirm_prompt(action: Action, job: JobRow) -> str:
    title = f" ({job.title[:40]})" if job.title else ""
    return f"{action} {job.id}{title} [{job.stage}]? y/N"


def move(selected: int, delta: int, count: int) -> int:
    """The cursor after a key: clamped to the list (0 when it is empty)."""
    if count <= 0:
        return 0
    return min(max(selected + delta, 0), count - 1)


def follow(jobs: Sequence[JobRow], job_id: str | None, index: int) -> int:
    """Where the selection is after a refresh: on the same job if it is still listed
    (lists re-sort as jobs move), else at the same position, clamped."""
    for i, job in enumerate(jobs):
        if job.id == job_id:
            return i
    return move(index, 0, len(jobs))


def window(count: int, selected: int, size: int) -> tuple[int, int]:
    """The ``[start, end)`` slice of a list of ``count`` rows shown in ``size`` rows, keeping
    ``selected`` in view (centred when it can be)."""
    if size <= 0:
        return 0, 0
    if count <= size:
        return 0, count
    start = min(max(selected - size // 2, 0), count - size)
    return start, start + size


# --------------------------------------------------------------------------- rendering


def ago(then: datetime | None, now: datetime) -> str:
    """A short age: 42s, 7m, 3h, 2d (``-`` when unknown)."""
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def event_line(event: Mapping[str, Any]) -> str:
    at = parse_ts(event.get("at"))
    clock = at.strftime("%H:%M:%S") if at else "--:--:--"
    if event.get("alert"):  # an alert raised or cleared (no job)
        kind = str(event.get("kind") or event.get("type") or "alert").removeprefix("alert_")
        what = f"{event.get('severity', '')} {event.get('key', '?')}: {event.get('message', '')}"
        return f"{clock} ALERT {kind} {what}"
    move_ = f"{event.get('fromStage') or 'new'}>{event.get('toStage') or '?'}"
    reason = event.get("reason")
    tail = f"  {reason}" if reason else ""
    return f"{clock} {event.get('jobId', '?')} {move_} {event.get('actor', '')}{tail}"


def render(
    snapshot: Snapshot,
    *,
    selected: int | None = None,
    width: int = 100,
    status: str | None = None,
    events: int = 10,
    max_factories: int | None = None,
    max_jobs: int | None = None,
) -> list[str]:
    """The board as lines of at most ``width`` characters. ``selected``: the index of the
    highlighted job in ``selectable(snapshot)`` (marked ``>``). ``max_factories`` and
    ``max_jobs`` bound those sections (the job rows scroll to keep the selection in view;
    factories are listed down, stale, then live, so the cut hides healthy ones)."""
    now = snapshot.at
    product = snapshot.product or "(token's product)"
    gate = "?" if snapshot.version is None else str(snapshot.version)
    refreshed = ago(snapshot.full_at, now) if snapshot.full_at else "never"
    # Stages with jobs in them, in the stage machine's order (then any the board does not know).
    known = [s for s in STAGES if snapshot.stages.get(s)]
    others = sorted(s for s, n in snapshot.stages.items() if n and s not in STAGES)
    counted = [(s, snapshot.stages[s]) for s in (*known, *others)]
    lines = [
        f"fleet top - product {product} - gate v{gate} - lists {refreshed} old - "
        f"{now.strftime('%H:%M:%S')} UTC",
        "stages: " + ("  ".join(f"{s} {n}" for s, n in counted) if counted else "-"),
    ]
    if snapshot.oldest_queued_seconds is not None:
        lines[-1] += f"  (oldest queued {int(snapshot.oldest_queued_seconds)}s)"
    health = {
        h: sum(1 for f in snapshot.factories if f.health == h) for h in ("live", "stale", "down")
    }
    lines += [
        "",
        f"FACTORIES ({health['live']} live, {health['stale']} stale, {health['down']} down)",
    ]
    shown = snapshot.factories
    if max_factories is not None and len(shown) > max_factories:
        shown = shown[: max(0, max_factories - 1)]
    for f in shown:
        flags = f" [{','.join(f.flags)}]" if f.flags else ""
        version = f" v{f.version}" if f.version else ""
        lines.append(
            f"  {f.id:<20} {f.health:<5} load {f.load}/{f.seats}  seen {ago(f.last_seen, now)}"
            f"{version}{flags}"
        )
    if len(shown) < len(snapshot.factories):
        lines.append(f"  ... {len(snapshot.factories) - len(shown)} more")
    if not snapshot.factories:
        lines.append("  (none)")
    jobs = selectable(snapshot)
    lines += [
        "",
        f"JOBS (running {len(running(snapshot))}; up/down select, s ship, r requeue, x reject)",
    ]
    idw = min(30, max([len("id"), *(len(j.id) for j in jobs)]))
    start, end = window(len(jobs), selected or 0, len(jobs) if max_jobs is None else max_jobs)
    runs = {j.id: _fit(run_summary(j.last_run), RUN_WIDTH) for j in jobs[start:end]}
    runw = max([len("last run"), *(len(r) for r in runs.values())])
    lines.append(
        f"    {'id':<{idw}} {'stage':<11} {'holder':<16} {'epoch':>5} {'age':>5}  "
        f"{'last run':<{runw}}  title"
    )
    if start:
        lines.append(f"    ... {start} above")
    for i, j in list(enumerate(jobs))[start:end]:
        mark = ">" if selected == i else " "
        flag = " STALLED" if j.stalled else ""
        lines.append(
            f"  {mark} {j.id:<{idw}} {j.stage:<11} {(j.holder or '-'):<16} {j.epoch:>5} "
            f"{ago(j.since, now):>5}  {runs[j.id]:<{runw}}  {j.title}{flag}"
        )
    if end < len(jobs):
        lines.append(f"    ... {len(jobs) - end} below")
    if not jobs:
        lines.append("    (none)")
    found = alerts(snapshot)
    lines += ["", f"ALERTS ({len(found)})"]
    lines += [f"  ! {a.text}" for a in found] or ["  (none)"]
    recent = list(snapshot.events)[-events:] if events > 0 else []
    lines += ["", "EVENTS (latest last)"]
    lines += [f"  {event_line(e)}" for e in recent] or ["  (none)"]
    lines += [f"  ? {p}" for p in snapshot.problems]
    if status:
        lines += ["", status]
    return [_fit(line, width) for line in lines]


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    def ts(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    now = snapshot.at
    return {
        "at": ts(now),
        "product": snapshot.product,
        "gate": {"version": snapshot.version, "maxSkipSeconds": snapshot.max_skip},
        "stages": dict(snapshot.stages),
        "oldestQueuedSeconds": snapshot.oldest_queued_seconds,
        "unroutable": snapshot.unroutable,
        "factories": [
            {
                "id": f.id,
                "health": f.health,
                "flags": list(f.flags),
                "load": f.load,
                "seats": f.seats,
                "version": f.version,
                "lastSeen": ts(f.last_seen),
            }
            for f in snapshot.factories
        ],
        "running": [
            {
                "id": j.id,
                "title": j.title,
                "stage": j.stage,
                "holder": j.holder,
                "epoch": j.epoch,
                "ageSeconds": int((now - j.since).total_seconds()) if j.since else None,
                "stalled": j.stalled,
                "lastRun": dict(j.last_run) if j.last_run is not None else None,
                "lastRunSummary": run_summary(j.last_run),
            }
            for j in running(snapshot)
        ],
        "alerts": [{"kind": a.kind, "text": a.text} for a in alerts(snapshot)],
        "events": [dict(e) for e in snapshot.events],
        "problems": list(snapshot.problems),
    }


# --------------------------------------------------------------------------- the command


def run_top(client: TopClient | RequestClient, args: TopArgs) -> int:
    """Entry point of ``fleet-factory top``. 0 on a clean exit; 1 when nothing could be
    read (the gate and the job list both failed). ``args``: ``.interval`` (seconds),
    ``.product`` (shown; the client sends ``X-Fleet-Product``), ``.json`` (absent: false)."""
    board = top_client(client)
    as_json = bool(getattr(args, "json", False))
    # The product shown: the flag's, else the one the client sends (FLEET_PRODUCT).
    product = getattr(args, "product", None) or getattr(client, "product", None)
    feed = Feed(board, product if isinstance(product, str) else None)
    if as_json or not (sys.stdout.isatty() and sys.stdin.isatty()):
        snapshot = feed.poll()
        if as_json:
            print(jsonlib.dumps(snapshot_json(snapshot), indent=2, sort_keys=True))
        else:
            width = shutil.get_terminal_size((100, 40)).columns
            print("\n".join(render(snapshot, width=width, events=EVENTS_KEPT)))
        return 1 if unreadable(snapshot) else 0
    import curses

    try:
        interval = max(0.5, float(getattr(args, "interval", 2.0)))
        return curses.wrapper(_curses_main, feed, board, interval)
    except KeyboardInterrupt:
        return 0


def unreadable(snapshot: Snapshot) -> bool:
    failed = {p.split(":", 1)[0] for p in snapshot.problems}
    return {"queue-state", "jobs"} <= failed


def _curses_main(
    screen: curses.window, feed: Feed, client: TopClient, interval: float
) -> int:  # pragma: no cover - needs a terminal
    import curses

    curses.curs_set(0)
    screen.timeout(200)
    selected, selected_id = 0, None
    status: str | None = None
    snapshot = feed.poll()
    next_poll = time.monotonic() + interval
    while True:
        jobs = selectable(snapshot)
        selected = follow(jobs, selected_id, selected)
        selected_id = jobs[selected].id if jobs else None
        rows, cols = screen.getmaxyx()
        budget = max(4, rows - 24)  # what the fixed lines and 8 events leave
        lines = render(
            snapshot,
            selected=selected if jobs else None,
            status=status,
            width=cols - 1,
            events=8,
            max_factories=max(2, budget // 3),
            max_jobs=max(2, budget - budget // 3),
        )
        _draw(screen, lines)
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        if key in (curses.KEY_UP, ord("k")):
            selected = move(selected, -1, len(jobs))
        elif key in (curses.KEY_DOWN, ord("j")):
            selected = move(selected, 1, len(jobs))
        elif 0 <= key < 256 and chr(key) in KEYS and jobs:
            action, job = KEYS[chr(key)], jobs[selected]
            if _confirm(screen, confirm_prompt(action, job)):
                status = act(client, action, job.id)
                feed.invalidate()
                next_poll = 0.0
            else:
                status = f"{action} {job.id}: not done"
        selected_id = jobs[selected].id if jobs else None
        if time.monotonic() >= next_poll:
            snapshot = feed.poll()
            next_poll = time.monotonic() + interval


def _draw(screen: curses.window, lines: Sequence[str]) -> None:  # pragma: no cover
    import curses

    screen.erase()
    rows, cols = screen.getmaxyx()
    for y, line in enumerate(lines[: rows - 1]):
        attr = curses.A_REVERSE if line.startswith("  > ") else curses.A_NORMAL
        if line.startswith(SECTIONS):
            attr |= curses.A_BOLD
        with contextlib.suppress(curses.error):  # the bottom-right cell cannot be written
            screen.addnstr(y, 0, line, cols - 1, attr)
    screen.refresh()


def _confirm(screen: curses.window, prompt: str) -> bool:  # pragma: no cover
    import curses

    rows, cols = screen.getmaxyx()
    screen.move(rows - 1, 0)
    screen.clrtoeol()
    screen.addnstr(rows - 1, 0, prompt, cols - 1, curses.A_REVERSE)
    screen.refresh()
    screen.timeout(-1)
    try:
        key = screen.getch()
    finally:
        screen.timeout(200)
    return key in (ord("y"), ord("Y"))
