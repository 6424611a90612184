"""Fleet health: heartbeats, the operator's control channel, deregistration, the self-healer.

``FleetHealth`` is the front the handlers, the timer and the tests hold; each of its methods is
one part's, each part given the coordinator (its stores and clock) and what else it uses:

- ``fleet.coordinator.heartbeats``  heartbeats in Table Storage, one entity per factory; a
  normal heartbeat writes nothing to Cosmos; the last heartbeat and the fleet list's briefs;
- ``fleet.coordinator.commands``    operator commands waiting in the ``commands`` table,
  riding on every heartbeat reply until the factory acknowledges them;
- ``fleet.coordinator.healer``      one self-healer pass: read, plan, write what changed;
- ``fleet.domain.healer``           the healer's decisions (``plan_heal``), pure;
- ``fleet.domain.fleet_state``      what a heartbeat says and what is kept of it, pure.

Leaving the fleet (``deregister``) spans them all, and the factory's tokens too, so it is
here: a factory deregistered (by itself, an operator or the healer's prune) has its tokens
revoked, so nothing it sends is accepted any more.

The names the rest of the code imports from this module are re-exported from their homes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from fleet.coordinator.commands import (
    COMMAND_ID_PATTERN,
    COMMAND_KINDS,
    COMMANDS,
    Command,
    CommandKind,
    Commands,
    commands_partition,
)
from fleet.coordinator.healer import Healer, HealReport
from fleet.coordinator.heartbeats import (
    HEARTBEATS,
    JOBS_PART_CHARS,
    MAX_JOBS_JSON_CHARS,
    HeartbeatReply,
    Heartbeats,
    encode_jobs,
    heartbeat_record,
    jobs_properties,
)
from fleet.coordinator.service import Coordinator
from fleet.coordinator.token_store import TokenStore, VerifiedCache
from fleet.domain.audit import new_event
from fleet.domain.fleet_state import (
    FACTORY_PREFIX,
    MAX_JOBS_PER_BEAT,
    MAX_OUTPUT_LINE_CHARS,
    Beat,
    BeatStatus,
    FactoryDeregistered,
    FactoryNotFound,
    FactoryStatus,
    HeartbeatRecord,
    JobProgress,
    NotHeld,
    TrackedJob,
    progress_fingerprint,
    short_id,
    track,
)
from fleet.domain.healer import (
    HEALER,
    HealPlan,
    HealthConfig,
    Release,
    StallChange,
    StatusChange,
    assigned_at,
    last_contact,
    plan_heal,
    status_after,
)
from fleet.domain.models import Job
from fleet.errors import NotFound, SettingsError
from fleet.settings import HealerSettings
from fleet.store.ports import Set

# Names the rest of the code imports from here.
__all__ = [
    "COMMANDS",
    "COMMAND_ID_PATTERN",
    "COMMAND_KINDS",
    "FACTORY_PREFIX",
    "HEALER",
    "HEARTBEATS",
    "JOBS_PART_CHARS",
    "MAX_JOBS_JSON_CHARS",
    "MAX_JOBS_PER_BEAT",
    "MAX_OUTPUT_LINE_CHARS",
    "Beat",
    "BeatStatus",
    "Command",
    "CommandKind",
    "FactoryDeregistered",
    "FactoryNotFound",
    "FactoryStatus",
    "FleetHealth",
    "HealPlan",
    "HealReport",
    "HealthConfig",
    "HeartbeatRecord",
    "HeartbeatReply",
    "JobProgress",
    "NotHeld",
    "Release",
    "StallChange",
    "StatusChange",
    "TokenRevoker",
    "TrackedJob",
    "assigned_at",
    "commands_partition",
    "encode_jobs",
    "fleet_health",
    "heartbeat_record",
    "jobs_properties",
    "last_contact",
    "plan_heal",
    "progress_fingerprint",
    "short_id",
    "status_after",
    "track",
]

log = logging.getLogger(__name__)


class TokenRevoker(Protocol):
    """What revokes a factory's tokens (``fleet.coordinator.tokens.Tokens`` is one: it also
    clears them from its instance's cache of verified tokens)."""

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int: ...


