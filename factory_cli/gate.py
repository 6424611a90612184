"""The queue-state gate, from the factory's side: when an idle poll turns into a claim.

A poll (``GET /fleet/queue-state``) costs the coordinator one point read; a claim costs a
query. The coordinator bumps the version after anything that may make work claimable, never
on a claim. So:

- claim when the version moved since the last claim that found nothing;
- after a claim that found a job, keep claiming (more may be waiting at this version)
  until one finds nothing: that version is then "empty" for this factory. Within a poll
  interval of that claim the factory claims without polling at all: the claim just saw the
  queue, so a poll could only say "claim" (a busy fleet saves one read per job; a factory
  back from a long job polls first, as an idle one does);
- claim anyway once ``maxSkipSeconds`` has passed since the last claim (a lost bump only
  delays work), jittered a little earlier so a fleet does not claim in lockstep.
"""

from __future__ import annotations

from dataclasses import dataclass

GATE_JITTER = 0.25  # forced claims come between 75% and 100% of maxSkipSeconds


def forced_interval(max_skip_seconds: float, u: float) -> float:
    """Seconds until the next forced claim, given a uniform random ``u`` in [0, 1): never
    more than ``maxSkipSeconds``, so the coordinator's promise holds."""
    return max(0.0, max_skip_seconds) * (1.0 - GATE_JITTER * u)


@dataclass
class Gate:
    empty_version: int | None = None  # the version at which the last claim found nothing
    forced_at: float = 0.0  # monotonic time of the next claim made whatever the version
    version: int | None = None  # the last version seen
    polls: int = 0
    hits: int = 0  # polls that skipped the claim (the gate saved a query)
    misses: int = 0  # polls that led to a claim
    claims: int = 0
    found: int = 0  # claims that returned a job
    direct: int = 0  # claims made without a poll, just after one that found a job
    found_at: float | None = None  # monotonic time of the last claim that found a job

    def claim_directly(self, now: float, within: float) -> bool:
        """Whether to claim at ``now`` without polling: the last claim found a job less than
        ``within`` seconds ago (and none found nothing since)."""
        direct = (
            self.empty_version is None
            and self.found_at is not None
            and now - self.found_at < within
        )
        if direct:
            self.direct += 1
        return direct

    def should_claim(self, version: int, now: float) -> bool:
        """A poll saw ``version`` at ``now``: claim, or skip?"""
        self.polls += 1
        self.version = version
        claim = self.empty_version is None or version != self.empty_version or now >= self.forced_at
        if claim:
            self.misses += 1
        else:
            self.hits += 1
        return claim

    def claimed(
        self, *, found: bool, version: int | None, now: float, max_skip: float, u: float
    ) -> None:
        """Record a claim's answer (``version``: the one polled just before, if any)."""
        self.claims += 1
        self.forced_at = now + forced_interval(max_skip, u)
        if found:
            self.found += 1
            self.found_at = now
            self.empty_version = None  # more may wait at this version: keep claiming
        else:
            self.found_at = None
            self.empty_version = version if version is not None else self.version

    def as_dict(self) -> dict[str, int | None]:
        return {
            "version": self.version,
            "polls": self.polls,
            "hits": self.hits,
            "misses": self.misses,
            "claims": self.claims,
            "found": self.found,
            "direct": self.direct,
        }
