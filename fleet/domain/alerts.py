"""Alerts: rules over a metrics snapshot, and the transitions between two evaluations. Pure.

Each rule yields at most one alert with a stable key (``starvation``, ``stale_factories``,
``stalled_jobs``, ``unroutable_jobs``, ``review_waiting``, ``budget``, ``no_live_factories``,
``pass_failed``: a timer's pass over the product failed until its message was poisoned).
An alert is *raised* when its key becomes active and *cleared* when it stops being active;
while it stays active its message and details follow the metrics without any new event, so
a condition that persists over many evaluations is one raise and, when it ends, one clear —
never a flap per evaluation. A threshold of 0 turns its rule off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from fleet.domain.models import format_ts

Severity = Literal["info", "warning", "critical"]
KEYS = (
    "no_live_factories",
    "starvation",
    "stale_factories",
    "stalled_jobs",
    "unroutable_jobs",
    "review_waiting",
    "budget",
    "pass_failed",
)
MAX_HISTORY = 100  # alert events kept in the alerts document (the feed and the webhook)


@dataclass(frozen=True)
class AlertRules:
    """Per-product thresholds (``PUT /api/fleet/settings`` ``{"alerts": {...}}``)."""

    enabled: bool = True
    starvationSeconds: float = 900.0  # a job queued this long while some live factory could run it
    staleFactories: int = 1  # this many stale or down factories
    stalledJobs: int = 1  # this many jobs flagged stalled by the self-healer
    unroutableJobs: int = 1  # this many queued jobs no known factory can run
    reviewWaitingSeconds: float = 3600.0  # a job in review this long without a decision
    budgetFraction: float = 0.9  # spend + reservations reach this share of the ceiling
    noLiveFactories: bool = True  # queued work and not one live factory

    def merged(self, raw: dict[str, Any]) -> AlertRules:
        """These rules with the known, well-typed values of ``raw`` applied."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = raw.get(f.name)
            if value is None:
                continue
            current = getattr(self, f.name)
            if isinstance(current, bool):
                if isinstance(value, bool):
                    values[f.name] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[f.name] = type(current)(value)
        return AlertRules(**{**asdict(self), **values})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alert:
    key: str
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _ids(values: Any) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list) else []