class _StoredTokens:
    """Revokes token documents without the app's cache of verified tokens: for a FleetHealth
    built without the app's ``Tokens`` (tests, tools). The tokens are refused everywhere at
    once but on the gate poll, where an instance's cache may trust them for its TTL."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._clock = coordinator.clock
        self._store = TokenStore(coordinator.stores.documents, VerifiedCache(1), _no_entropy)

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int:
        return self._store.revoke_of_factory(product, factory_id, actor, self._clock.now())


def _no_entropy(n: int) -> str:
    raise AssertionError("deregistration issues no token")


class FleetHealth:
    """Heartbeats, commands, deregistration and the self-healer over the coordinator's
    stores and clock; ``tokens`` revokes a deregistered factory's tokens (the app's
    ``Tokens``, so that its gate cache forgets them too)."""

    def __init__(
        self,
        coordinator: Coordinator,
        config: HealthConfig | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        *,
        tokens: TokenRevoker | None = None,
    ) -> None:
        self.coord = coordinator
        self.config = (config or HealthConfig()).resolved(coordinator.config.stale_after_seconds)
        self._docs = coordinator.stores.documents
        self._tokens = tokens if tokens is not None else _StoredTokens(coordinator)
        self.commands = Commands(coordinator, entropy)
        self.heartbeats = Heartbeats(coordinator, self.commands, self.config.heartbeat_seconds)
        self.healer = Healer(
            coordinator, self.config, self.heartbeats, self.deregister, self._restart_engine
        )

    @property
    def heartbeat_seconds(self) -> int:
        """The cadence factories are told to keep: a third of the stale threshold."""
        return self.config.heartbeat_seconds

    # --- heartbeats (``Heartbeats``) -----------------------------------------------------

    def heartbeat(self, product: str, factory_id: str, beat: Beat) -> HeartbeatReply:
        """Record a heartbeat; answer the cadence and the pending commands
        (``Heartbeats.heartbeat``: its cost)."""
        return self.heartbeats.heartbeat(product, factory_id, beat)

    def last_heartbeat(self, product: str, factory_id: str) -> dict[str, Any]:
        """The factory's last heartbeat, its progress per job, and its pending commands."""
        return self.heartbeats.last(product, factory_id)

    def heartbeat_summaries(self, product: str) -> dict[str, dict[str, Any]]:
        """Every factory's last heartbeat in brief, for the fleet list
        (``Heartbeats.summaries``: its shape and cost)."""
        return self.heartbeats.summaries(product)

    # --- the control channel (``Commands``) ----------------------------------------------

    def command(
        self,
        product: str,
        factory_id: str,
        kind: str,
        *,
        by: str,
        job_id: str | None = None,
        reason: str | None = None,
        issued_by: str | None = None,
    ) -> tuple[Command, Job | None]:
        """Queue an operator command for the factory's next heartbeats (until it acks);
        ``Commands.command`` says what each kind does. Returns the command, and the
        cancelled job if any."""
        return self.commands.command(
            product, factory_id, kind, by=by, job_id=job_id, reason=reason, issued_by=issued_by
        )

    def pending_commands(self, product: str, factory_id: str) -> list[Command]:
        return self.commands.pending(product, factory_id)

    def _restart_engine(self, product: str, factory_id: str, job_id: str, reason: str) -> str:
        """The healer's ``restart-engine`` for one stalled job, to its holder: the command's
        id."""
        command, _ = self.commands.command(
            product,
            factory_id,
            "restart-engine",
            by=HEALER,
            job_id=job_id,
            reason=reason,
            issued_by=HEALER,
        )
        return command.id

    # --- leaving the fleet -------------------------------------------------------------

    def deregister(self, product: str, factory_id: str, by: str) -> None:
        """The factory leaves the fleet (``by`` says who decided: the factory, an operator,
        the healer): its tokens are revoked, its document is marked ``deregistered`` (the
        reaper then requeues whatever it still holds, fencing it), its heartbeat and pending
        commands are removed. Idempotent; FactoryNotFound only if there was never anything
        to remove.

        The tokens are revoked before the mark and again after it: a crash between the writes
        leaves a factory refused but not yet marked (never marked and still accepted), and a
        rotation racing this either sees the mark or issued its token before the second pass.
        Cost: one token query and one patch per live token, twice; one patch, one table read
        and delete, one table query."""
        revoked = self._tokens.revoke_tokens(product, factory_id, by)
        found = False
        pruned = by == HEALER
        event = new_event(
            "factory_pruned" if pruned else "factory_deregistered",
            by,
            self.coord.clock.now(),
            reason="silent for too long" if pruned else "left the fleet",
            factory=factory_id,
        )
        try:
            self.coord.fleet_log.patch(
                product,
                FACTORY_PREFIX + factory_id,
                [Set("/deregistered", True)],
                event,
                done=lambda doc: bool(doc.get("deregistered")),  # once: its event too
            )
            found = True
        except NotFound:
            pass
        if self.heartbeats.forget(product, factory_id):
            found = True
        self.commands.clear(product, factory_id)
        revoked += self._tokens.revoke_tokens(product, factory_id, by)
        if found:  # what it held goes back now: its writes are fenced from here on
            self.coord.take_back_from(
                product, factory_id, f"holder {factory_id} left the fleet", by
            )
        if not found:
            raise FactoryNotFound(f"factory {factory_id} not found", factory=factory_id)
        log.info(
            "factory %s/%s deregistered by %s (%d tokens revoked)", product, factory_id, by, revoked
        )

    # --- the self-healer (``Healer``) ----------------------------------------------------

    def heal(self, product: str) -> HealReport:
        """One healer pass over one product (``Healer.heal``: its cost). Safe to run
        concurrently and repeatedly: every write is conditional on what was read."""
        return self.healer.heal(product)


# --- built from settings ----------------------------------------------------------------


def fleet_health(
    coordinator: Coordinator, healer: HealerSettings, tokens: TokenRevoker | None = None
) -> FleetHealth:
    """The FleetHealth of this coordinator with the healer's thresholds from settings, which
    revokes a deregistered factory's tokens through ``tokens`` (the composition root builds
    one per process, over the app's ``Tokens``: ``fleet.context.context_for``)."""
    stale = coordinator.config.stale_after_seconds
    if healer.down_after_seconds <= stale:
        raise SettingsError(
            "HEALER_DOWN_AFTER_SECONDS",
            f"must be longer than the stale threshold ({stale} s)",
        )
    config = HealthConfig(
        down_after_seconds=healer.down_after_seconds,
        stall_after_seconds=healer.stall_after_seconds,
        never_started_seconds=healer.never_started_seconds,
        prune_after_seconds=healer.prune_after_seconds,
        avoid_grace_seconds=healer.avoid_grace_seconds,
    )
    return FleetHealth(coordinator, config, tokens=tokens)
