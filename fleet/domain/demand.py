"""Demand: what a product's queued work asks of the fleet, by the capability set it requires.
Pure: the coordinator reads (``fleet.coordinator.demand``), this decides.

For each capability set some queued or running job requires (its ``capabilities``, sorted):

- ``queued``: jobs waiting for it;
- ``routable``: those of them a factory with that set could take now, budget permitting (the
  product's budget paused, or a job's estimate over what is left: not routable; a factory more
  would not help them);
- ``oldestQueuedAt``: the submit time of the oldest waiting one;
- ``running``: jobs of that set under lease;
- ``liveSeats``: the seats of live factories, neither paused nor draining, that could serve
  it (their capabilities include the set).

What an autoscaler needs: a set with routable jobs and no free seat wants a factory more; a set
with nothing queued or running wants none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fleet.domain.scheduler import FactoryView

CapabilitySet = tuple[str, ...]


@dataclass(frozen=True)
class Waiting:
    """What demand reads of a queued job."""

    capabilities: CapabilitySet
    submitted: str  # its createdAt, as stored (fixed-width UTC text: sorts as time)
    routable: bool


@dataclass(frozen=True)
class SetDemand:
    capabilities: CapabilitySet
    queued: int
    routable: int
    oldestQueuedAt: str | None
    running: int
    liveSeats: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "capabilities": list(self.capabilities)}


def capability_set(capabilities: Iterable[str]) -> CapabilitySet:
    return tuple(sorted(set(capabilities)))


def demand_of(
    waiting: Sequence[Waiting], running: Sequence[CapabilitySet], fleet: Sequence[FactoryView]
) -> list[SetDemand]:
    """Demand by capability set, the sets in order (the empty set first)."""
    sets = sorted({w.capabilities for w in waiting} | set(running))
    serving = [v for v in fleet if v.live and not v.paused]
    out = []
    for needed in sets:
        queued = [w for w in waiting if w.capabilities == needed]
        out.append(
            SetDemand(
                capabilities=needed,
                queued=len(queued),
                routable=sum(1 for w in queued if w.routable),
                oldestQueuedAt=min((w.submitted for w in queued), default=None),
                running=sum(1 for r in running if r == needed),
                liveSeats=sum(v.seats for v in serving if set(needed) <= v.capabilities),
            )
        )
    return out


def sets_from_doc(doc: Mapping[str, Any]) -> list[SetDemand]:
    """The sets a stored demand document holds (what ``SetDemand.as_dict`` wrote)."""
    return [
        SetDemand(
            capabilities=capability_set(s.get("capabilities") or ()),
            queued=int(s.get("queued", 0)),
            routable=int(s.get("routable", 0)),
            oldestQueuedAt=s.get("oldestQueuedAt"),
            running=int(s.get("running", 0)),
            liveSeats=int(s.get("liveSeats", 0)),
        )
        for s in doc.get("sets") or ()
    ]