def evaluate(metrics: dict[str, Any], rules: AlertRules) -> list[Alert]:
    """The alerts a metrics snapshot (as ``fleet.coordinator.metrics`` writes it) calls for."""
    if not rules.enabled:
        return []
    alerts: list[Alert] = []
    depth = metrics.get("queueDepth") or {}
    queued = int(depth.get("queued", 0))
    fleet = metrics.get("factories") or {}
    live = int(fleet.get("live", 0))
    if rules.noLiveFactories and queued > 0 and live == 0:
        alerts.append(
            Alert(
                "no_live_factories",
                "critical",
                f"{queued} job(s) queued and no live factory",
                {"queued": queued, "factories": int(fleet.get("total", 0))},
            )
        )
    starving = metrics.get("starvation") or {}
    starved = int(starving.get("count", 0))
    if rules.starvationSeconds > 0 and starved > 0:
        oldest = starving.get("jobs") or []
        waited = max((float(j.get("waitingSeconds", 0)) for j in oldest), default=0.0)
        alerts.append(
            Alert(
                "starvation",
                "warning",
                f"{starved} job(s) a live factory could run have waited over "
                f"{int(rules.starvationSeconds)}s (longest {int(waited)}s)",
                {"count": starved, "jobs": [j.get("jobId") for j in oldest]},
            )
        )
    stale, down = _ids(fleet.get("stale")), _ids(fleet.get("down"))
    silent = len(stale) + len(down)
    if rules.staleFactories > 0 and silent >= rules.staleFactories:
        alerts.append(
            Alert(
                "stale_factories",
                "warning",
                f"{silent} factory(ies) silent: " + ", ".join([*stale, *down][:10]),
                {"stale": stale, "down": down},
            )
        )
    stalled = metrics.get("stalled") or {}
    stalled_count = int(stalled.get("count", 0))
    if rules.stalledJobs > 0 and stalled_count >= rules.stalledJobs:
        jobs = _ids(stalled.get("jobs"))
        alerts.append(
            Alert(
                "stalled_jobs",
                "warning",
                f"{stalled_count} job(s) stalled: their holders heartbeat, their progress does "
                "not move",
                {"count": stalled_count, "jobs": jobs},
            )
        )
    review = metrics.get("review") or {}
    waiting = review.get("waiting") or []
    if rules.reviewWaitingSeconds > 0 and waiting:
        longest = max(float(j.get("waitingSeconds", 0)) for j in waiting)
        alerts.append(
            Alert(
                "review_waiting",
                "warning",
                f"{int(review.get('overdue', len(waiting)))} job(s) in review for over "
                f"{int(rules.reviewWaitingSeconds)}s without a decision (longest {int(longest)}s)",
                {
                    "count": int(review.get("overdue", len(waiting))),
                    "jobs": [j.get("jobId") for j in waiting],
                },
            )
        )
    unroutable = int(metrics.get("unroutable", 0))
    known = int(fleet.get("total", 0)) > 0  # with no factory at all, no_live_factories says it
    if rules.unroutableJobs > 0 and unroutable >= rules.unroutableJobs and known:
        alerts.append(
            Alert(
                "unroutable_jobs",
                "warning",
                f"{unroutable} queued job(s) no known factory can run",
                {"count": unroutable, "jobs": _ids(metrics.get("unroutableJobs"))},
            )
        )
    failed = metrics.get("passFailures") or {}
    if int(failed.get("count", 0)) > 0:
        timers = _ids(failed.get("timers"))
        alerts.append(
            Alert(
                "pass_failed",
                "critical",
                f"{int(failed['count'])} timer pass(es) over this product failed until given up "
                f"({', '.join(timers)}; last at {failed.get('lastAt')}): see the logs",
                dict(failed),
            )
        )
    spend = metrics.get("spend") or {}
    fraction = spend.get("fraction")
    if (
        rules.budgetFraction > 0
        and isinstance(fraction, int | float)
        and fraction >= rules.budgetFraction
    ):
        alerts.append(
            Alert(
                "budget",
                "critical" if fraction >= 1.0 else "warning",
                f"spend and reservations are {fraction:.0%} of the "
                f"${spend.get('ceilingUsd')} ceiling",
                dict(spend),
            )
        )
    return alerts


@dataclass(frozen=True)
class AlertChange:
    kind: Literal["raised", "cleared"]
    alert: Alert


def changes(active: dict[str, dict[str, Any]], now_alerts: list[Alert]) -> list[AlertChange]:
    """What moved between the stored active alerts (by key) and a fresh evaluation."""
    current = {a.key: a for a in now_alerts}
    out = [AlertChange("raised", a) for key, a in current.items() if key not in active]
    for key in sorted(set(active) - set(current)):
        was = active[key]
        out.append(
            AlertChange(
                "cleared",
                Alert(
                    key,
                    was.get("severity", "warning"),
                    f"cleared: {was.get('message', key)}",
                    dict(was.get("details") or {}),
                ),
            )
        )
    return out


def apply(
    doc: dict[str, Any], now_alerts: list[Alert], now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The alerts document after an evaluation, and the events it appended (none when
    nothing was raised or cleared). ``doc`` is the stored document (or a fresh one)."""
    active: dict[str, dict[str, Any]] = dict(doc.get("active") or {})
    at = format_ts(now)
    seq = int(doc.get("seq", 0))
    events: list[dict[str, Any]] = []
    for change in changes(active, now_alerts):
        seq += 1
        alert = change.alert
        events.append(
            {
                "seq": seq,
                "type": f"alert_{change.kind}",
                "kind": change.kind,
                "key": alert.key,
                "severity": alert.severity,
                "message": alert.message,
                "details": alert.details,
                "at": at,
            }
        )
        if change.kind == "cleared":
            active.pop(alert.key, None)
    for alert in now_alerts:
        since = active.get(alert.key, {}).get("since", at)
        active[alert.key] = {
            "key": alert.key,
            "severity": alert.severity,
            "message": alert.message,
            "details": alert.details,
            "since": since,
            "updatedAt": at,
        }
    history = [*(doc.get("history") or []), *events][-MAX_HISTORY:]
    updated = {**doc, "active": active, "history": history, "seq": seq, "evaluatedAt": at}
    return updated, events
