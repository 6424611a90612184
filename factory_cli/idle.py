"""When an ephemeral factory (``run --exit-when-idle SECONDS``) has been idle long enough
to leave the fleet.

Idle is what the coordinator said, not a guess: a stretch starts at the first answer that
found nothing for a factory holding nothing (a gate poll that skipped the claim, a claim that
found no job) and lasts while every later answer finds nothing too. Anything else ends it —
a job claimed, a review started, a pause, and a poll or claim that failed: an unreachable
coordinator is not an empty queue. After a job the stretch starts again at the first answer
once it is done (at once: the factory polls as a job ends).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IdleClock:
    seconds: float  # how long a stretch must last
    since: float | None = None  # monotonic start of the current stretch; None: not idle

    def found_nothing(self, now: float) -> None:
        """An answer at ``now`` found nothing, and the factory holds nothing."""
        if self.since is None:
            self.since = now

    def reset(self) -> None:
        """Work in hand, or no answer to go by: the next empty answer starts a new stretch."""
        self.since = None

    def deadline(self) -> float | None:
        """When the current stretch will have lasted ``seconds`` (None: no stretch)."""
        return None if self.since is None else self.since + self.seconds

    def expired(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def view(self, now: float) -> dict[str, float | None]:
        """What the state file (``status --json``) shows: the flag, and the stretch so far."""
        return {
            "exitAfterSeconds": self.seconds,
            "idleSeconds": None if self.since is None else round(now - self.since, 1),
        }
