"""A deterministic simulation of the fleet on the in-memory twin, with an injected clock.

Each seed drives N factories racing for jobs, with crashes, pauses past lease expiry (so a
paused factory wakes up as a zombie holding a stale epoch), operator actions, lost
queue-state bumps, lost claim replies (the factory re-sends the claim with the same request id
and ``retry``, as ``fleet-factory run`` does), and store-level interleavings: before a
conditional write, another actor may run first and make the writer's etag stale. After every
step the invariants are checked:

- no job is held by two factories: every (job, epoch) is granted to exactly one factory,
  and the store's lease always names the factory that was granted the current epoch;
- a retried claim hands back only what that factory's lost claim won, with no new
  assignment (one ``assign`` event per epoch), or claims afresh;
- every zombie write is fenced: a write by a factory whose epoch is not current raises
  ``Fenced`` and leaves the job document exactly as it was;
- the audit trail agrees with the state: replaying each job's events (spilled + embedded)
  reproduces its stage, epoch and holder;
- every attempt has its run record: at most one run is open, the current epoch's while the
  job is leased, and every ended attempt's run is closed;
- no job is lost: after a final drain (everyone healthy, leases expired, reaper run, gated
  factories claiming), every job has reached a terminal stage.

With ``faults`` (a rate per store call), a ``FaultyDocuments`` layer at the store seam also
answers calls with the errors a real store gives — 429 with a retry-after, 503, timeouts —
and loses the responses of writes that succeeded (the caller sees ``StoreUnavailable``; the
write happened). Callers see only the project's errors and retry later, as a factory would.
Then also: no transition lost (every transition a caller was told about stays in the job's
history) or doubled (replay checks the chain), and one job per idempotency key.

Replay one seed with ``python -m tests.simulation.sim SEED [-v] [--faults RATE]``.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.clock import ManualClock
from fleet.domain.jobs import agrees
from fleet.domain.manifest import Manifest
from fleet.domain.models import Deps, Job
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import LEASED, TERMINAL, Action, Stage
from fleet.errors import (
    ConcurrencyConflict,
    Fenced,
    FleetError,
    IllegalTransition,
    StoreUnavailable,
)
from fleet.store.decorator import DocumentsDecorator
from fleet.store.memory import MemoryDocumentStore, memory_stores
from fleet.store.ports import Doc
from tests.support.storefaults import FaultyDocuments

PRODUCT = "sim"
CAPS = ("python", "node", "gpu")
LOST_REPLIES = 0.1  # the share of claim replies that never reach the factory


class InvariantBroken(AssertionError):
    pass


class RacingDocuments(DocumentsDecorator):
    """The twin, with a hook that may run another actor just before a conditional write,
    so the writer's etag goes stale exactly as when two instances race in Azure."""

    def __init__(self, inner: MemoryDocumentStore, rng: random.Random) -> None:
        super().__init__(inner)
        self.rng = rng
        self.interfere: Callable[[], None] | None = None
        self.race_probability = 0.15
        self._depth = 0

    def _maybe_race(self) -> None:
        if self.interfere is None or self._depth > 0 or self.rng.random() >= self.race_probability:
            return
        self._depth += 1
        try:
            self.interfere()
        finally:
            self._depth -= 1

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        if etag is not None:
            self._maybe_race()
        return self.inner.replace(doc, etag=etag)


@dataclass
class SimFactory:
    name: str
    caps: frozenset[str]
    held: dict[str, int] = field(default_factory=dict)  # job id -> the epoch it believes
    crashed: bool = False
    paused: bool = False
    gate_version: int = -1
    last_claim_at: float = -1e9
    lost_claim: str | None = None  # the request id of a claim whose reply never came
    requests: int = 0

    def view(self) -> FactoryView:
        return FactoryView(id=self.name, capabilities=self.caps, seats=3, load=len(self.held))


