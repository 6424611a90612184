"""Fleet events: what the product's event log says of everything that is not a job's own
transition (enrollment, tokens, registration, commands, live/stale/down, budgets, settings,
channels, profiles, tracker bindings). Pure: ``at`` is a parameter.

An event is kept *in the document whose change it describes*, in the same write
(``with_event``): a factory's ``events`` say when it registered, was marked stale or was told
to drain, and the write that changed its ``status`` is the write that added the event, so the
log and the state cannot disagree. A document keeps its last ``EMBEDDED`` events; older ones
are spilled to event documents of their own (``spill_doc``) before the write that drops them,
as a job's history is. What has no document of its own in the product's partition (a token
lives in the system partition, a command in Table Storage) is logged *beside* its state, in
an event document whose id is derived from the operation (``beside_doc``), so a retried
operation logs once.

Every event is found by the feed the same way as a job's: its document's ``lastEventAt``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from fleet.domain.models import Model, Timestamp, format_ts, parse_ts

EMBEDDED = 16  # events a document keeps; the older ones spill by halves
EVENT_DOC = "fleet_event"  # the type of an event document of its own

# Every type of fleet event, with what it means (the docs and the UI filter read these).
TYPES: dict[str, str] = {
    "enrollment_token_created": "an operator created an enrollment token",
    "enrollment_token_revoked": "an operator revoked an enrollment token",
    "scaler_token_created": "an operator created a scaler token (an autoscaler's)",
    "scaler_token_revoked": "an operator revoked a scaler token",
    "factory_enrolled": "a factory enrolled with an enrollment token",
    "token_rotated": "a factory's token was rotated",
    "token_revoked": "a factory's tokens were revoked",
    "factory_registered": "a factory joined the fleet (or changed what it says of itself)",
    "factory_deregistered": "a factory left the fleet",
    "factory_pruned": "the healer removed a factory silent for too long",
    "factory_live": "a factory is heartbeating again",
    "factory_stale": "a factory went silent",
    "factory_down": "a factory stayed silent",
    "command_queued": "a command was queued for a factory",
    "command_acked": "a factory acknowledged a command",
    "budget_set": "the product's spend ceiling was set or cleared",
    "budget_paused": "the product's budget was paused",
    "budget_resumed": "the product's budget was resumed",
    "budget_adjusted": "the product's spend was corrected",
    "settings_changed": "the product's scheduler, preemption or alert settings changed",
    "channel_changed": "a channel's limits were set",
    "channel_deleted": "a channel was removed",
    "profile_saved": "a profile version was saved",
    "tracker_bound": "a GitHub repository was bound to the product",
    "tracker_unbound": "a GitHub repository binding was removed",
}


# What only admins see whole: tokens' ids, allowlists, seats and expiry (as the token lists
# are theirs). Others see that it happened, who did it and to which factory.
ADMIN_DETAILS = frozenset(
    {
        "enrollment_token_created",
        "enrollment_token_revoked",
        "scaler_token_created",
        "scaler_token_revoked",
        "factory_enrolled",
        "token_rotated",
    }
)


def redacted(item: dict[str, Any]) -> dict[str, Any]:
    """A feed item as a non-admin sees it: a token event without its token's particulars."""
    if not item.get("fleet") or item.get("type") not in ADMIN_DETAILS:
        return item
    return {**item, "reason": TYPES[str(item["type"])], "details": {}}


class FleetEvent(Model):
    """One fleet event. ``seq`` counts the events of the document that holds it."""

    seq: int
    type: str
    at: Timestamp
    actor: str = Field(description="Who: `operator:NAME`, `factory:NAME`, `healer`, ...")
    reason: str | None = None
    factory: str | None = None
    jobId: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def new_event(
    type: str,
    actor: str,
    at: datetime,
    *,
    reason: str | None = None,
    factory: str | None = None,
    job: str | None = None,
    **details: Any,
) -> FleetEvent:
    """An event not yet numbered (``with_event`` numbers it in its document)."""
    if type not in TYPES:
        raise ValueError(f"unknown fleet event type {type!r}")
    kept = {k: v for k, v in details.items() if v is not None}
    return FleetEvent(
        seq=0,
        type=type,
        at=at,
        actor=actor,
        reason=reason,
        factory=factory,
        jobId=job,
        details=kept,
    )


def with_event(doc: dict[str, Any], event: FleetEvent) -> tuple[dict[str, Any], list[FleetEvent]]:
    """The document with ``event`` appended (numbered after its last), and the events to
    spill first: when it holds more than ``EMBEDDED``, the older half of them."""
    seq = int(doc.get("eventSeq") or 0) + 1
    # Never before the document's latest event (a stamp taken before a retried read): a
    # reader whose cursor passed that one still finds this one after it.
    latest = doc.get("lastEventAt")
    at = max(event.at, parse_ts(latest)) if isinstance(latest, str) else event.at
    numbered = event.model_copy(update={"seq": seq, "at": at})
    events = [*map(FleetEvent.model_validate, doc.get("events") or ()), numbered]
    spill: list[FleetEvent] = []
    if len(events) > EMBEDDED:
        cut = len(events) - EMBEDDED // 2
        spill, events = events[:cut], events[cut:]
    changed = {
        **doc,
        "events": [e.model_dump(mode="json") for e in events],
        "eventSeq": seq,
        "lastEventAt": format_ts(numbered.at),
    }
    return changed, spill


def event_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields ``with_event`` changed, for a patch: ``events``, ``eventSeq``,
    ``lastEventAt``."""
    return {k: doc[k] for k in ("events", "eventSeq", "lastEventAt")}


def spill_doc(product: str, source: str, event: FleetEvent, ttl: int | None) -> dict[str, Any]:
    """An event of ``source`` moved to a document of its own (its id says which, so a spill
    written twice is one document). The feed keys it as it keyed it in ``source``."""
    return _event_doc(product, f"fev-{source}-{event.seq}", source, event, ttl)


def beside_doc(product: str, key: str, event: FleetEvent, ttl: int | None) -> dict[str, Any]:
    """An event whose state is not a document of this partition, in a document of its own
    whose id is ``key`` (derived from the operation: an operation retried logs once)."""
    doc_id = f"fev-{key}"
    return _event_doc(product, doc_id, doc_id, event.model_copy(update={"seq": 1}), ttl)


def _event_doc(
    product: str, doc_id: str, source: str, event: FleetEvent, ttl: int | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": doc_id,
        "productId": product,
        "type": EVENT_DOC,
        "source": source,
        "events": [event.model_dump(mode="json")],
        "eventSeq": event.seq,
        "lastEventAt": format_ts(event.at),
    }
    if ttl is not None:
        doc["ttl"] = ttl
    return doc


def sortable_stamp(at: datetime) -> str:
    """``at`` as a document id part (``20260101T000000000000Z``): an operation's time, for
    the key of an event logged beside its state when nothing else names the operation."""
    return at.strftime("%Y%m%dT%H%M%S%fZ")
