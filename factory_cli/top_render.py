"""The board as text: ``render`` turns a ``Snapshot`` into lines, ``snapshot_json`` into JSON.

The header always says whether the data is current (``factory_cli.top_live``) and how many
seats are in use; a section whose data is not current says as of when, and one never read
says so rather than ``(none)``: an outage never looks like a quiet product.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from factory_cli.runs import run_summary
from factory_cli.top_board import (
    STAGES,
    Snapshot,
    alerts,
    running,
    selectable,
    utilization,
    window,
)
from factory_cli.top_events import event_line
from factory_cli.top_live import STALE_AFTER, age, link_state, link_text

RUN_WIDTH = 34  # the board's "last run" column at most (``shipped $12.34 1.2M tok +1234-56``)
SECTIONS = ("FACTORIES", "JOBS", "ALERTS", "EVENTS")  # the board's section headings


def ago(then: datetime | None, now: datetime) -> str:
    """A short age: 42s, 7m, 3h, 2d (``-`` when unknown)."""
    return "-" if then is None else age(then, now)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def utilization_text(snapshot: Snapshot) -> str:
    """``util 3/8 seats 38%`` (``util ?`` before anything was read)."""
    used = utilization(snapshot)
    if used is None:
        return "util ?"
    share = f" {round(used.fraction * 100)}%" if used.fraction is not None else ""
    return f"util {used.held}/{used.seats} seats{share}"


def render(
    snapshot: Snapshot,
    *,
    selected: int | None = None,
    selected_factory: int | None = None,
    width: int = 100,
    status: str | None = None,
    events: int = 10,
    max_factories: int | None = None,
    max_jobs: int | None = None,
    now: datetime | None = None,
    stale_after: float = STALE_AFTER,
    footer: Sequence[str] = (),
) -> list[str]:
    """The board as lines of at most ``width`` characters. ``selected``: the index of the
    highlighted job in ``selectable(snapshot)``, ``selected_factory`` of the highlighted
    factory (each marked ``>``). ``max_factories`` and ``max_jobs`` bound those sections (the
    rows scroll to keep the selection in view; factories are listed down, stale, then live, so
    a cut hides healthy ones). ``now``: the clock the ages are read at (default: the
    snapshot's time). ``footer``: lines shown last (the keys)."""
    now = now or snapshot.at
    product = snapshot.product or "(token's product)"
    gate = "?" if snapshot.version is None else str(snapshot.version)
    refreshed = ago(snapshot.full_at, now) if snapshot.full_at else "never"
    state = link_state(snapshot.link, now, stale_after)
    current = state in ("live", "connecting")
    # A section's data when it is not current: as of the last good poll (or never read).
    good = snapshot.link.last_good or snapshot.full_at
    as_of = (
        ""
        if current
        else f" - as of {good.strftime('%H:%M:%S')}, not current"
        if good and snapshot.full_at
        else " - not read yet"
    )
    none = "(none)" if snapshot.full_at else "(not read yet)"
    budget = {True: " - BUDGET PAUSED", False: " - budget open", None: ""}[snapshot.budget_paused]
    # Stages with jobs in them, in the stage machine's order (then any the board does not know).
    known = [s for s in STAGES if snapshot.stages.get(s)]
    others = sorted(s for s, n in snapshot.stages.items() if n and s not in STAGES)
    counted = [(s, snapshot.stages[s]) for s in (*known, *others)]
    lines = [
        f"fleet top - product {product} - {link_text(snapshot.link, now, stale_after)}",
        f"{utilization_text(snapshot)} - gate v{gate} - lists {refreshed} old{budget} - "
        f"{now.strftime('%H:%M:%S')} UTC",
        "stages: " + ("  ".join(f"{s} {n}" for s, n in counted) if counted else "-"),
    ]
    if snapshot.oldest_queued_seconds is not None:
        lines[-1] += f"  (oldest queued {int(snapshot.oldest_queued_seconds)}s)"
    lines += _factories(snapshot, selected_factory, max_factories, now, as_of, none)
    lines += _jobs(snapshot, selected, max_jobs, now, as_of, none)
    found = alerts(snapshot)
    lines += ["", f"ALERTS ({len(found)}){as_of}"]
    lines += [f"  ! {a.text}" for a in found] or [f"  {none}"]
    recent = list(snapshot.events)[-events:] if events > 0 else []
    lines += ["", f"EVENTS (latest last, {len(snapshot.events)} kept){as_of}"]
    lines += [f"  {event_line(e)}" for e in recent] or [f"  {none}"]
    lines += [f"  ? {p}" for p in snapshot.problems]
    if status:
        lines += ["", status]
    lines += footer
    return [_fit(line, width) for line in lines]


def _factories(
    snapshot: Snapshot,
    selected: int | None,
    limit: int | None,
    now: datetime,
    as_of: str,
    none: str,
) -> list[str]:
    factories = snapshot.factories
    health = {h: sum(1 for f in factories if f.health == h) for h in ("live", "stale", "down")}
    lines = [
        "",
        f"FACTORIES ({health['live']} live, {health['stale']} stale, {health['down']} down){as_of}",
    ]
    count = len(factories)
    if limit is None or count <= limit:
        start, end = 0, count
    elif selected is None:
        start, end = 0, max(0, limit - 1)  # the cut hides the healthy ones
    else:
        start, end = window(count, selected, max(1, limit - 1))
    if start:
        lines.append(f"    ... {start} above")
    for i in range(start, end):
        f = factories[i]
        mark = ">" if selected == i else " "
        flags = f" [{','.join(f.flags)}]" if f.flags else ""
        version = f" v{f.version}" if f.version else ""
        lines.append(
            f"  {mark} {f.id:<20} {f.health:<5} load {f.load}/{f.seats}  "
            f"seen {ago(f.last_seen, now)}{version}{flags}"
        )
    if end < count:
        lines.append(f"    ... {count - end} more")
    if not factories:
        lines.append(f"  {none}")
    return lines


def _jobs(
    snapshot: Snapshot,
    selected: int | None,
    limit: int | None,
    now: datetime,
    as_of: str,
    none: str,
) -> list[str]:
    jobs = selectable(snapshot)
    lines = ["", f"JOBS (running {len(running(snapshot))}){as_of}"]
    idw = min(30, max([len("id"), *(len(j.id) for j in jobs)]))
    start, end = window(len(jobs), selected or 0, len(jobs) if limit is None else limit)
    runs = {j.id: _fit(run_summary(j.last_run), RUN_WIDTH) for j in jobs[start:end]}
    runw = max([len("last run"), *(len(r) for r in runs.values())])
    lines.append(
        f"    {'id':<{idw}} {'stage':<11} {'holder':<16} {'epoch':>5} {'pri':>3} {'age':>5}  "
        f"{'last run':<{runw}}  title"
    )
    if start:
        lines.append(f"    ... {start} above")
    for i, j in list(enumerate(jobs))[start:end]:
        mark = ">" if selected == i else " "
        flag = " STALLED" if j.stalled else ""
        priority = "-" if j.priority is None else str(j.priority)
        lines.append(
            f"  {mark} {j.id:<{idw}} {j.stage:<11} {(j.holder or '-'):<16} {j.epoch:>5} "
            f"{priority:>3} {ago(j.since, now):>5}  {runs[j.id]:<{runw}}  {j.title}{flag}"
        )
    if end < len(jobs):
        lines.append(f"    ... {len(jobs) - end} below")
    if not jobs:
        lines.append(f"    {none}")
    return lines


def snapshot_json(snapshot: Snapshot, stale_after: float = STALE_AFTER) -> dict[str, Any]:
    def ts(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    now = snapshot.at
    used = utilization(snapshot)
    link = snapshot.link
    return {
        "at": ts(now),
        "product": snapshot.product,
        "link": {
            "state": link_state(link, now, stale_after),
            "lastGood": ts(link.last_good),
            "failingSince": ts(link.failing_since),
            "failure": link.failure,
        },
        "gate": {"version": snapshot.version, "maxSkipSeconds": snapshot.max_skip},
        "utilization": (
            {
                "held": used.held,
                "seats": used.seats,
                "fraction": used.fraction,
                "source": used.source,
            }
            if used
            else None
        ),
        "budgetPaused": snapshot.budget_paused,
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
                "priority": j.priority,
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