@dataclass
class SimResult:
    seed: int
    steps: int
    jobs: int
    claims: int
    fenced: int
    races: int
    log: list[str]
    faults: dict[str, int] = field(default_factory=dict)  # injected, by kind
    replays: int = 0  # retried claims answered with the job their lost reply carried


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        factories: int = 4,
        jobs: int = 6,
        steps: int = 80,
        faults: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # Its own stream, so that losing replies does not reshuffle everything else.
        self.reply_rng = random.Random(f"replies-{seed}")
        self.lost_replies = LOST_REPLIES
        self.clock = ManualClock()
        stores = memory_stores()
        assert isinstance(stores.documents, MemoryDocumentStore)
        self.twin = stores.documents
        self.racing = RacingDocuments(self.twin, self.rng)
        stores.documents = self.racing
        # Off during set-up; the run turns it on, the final drain off again.
        self.faulty: FaultyDocuments | None = None
        if faults > 0:
            self.faulty = FaultyDocuments(self.racing, self.rng, faults)
            stores.documents = self.faulty
        # Transitions a caller was told about: (job, seq, event type).
        self.acked: list[tuple[str, int, str]] = []
        self.coord = Coordinator(
            stores,
            clock=self.clock,
            config=CoordinatorConfig(max_skip_seconds=20),
            entropy=lambda n: self.rng.randbytes(n),
        )
        self._lose_bumps = False
        original_bump = self.coord.bump_gate

        def lossy_bump(product: str) -> None:
            if self._lose_bumps and self.rng.random() < 0.5:
                self.log.append("  (gate bump lost)")
                return
            original_bump(product)

        self.coord.bump_gate = lossy_bump
        self.factories = [
            SimFactory(
                name=f"f{i}",
                caps=frozenset(self.rng.sample(CAPS, self.rng.randint(1, len(CAPS)))) | {"python"},
            )
            for i in range(factories)
        ]
        self.target_jobs = jobs
        self.steps = steps
        # Quotas: a budget (sometimes without a ceiling), a capped channel, maybe preemption.
        self.ceiling = self.rng.choice((None, 4.0, 8.0))
        self.coord.budgets.put(PRODUCT, self.ceiling)
        self.channel_cap = self.rng.choice((1, 2))
        self.coord.channels.put(
            PRODUCT, "api", rate=self.rng.choice((None, 6.0)), burst=3, max_running=self.channel_cap
        )
        if self.rng.random() < 0.5:
            self.coord.put_product_settings(
                PRODUCT, preemption={"enabled": True, "minPriority": 8, "afterSeconds": 10}
            )
        for f in self.factories:
            self.coord.register_factory(PRODUCT, f.view(), "sim")
        self.job_ids: list[str] = []
        self.grants: dict[tuple[str, int], str] = {}  # (job, epoch) -> factory
        self.claims = 0
        self.replays = 0
        self.fenced = 0
        self.races = 0
        self.log: list[str] = []
        self.racing.interfere = self._interfere

    # --- helpers ---------------------------------------------------------------------

    def now_s(self) -> float:
        return self.clock.now().timestamp()

    def peek(self, job_id: str) -> Job:
        # No copy: Job.from_doc builds its own objects and nothing here mutates the doc.
        doc = self.twin.peek(PRODUCT, job_id, copy=False)
        assert doc is not None
        return Job.from_doc(doc)

    @contextlib.contextmanager
    def no_faults(self) -> Iterator[None]:
        """The checker's own reads see the truth, never an injected fault."""
        was = self.faulty is not None and self.faulty.enabled
        if self.faulty is not None:
            self.faulty.enabled = False
        try:
            yield
        finally:
            if self.faulty is not None:
                self.faulty.enabled = was

    def _adopt_orphans(self) -> None:
        """A submit whose answer was lost may still have created its job: it is a real job,
        so it must finish like the others."""
        for doc in self.twin.all_docs():
            if doc.get("type") == "job" and doc["id"] not in self.job_ids:
                self.job_ids.append(str(doc["id"]))
                self.log.append(f"  (job {doc['id']} created by a submit that saw an error)")

    def _adopt_grants(self, factory: SimFactory) -> None:
        """A claim whose answer was lost may still have assigned a job to the factory, which
        does not know it holds it: a real grant, left for the reaper once the lease expires."""
        for job_id in self.job_ids:
            job = self.peek(job_id)
            if job.lease is None or job.lease.holder != factory.name:
                continue
            key = (job_id, job.lease.epoch)
            if key not in self.grants:
                self.grants[key] = factory.name
                self.log.append(f"  ({factory.name} was granted {job_id} epoch {key[1]} unaware)")

    def _interfere(self) -> None:
        self.races += 1
        choice = self.rng.random()
        if choice < 0.5:
            self.log.append("  race: another factory claims first")
            self.claim(self.rng.choice(self.factories), forced=True)
        elif choice < 0.8:
            self.log.append("  race: the reaper runs first")
            self.reap()
        else:
            self.log.append("  race: an operator acts first")
            self.operator_step()

    # --- actors ----------------------------------------------------------------------

    def submit(self) -> None:
        caps = tuple(self.rng.sample(("node", "gpu"), self.rng.randint(0, 1)))
        deps: dict[str, Any] = {}
        if self.job_ids and self.rng.random() < 0.2:
            deps = {"jobs": (self.rng.choice(self.job_ids),), "mode": "all"}
        key = f"k{self.rng.randint(0, self.target_jobs)}" if self.rng.random() < 0.3 else None
        manifest = Manifest(
            title=f"job {len(self.job_ids)}",
            capabilities=("python", *caps),
            priority=self.rng.randint(0, 9),
            maxAttempts=self.rng.randint(1, 4),
            leaseSeconds=self.rng.choice((30, 60, 120)),
            idempotencyKey=key,
            deps=Deps.model_validate(deps) if deps else None,
            budgetUsd=self.rng.choice((0.0, 1.0, 2.5)),
            channel="api" if self.rng.random() < 0.4 else None,
        )
        try:
            job, created = self.coord.submit(PRODUCT, manifest, "operator:sim")
        except StoreUnavailable as exc:
            self.log.append(f"submit failed: {exc.message}")
            self._adopt_orphans()
            return
        if created:
            self.job_ids.append(job.id)
        self.log.append(f"submit {job.id} created={created} stage={job.stage}")

    def claim(self, factory: SimFactory, *, forced: bool = False) -> None:
        if factory.crashed or factory.paused:
            return
        try:
            self._claim(factory, forced)
        except StoreUnavailable as exc:
            self.log.append(f"{factory.name} claim failed: {exc.message}")
            self._adopt_grants(factory)

    def _claim(self, factory: SimFactory, forced: bool) -> None:
        # A claim whose reply was lost is re-sent with its request id, gate or not.
        request_id, retry = factory.lost_claim, factory.lost_claim is not None
        if not forced and not retry:
            state = self.coord.queue_state(PRODUCT)
            overdue = self.now_s() - factory.last_claim_at >= state["maxSkipSeconds"]
            if state["version"] == factory.gate_version and not overdue:
                return  # gated: nothing new since the last look
            factory.gate_version = state["version"]
        if request_id is None:
            factory.requests += 1
            request_id = f"{factory.name}-claim-{factory.requests}"
        factory.lost_claim = None  # a race may run this factory's next claim meanwhile
        factory.last_claim_at = self.now_s()
        try:
            result = self.coord.claim(PRODUCT, factory.view(), request_id, retry=retry)
        except StoreUnavailable:
            factory.lost_claim = request_id  # it may have landed: ask again by its id
            raise
        lost = self.reply_rng.random() < self.lost_replies
        if lost:
            factory.lost_claim = request_id
        if result is None:
            if lost:
                self.log.append(f"{factory.name} claim {request_id}: nothing, reply lost")
            return
        key = (result.job.id, result.lease.epoch)
        if result.replayed:
            if not retry or self.grants.get(key) != factory.name:
                raise InvariantBroken(
                    f"{factory.name} handed {key} back (retry={retry}), granted to "
                    f"{self.grants.get(key)}"
                )
            if result.lease.requestId != request_id:
                raise InvariantBroken(f"{key} handed back for another request id")
            self.replays += 1
            verb = "is handed back"
        else:
            if key in self.grants:
                raise InvariantBroken(f"{key} granted twice: {self.grants[key]} and {factory.name}")
            self.grants[key] = factory.name
            self.claims += 1
            verb = "claims"
        assigns = [
            e for e in self._history(result.job.id) if e.type == "assign" and e.epoch == key[1]
        ]
        if len(assigns) != 1:
            raise InvariantBroken(f"{key} has {len(assigns)} assign events")
        if lost:
            self.log.append(f"{factory.name} {verb} {key[0]} epoch {key[1]}, reply lost")
            return  # it does not know; its retry (or the reaper) settles it
        factory.held[result.job.id] = result.lease.epoch
        self.log.append(f"{factory.name} {verb} {result.job.id} epoch {result.lease.epoch}")

    def _history(self, job_id: str) -> list[Any]:
        with self.no_faults():
            job = self.peek(job_id)
            if job.spilledThrough == 0:
                return list(job.events)
            return list(self.coord.job_events(PRODUCT, job_id))

    def work(self, factory: SimFactory) -> None:
        """The factory acts on one job it believes it holds (possibly as a zombie)."""
        if factory.crashed or factory.paused or not factory.held:
            return
        job_id = self.rng.choice(sorted(factory.held))
        epoch = factory.held[job_id]
        before = self.peek(job_id)
        current = (
            before.lease is not None
            and before.lease.holder == factory.name
            and before.epoch == epoch
            and before.stage in LEASED
        )
        move = self.rng.random()
        if move < 0.25 and before.lease is not None and before.lease.expiresAt <= self.clock.now():
            current = False  # a lease past its expiry is not renewed: the job is taken back
        races_before = self.races
        try:
            if move < 0.25:
                done = self.coord.renew(PRODUCT, job_id, factory.name, epoch)
                what = "renews"
            elif move < 0.45:
                stage = Stage.BUILDING if before.stage is Stage.ASSIGNED else Stage.SHIPPED
                # The attempt's cost, within its estimate (spend beyond it is not capped).
                cost = round(self.rng.uniform(0, before.budgetUsd or 0.0), 2)
                done = self.coord.report(
                    PRODUCT, job_id, factory.name, epoch, stage=stage, progress={"costUsd": cost}
                )
                what = f"reports {stage}"
            elif move < 0.6:
                done = self.coord.report(
                    PRODUCT,
                    job_id,
                    factory.name,
                    epoch,
                    checkpoint={"step": self.rng.randint(1, 9)},
                )
                what = "checkpoints"
            elif move < 0.75:
                stage = Stage.FAILED
                retryable = self.rng.random() < 0.8
                done = self.coord.report(
                    PRODUCT, job_id, factory.name, epoch, stage=stage, retryable=retryable
                )
                what = f"fails (retryable={retryable})"
            else:
                done = self.coord.release(PRODUCT, job_id, factory.name, epoch)
                what = "releases"
        except Fenced:
            self.fenced += 1
            self.log.append(f"{factory.name} fenced on {job_id} epoch {epoch}")
            if current and self.races == races_before:
                raise InvariantBroken(
                    f"{factory.name} fenced on {job_id} while holding it"
                ) from None
            after = self.peek(job_id)
            if self.races == races_before and (after.to_doc(), after.etag) != (
                before.to_doc(),
                before.etag,
            ):
                raise InvariantBroken(f"fenced write by {factory.name} changed {job_id}") from None
            factory.held.pop(job_id, None)
            return
        except IllegalTransition as exc:
            # e.g. BUILDING reported twice after a race: refused, nothing changed.
            self.log.append(f"{factory.name} illegal on {job_id}: {exc.message}")
            return
        except ConcurrencyConflict:
            self.log.append(f"{factory.name} gave up on {job_id} after repeated races")
            return
        except StoreUnavailable as exc:
            # It may or may not have happened; the factory keeps its belief and finds out
            # on its next write (done, or fenced).
            self.log.append(f"{factory.name} write on {job_id} failed: {exc.message}")
            return
        self._ack(done)
        # The write succeeded, so the writer must have been the holder: races only ever make
        # a factory's epoch staler, never current again.
        if not current:
            raise InvariantBroken(
                f"zombie write by {factory.name} on {job_id} epoch {epoch} succeeded"
            )
        after = self.peek(job_id)
        self.log.append(f"{factory.name} {what} {job_id} -> {after.stage}")
        if after.lease is None or after.lease.holder != factory.name:
            factory.held.pop(job_id, None)

    def _ack(self, job: Job) -> None:
        if self.faulty is not None and job.events:
            self.acked.append((job.id, job.events[-1].seq, job.events[-1].type))

    def reap(self) -> None:
        try:
            report = self.coord.reap(PRODUCT)
        except StoreUnavailable as exc:
            self.log.append(f"reaper failed: {exc.message}")
            return
        self.log.append(f"reaper requeued={report.requeued} dead={report.dead_lettered}")

    def operator_step(self) -> None:
        if not self.job_ids:
            return
        job_id = self.rng.choice(self.job_ids)
        action = self.rng.choice((Action.CANCEL, Action.REQUEUE, Action.SHIP))
        try:
            self._ack(self.coord.operator(PRODUCT, job_id, action, "sim"))
            self.log.append(f"operator {action} {job_id}")
        except (IllegalTransition, ConcurrencyConflict, StoreUnavailable) as exc:
            self.log.append(f"operator {action} {job_id} refused: {exc.message}")

    # --- invariants ------------------------------------------------------------------

    def check(self) -> None:
        with self.no_faults():
            self._check()

    def _check(self) -> None:
        budget = self.coord.budgets.get(PRODUCT)
        assert budget is not None
        if self.ceiling is not None and budget.spentUsd + budget.reservedUsd > self.ceiling + 1e-6:
            raise InvariantBroken(
                f"budget overspent: {budget.spentUsd} + {budget.reservedUsd} > {self.ceiling}"
            )
        if abs(budget.reservedUsd - sum(r.usd for r in budget.reservations.values())) > 1e-6:
            raise InvariantBroken("reserved total disagrees with the reservations")
        in_channel = [
            j
            for j in self.job_ids
            if (doc := self.peek(j)).channel == "api" and doc.stage in LEASED
        ]
        if len(in_channel) > self.channel_cap:
            raise InvariantBroken(
                f"{len(in_channel)} running in a channel capped at {self.channel_cap}"
            )
        for job_id in self.job_ids:
            job = self.peek(job_id)
            if job.lease is not None:
                granted = self.grants.get((job_id, job.lease.epoch))
                if granted != job.lease.holder:
                    raise InvariantBroken(
                        f"{job_id} leased to {job.lease.holder} at epoch {job.lease.epoch}, "
                        f"granted to {granted}"
                    )
                if job.stage not in LEASED:
                    raise InvariantBroken(f"{job_id} has a lease in stage {job.stage}")
            history = (
                list(job.events)
                if job.spilledThrough == 0
                else self.coord.job_events(PRODUCT, job_id)
            )
            if not agrees(job, history):
                raise InvariantBroken(f"{job_id}: replay of its events disagrees with its state")
            self._check_runs(job, history)

    def _check_runs(self, job: Job, history: list[Any]) -> None:
        """At most one open run, the current epoch's while the job is leased (none when it
        is not); every attempt (assign event) has its run, closed once the attempt ended."""
        open_epochs = [r.epoch for r in job.runs if r.outcome is None]
        expected = [job.epoch] if job.stage in LEASED else []
        if open_epochs != expected:
            raise InvariantBroken(
                f"{job.id} in {job.stage} at epoch {job.epoch} has open runs {open_epochs}"
            )
        epochs = {r.epoch for r in job.runs}
        for event in history:
            spilled = event.epoch <= job.runsSpilledThrough
            if event.type == "assign" and not spilled and event.epoch not in epochs:
                raise InvariantBroken(f"{job.id}: attempt {event.epoch} has no run")

    # --- the run ---------------------------------------------------------------------

    def step(self) -> None:
        r = self.rng.random()
        factory = self.rng.choice(self.factories)
        if len(self.job_ids) < self.target_jobs and r < 0.15:
            self.submit()
        elif r < 0.40:
            self.claim(factory)
        elif r < 0.65:
            self.work(factory)
        elif r < 0.72:
            self.clock.advance(self.rng.choice((1, 5, 20, 70, 130)))
            self.log.append(f"clock +, now {self.clock.now().isoformat()}")
        elif r < 0.78:
            self.reap()
        elif r < 0.82:
            factory.crashed = True
            factory.held.clear()  # a crash forgets everything; its leases must expire
            factory.lost_claim = None
            self.log.append(f"{factory.name} crashes")
        elif r < 0.86:
            factory.paused = not factory.paused  # SIGSTOP / SIGCONT: it keeps its beliefs
            self.log.append(f"{factory.name} {'pauses' if factory.paused else 'resumes'}")
        elif r < 0.89:
            factory.crashed = False
            self.log.append(f"{factory.name} restarts")
        elif r < 0.92:
            self._lose_bumps = not self._lose_bumps
        elif r < 0.94:
            self.operator_step()
        else:
            self.claim(factory, forced=True)

    def drain(self) -> None:
        """Everyone healthy and honest; time passes; all work must finish."""
        self._lose_bumps = False
        self.lost_replies = 0.0
        self.racing.interfere = None
        if self.faulty is not None:
            self.faulty.enabled = False  # the storm has passed
        self.coord.budgets.put(PRODUCT, None)
        self.coord.budgets.set_paused(PRODUCT, False)
        self.ceiling = None
        for f in self.factories:
            f.crashed = False
            f.paused = False
            f.caps = frozenset(CAPS)
        for _ in range(400):
            if all(self.peek(j).stage in TERMINAL for j in self.job_ids):
                return
            self.clock.advance(31)
            self.coord.reap(PRODUCT)
            for f in self.factories:
                self.claim(f)
                for job_id in sorted(f.held):
                    epoch = f.held[job_id]
                    job = self.peek(job_id)
                    try:
                        if job.stage is Stage.ASSIGNED:
                            self.coord.report(PRODUCT, job_id, f.name, epoch, stage=Stage.BUILDING)
                        self.coord.report(PRODUCT, job_id, f.name, epoch, stage=Stage.SHIPPED)
                    except Fenced:
                        self.fenced += 1
                    f.held.pop(job_id, None)
            self.check()
        stuck = {
            j: self.peek(j).stage.value for j in self.job_ids if self.peek(j).stage not in TERMINAL
        }
        raise InvariantBroken(f"jobs never finished: {stuck}")

    def check_nothing_lost_or_doubled(self) -> None:
        """Every transition a caller was told about is in its job's history, with the type
        it was told; one job per idempotency key (a retried submit found the first)."""
        with self.no_faults():
            histories = {j: self.coord.job_events(PRODUCT, j) for j in self.job_ids}
        for job_id, seq, kind in self.acked:
            found = [e.type for e in histories[job_id] if e.seq == seq]
            if found != [kind]:
                raise InvariantBroken(f"{job_id}: acknowledged {kind} #{seq} is {found}")
        keys = Counter(
            self.peek(j).idempotencyKey for j in self.job_ids if self.peek(j).idempotencyKey
        )
        doubled = [k for k, n in keys.items() if n > 1]
        if doubled:
            raise InvariantBroken(f"idempotency keys with several jobs: {doubled}")

    def run(self) -> SimResult:
        self.submit()
        if self.faulty is not None:
            self.faulty.enabled = True
        for n in range(self.steps):
            self.step()
            try:
                self.check()
            except InvariantBroken as exc:
                raise InvariantBroken(f"after step {n}: {exc}") from None
        self.drain()
        if self.faulty is not None:
            self.check_nothing_lost_or_doubled()
        return SimResult(
            seed=self.seed,
            steps=self.steps,
            jobs=len(self.job_ids),
            claims=self.claims,
            fenced=self.fenced,
            races=self.races,
            log=self.log,
            faults=dict(self.faulty.injected) if self.faulty is not None else {},
            replays=self.replays,
        )


def run_seed(seed: int, **kwargs: Any) -> SimResult:
    return Simulation(seed, **kwargs).run()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.simulation.sim SEED [-v] [--faults RATE]")
        return 2
    seed = int(argv[0])
    rate = float(argv[argv.index("--faults") + 1]) if "--faults" in argv else 0.0
    sim = Simulation(seed, faults=rate)
    try:
        result = sim.run()
    except (InvariantBroken, FleetError) as exc:
        print("\n".join(sim.log))
        print(f"seed {seed} FAILED: {exc}")
        return 1
    if "-v" in argv:
        print("\n".join(result.log))
    print(
        f"seed {seed} ok: {result.jobs} jobs, {result.claims} claims "
        f"({result.replays} handed back after a lost reply), {result.fenced} fenced writes, "
        f"{result.races} races, faults {result.faults}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
