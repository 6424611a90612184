"""The coordinator's tunables, and what each of its parts works with
(``fleet.coordinator.service``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.domain.scheduler import DEFAULT_WEIGHTS, Weights
from fleet.settings import AttemptQuotas
from fleet.store.ports import DocumentStore


@dataclass(frozen=True)
class CoordinatorConfig:
    claim_candidates: int = 16  # K: queued jobs fetched per claim
    # How long one read of the queue's head serves this instance's claims (0: every claim
    # reads it). Each candidate is still written conditionally on the etag it was read with.
    queued_list_seconds: float = 1.0
    max_skip_seconds: int = 30  # a gated factory still claims at least this often
    stale_after_seconds: int = 90  # a factory silent this long is stale
    event_ttl_seconds: int = 90 * 24 * 3600
    reap_batch: int = 100
    artifacts_container: str = "artifacts"
    metrics_scan: int = 1000  # queued jobs the metrics timer checks for routability
    # A reservation or channel slot untouched this long with no live lease behind it is a
    # leftover of a crash (a claim takes milliseconds between reserving and writing).
    quota_quiet_seconds: float = 60.0
    write_retries: int = 8  # re-read-and-retry rounds on a lost CAS before giving up
    weights: Weights = DEFAULT_WEIGHTS  # unless the product's settings say otherwise
    settings_ttl_seconds: float = 30.0  # how long an instance trusts its cached settings
    # What one attempt may store (agent events and their bytes, artifacts).
    quotas: AttemptQuotas = field(default_factory=AttemptQuotas)


@dataclass(frozen=True, eq=False)
class Part:
    """A part of the coordinator: it reads and writes documents, tells time by the one
    clock and follows the tunables. What else it uses, it declares as fields of its own,
    given by the coordinator that builds it."""

    docs: DocumentStore
    clock: Clock
    config: CoordinatorConfig

    @property
    def fleet_log(self) -> FleetLog:
        """Writes fleet events with the state they describe (``fleet.coordinator.audit``)."""
        return FleetLog(
            self.docs, self.clock, self.config.event_ttl_seconds, self.config.write_retries
        )
