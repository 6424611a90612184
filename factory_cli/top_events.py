"""The product event log as the board shows it: one line per event, whatever its kind.

``GET /fleet/events`` serves three kinds, oldest first:

- a job's event: ``{jobId, seq, type, at, actor, fromStage, toStage, reason, ...}``;
- an alert raised or cleared: ``{alert: true, type, kind, key, severity, message, at, ...}``;
- a fleet operation: ``{fleet: true, jobId|null, factory|null, type, at, actor, reason,
  details}`` (enrollment, tokens, commands, health changes, healer verdicts, budgets).

Fields the board does not know are ignored, missing ones shown as ``?`` or left out, and every
value is cleaned of control characters: one event is one line, whatever a writer put in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from factory_cli.top_board import parse_ts

Kind = Literal["job", "alert", "fleet"]

DETAILS_SHOWN = 4  # details of a fleet event shown at most (scalars only)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean(value: Any, limit: int = 160) -> str:
    """``value`` as one short line (``""`` for None)."""
    if value is None:
        return ""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "~"


def event_kind(event: Mapping[str, Any]) -> Kind:
    if event.get("alert") is True:
        return "alert"
    if event.get("fleet") is True:
        return "fleet"
    return "job"


def _details(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    shown = [
        f"{clean(k, 30)}={clean(v, 40)}"
        for k, v in value.items()
        if isinstance(v, str | int | float | bool) and v != ""
    ][:DETAILS_SHOWN]
    return f" [{', '.join(shown)}]" if shown else ""


def _words(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def event_line(event: Mapping[str, Any]) -> str:
    at = parse_ts(event.get("at"))
    clock = at.strftime("%H:%M:%S") if at else "--:--:--"
    kind = event_kind(event)
    if kind == "alert":  # an alert raised or cleared (no job)
        what = clean(event.get("kind") or event.get("type") or "alert").removeprefix("alert_")
        key = clean(event.get("key")) or "?"
        return _words(
            clock,
            "ALERT",
            what,
            clean(event.get("severity")),
            f"{key}:",
            clean(event.get("message")),
        )
    actor = clean(event.get("actor"), 60)
    reason = clean(event.get("reason"))
    if kind == "fleet":
        factory, job = clean(event.get("factory"), 64), clean(event.get("jobId"), 64)
        line = _words(
            clock,
            "FLEET",
            clean(event.get("type"), 40) or "?",
            f"factory {factory}" if factory else "",
            f"job {job}" if job else "",
            f"by {actor}" if actor else "",
        )
        return line + (f": {reason}" if reason else "") + _details(event.get("details"))
    kind_ = clean(event.get("type"), 40)
    frm, to = clean(event.get("fromStage"), 20), clean(event.get("toStage"), 20)
    move = f"{frm or 'new'}>{to}" if to else ""
    line = _words(
        clock,
        clean(event.get("jobId"), 64) or "?",
        kind_ if kind_ not in ("", "transition") or not move else "",
        move,
        actor,
    )
    return line + (f"  {reason}" if reason else "")
