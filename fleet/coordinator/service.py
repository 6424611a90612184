"""The coordinator: every job state change goes through here, as one conditional write.

Each method reads what it needs, computes the next job document with the pure functions of
``fleet.domain.jobs`` (which append the transition's event to the same document), and writes
it with ``If-Match`` on the etag it read. A lost race re-reads and re-checks (a holder's
write after the reaper moved the job finds itself fenced); nothing is written twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

from fleet.coordinator.artifacts import Artifacts
from fleet.coordinator.budgets import (
    BudgetBlocked,
    Budgets,
    estimate_of,
    parse_reservation_key,
    reservation_key,
)
from fleet.coordinator.cache import TtlCache
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.clock import Clock, SystemClock
from fleet.coordinator.metrics import alert_feed, compute_metrics, read_metrics
from fleet.coordinator.review import Reviews
from fleet.domain import jobs as J
from fleet.domain import review as R
from fleet.domain import runs as RU
from fleet.domain.alerts import AlertRules
from fleet.domain.ids import key_digest, sortable_id
from fleet.domain.manifest import Manifest, Problem, ProfileSpec, ValidationFailed
from fleet.domain.models import (
    Deps,
    Document,
    Event,
    EventDoc,
    Factory,
    Job,
    Lease,
    Profile,
    Run,
    RunDoc,
    format_ts,
    queue_key,
)
from fleet.domain.scheduler import (
    DEFAULT_WEIGHTS,
    FactoryView,
    Verdict,
    Weights,
    can_ever_run,
    capabilities_offered,
    explain,
    rank,
)
from fleet.domain.stages import (
    LEASED,
    REPORTABLE,
    TERMINAL,
    Action,
    IllegalTransition,
    Stage,
)
from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    FleetError,
    NotFound,
    StoreUnavailable,
)
from fleet.store.ports import Incr, Stores
from fleet.store.queries import (
    AGENT_EVENTS_OF_JOB,
    CLAIM_OF_REQUEST,
    DOCS_OF_TYPE,
    EVENTS_OF_JOB,
    EXPIRED_LEASES,
    JOBS_CHANGED_SINCE,
    JOBS_IN_STAGE,
    JOBS_OF_HOLDER_PAGE,
    JOBS_OLDEST_IN_STAGE,
    JOBS_PAGE,
    LEASED_JOBS,
    PROFILE_VERSIONS,
    RUNS_OF_JOB,
)

log = logging.getLogger(__name__)

SETTINGS_ID = "settings"
SYSTEM_PARTITION = "_system"  # registry of products, so timers can visit every partition
QUEUE_STATE_ID = "queue-state"
FEED_SCAN_FACTOR = 20  # the event feed reads at most this many times its limit in jobs
_AFTER_EVERY_ID = "~"  # sorts after every job id (lower-case letters and digits)


class Keep(Enum):
    """A setting left as it is (distinct from None, which removes it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


class JobNotFound(NotFound):
    """No such job."""

    code = "job_not_found"


@dataclass(frozen=True)
class CoordinatorConfig:
    claim_candidates: int = 16  # K: queued jobs fetched per claim
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


@dataclass(frozen=True)
class AgentEvent:
    seq: int  # the sender's own sequence number within its attempt
    type: str
    payload: Any


def agent_event_key(epoch: int, seq: int) -> str:
    """Sorts agent events by attempt, then by the sender's sequence."""
    return f"{epoch:08d}:{seq:010d}"


@dataclass(frozen=True)
class Cadence:
    """How often the lease holder must heartbeat and renew: a third of the lease, and never
    slower than a third of the stale threshold, so one lost beat never looks like death."""

    heartbeat_seconds: int
    renew_seconds: int

    @classmethod
    def for_lease(cls, lease_seconds: int, stale_after_seconds: int) -> Cadence:
        every = max(1, min(lease_seconds, stale_after_seconds) // 3)
        return cls(heartbeat_seconds=every, renew_seconds=every)

    def as_dict(self) -> dict[str, int]:
        return {"heartbeatSeconds": self.heartbeat_seconds, "renewSeconds": self.renew_seconds}


@dataclass(frozen=True)
class ClaimResult:
    job: Job
    lease: Lease
    cadence: Cadence
    breakdown: dict[str, object]
    attempts: int  # CAS attempts it took (1 = no lost race; 0 = replayed)
    replayed: bool = False  # a retried claim answered with the job it had already won

    @property
    def limits(self) -> dict[str, Any]:
        """The effective limits of this attempt, as its run holds them."""
        return RU.limits(RU.run_at(self.job.runs, self.lease.epoch))


@dataclass(frozen=True)
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    unblocked: list[str] = field(default_factory=list)
    deps_failed: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # the store failed: the next pass


class Coordinator:
    def __init__(
        self,
        stores: Stores,
        clock: Clock | None = None,
        config: CoordinatorConfig | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.stores = stores
        self.docs = stores.documents
        self.clock = clock or SystemClock()
        self.config = config or CoordinatorConfig()
        self._entropy = entropy
        self._known_products: set[str] = set()
        ttl = self.config.settings_ttl_seconds
        self._settings_cache: TtlCache[str, ProductSettings] = TtlCache(self.clock, ttl)
        self._standing_cache: TtlCache[tuple[str, str], str | None] = TtlCache(self.clock, ttl)
        self._fleet_cache: TtlCache[str, list[FactoryView]] = TtlCache(self.clock, ttl)
        self.budgets = Budgets(self.docs, self.clock, self.config.settings_ttl_seconds)
        self.channels = ChannelLimits(stores.tables, self.clock)
        self.artifacts = Artifacts(self, self.config.artifacts_container)
        self.reviews = Reviews(self)

    # --- reading ---------------------------------------------------------------------

    def get_job(self, product: str, job_id: str) -> Job:
        try:
            doc = self.docs.read(product, job_id)
        except NotFound:
            raise JobNotFound(f"job {job_id} not found", jobId=job_id) from None
        if doc.get("type") != "job":  # a caller's id may name any document ("settings")
            raise JobNotFound(f"job {job_id} not found", jobId=job_id)
        return Job.from_doc(doc)

    def list_jobs(self, product: str) -> list[Job]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "job"})
        return sorted((Job.from_doc(r) for r in rows), key=lambda j: j.id)

    def jobs_page(
        self,
        product: str,
        limit: int,
        before: str | None = None,
        stage: Stage | None = None,
        reader: str | None = None,
    ) -> tuple[list[Job], bool]:
        """One page of the product's jobs, newest first (by id: ids sort by creation time),
        older than the job id ``before``: at most ``limit`` jobs, and whether more follow.
        ``stage`` filters; ``reader`` (a factory) narrows to the jobs it holds and the jobs
        in review.

        Cost: one bounded query; two for a factory without a stage filter (the jobs it
        holds, the jobs in review: merged by id, so the page stays flat and bounded)."""
        every = [s.value for s in Stage]
        wanted = [stage.value] if stage else every
        base = {"before": before or _AFTER_EVERY_ID, "top": limit + 1}
        if reader is None or stage is Stage.REVIEW:
            rows = self.docs.query(JOBS_PAGE, product, {**base, "stages": wanted})
        else:
            held = {**base, "stages": wanted, "holder": reader}
            rows = self.docs.query(JOBS_OF_HOLDER_PAGE, product, held)
            if stage is None:
                review = {**base, "stages": [Stage.REVIEW.value]}
                rows += self.docs.query(JOBS_PAGE, product, review)
        by_id = {str(r["id"]): r for r in rows}
        ids = sorted(by_id, reverse=True)
        return [Job.from_doc(by_id[i]) for i in ids[:limit]], len(ids) > limit

    def job_events(self, product: str, job_id: str, after: int = 0) -> list[Event]:
        """The job's history after ``after``: spilled event documents, then embedded ones."""
        job = self.get_job(product, job_id)
        events: list[Event] = []
        if after < job.spilledThrough:
            rows = self.docs.query(EVENTS_OF_JOB, product, {"jobId": job_id, "after": after})
            events.extend(EventDoc.from_doc(r).event for r in rows)
        seen = {e.seq for e in events}
        events.extend(e for e in job.events if e.seq > after and e.seq not in seen)
        return sorted(events, key=lambda e: e.seq)

    def job_runs(self, product: str, job_id: str) -> list[Run]:
        """Every run of the job, oldest first: spilled run documents, then embedded ones."""
        job = self.get_job(product, job_id)
        runs: dict[int, Run] = {}
        if job.runsSpilledThrough > 0:
            rows = self.docs.query(RUNS_OF_JOB, product, {"jobId": job_id})
            runs.update((r.epoch, r.run) for r in map(RunDoc.from_doc, rows))
        runs.update((r.epoch, r) for r in job.runs)  # the embedded copy is the newest
        return [runs[epoch] for epoch in sorted(runs)]

    def product_events(
        self,
        product: str,
        cursor: str | None,
        limit: int = 200,
        *,
        alerts: bool = True,
        settle_seconds: float = 0.0,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Events of every job after ``cursor`` (``at|jobId|seq``), oldest first, for live
        views, with the product's alert events (``jobId`` null; one more point read) unless
        ``alerts`` is False. Returns the events and the next cursor.

        Jobs are found by ``lastEventAt``, so a job changed again since hides its earlier
        events behind its latest time: when more jobs changed than the query's ``TOP``, the
        query is widened (4x at a time, up to ``FEED_SCAN_FACTOR`` x ``limit`` jobs) rather
        than moving the cursor past a job it did not read. ``settle_seconds`` holds back
        events younger than that (an event is stamped just before its write lands): a
        consumer that must see every event (the tracker echo) uses it."""
        since, after_key = _parse_cursor(cursor)
        top = limit
        while True:
            rows = self.docs.query(JOBS_CHANGED_SINCE, product, {"since": since, "top": top})
            if len(rows) < top or top >= limit * FEED_SCAN_FACTOR:
                break
            top *= 4
        if len(rows) >= top and rows:
            log.warning(
                "event feed of %s: more than %d jobs changed since %s; some events may be "
                "skipped (poll more often)",
                product,
                top,
                since or "the start",
            )
        until = (
            format_ts(self.clock.now() - timedelta(seconds=settle_seconds))
            if settle_seconds > 0
            else None
        )
        out: list[tuple[tuple[str, str, int], dict[str, Any]]] = []
        for row in rows:
            job = Job.from_doc(row)
            for event in job.events:
                key = (format_ts(event.at), job.id, event.seq)
                if key > after_key and (until is None or key[0] <= until):
                    item = {"jobId": job.id, **event.model_dump(mode="json")}
                    out.append((key, item))
        if alerts:
            out.extend(alert_feed(self.docs, product, after_key))
        out.sort(key=lambda pair: pair[0])
        out = out[:limit]
        next_cursor = "|".join(map(str, out[-1][0])) if out else cursor
        return [item for _, item in out], next_cursor

    # --- what agents say ------------------------------------------------------------

    def record_agent_events(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        events: list[AgentEvent],
    ) -> int:
        """Store events an engine wrote while it worked (its decisions, tool calls, notes)
        beside the job's transition history. Fenced: only the holder at this epoch. They
        never change the job: stage, lease and epoch are untouched. Each event carries the
        sender's own sequence number, so a batch sent twice (a retry after a lost reply)
        is stored once. Returns how many were new."""
        J.check_fence(self.get_job(product, job_id), factory_id, epoch)
        now = self.clock.now()
        stored = 0
        for event in events:
            doc = {
                "id": f"{job_id}:agent:{epoch}:{event.seq}",
                "productId": product,
                "type": "agent_event",
                "jobId": job_id,
                "epoch": epoch,
                "seq": event.seq,
                "key": agent_event_key(epoch, event.seq),
                "eventType": event.type,
                "payload": event.payload,
                "factory": factory_id,
                "at": format_ts(now),
                "ttl": self.config.event_ttl_seconds,
            }
            try:
                self.docs.create(doc)
                stored += 1
            except AlreadyExists:
                continue
        return stored

    def agent_events(
        self, product: str, job_id: str, after: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """A job's agent events after a cursor (the ``key`` of the last one seen)."""
        self.get_job(product, job_id)  # 404 for an unknown job, not an empty list
        rows = self.docs.query(
            AGENT_EVENTS_OF_JOB, product, {"jobId": job_id, "after": after or "", "top": limit}
        )
        keep = ("key", "epoch", "seq", "eventType", "payload", "factory", "at")
        return [{k: row.get(k) for k in keep} for row in rows]

    # --- the queue-state gate --------------------------------------------------------

    def queue_state(self, product: str) -> dict[str, Any]:
        """One point read. A missing document is version 0 (still one read)."""
        try:
            version = int(self.docs.read(product, QUEUE_STATE_ID).get("version", 0))
        except NotFound:
            version = 0
        return {"version": version, "maxSkipSeconds": self.config.max_skip_seconds}

    def bump_gate(self, product: str) -> None:
        """Tell gated factories that work may have become claimable. Best effort by design:
        a lost bump only delays work until their forced claim (``maxSkipSeconds``)."""
        try:
            try:
                self.docs.patch(product, QUEUE_STATE_ID, [Incr("/version", 1)])
            except NotFound:
                try:
                    self.docs.create(
                        {
                            "id": QUEUE_STATE_ID,
                            "productId": product,
                            "type": "queue_state",
                            "version": 1,
                        }
                    )
                except AlreadyExists:
                    self.docs.patch(product, QUEUE_STATE_ID, [Incr("/version", 1)])
        except FleetError as exc:
            log.warning("queue-state bump for %s lost: %s", product, exc.message)

    # --- submit ----------------------------------------------------------------------

    def submit(
        self,
        product: str,
        manifest: Manifest,
        actor: str,
        *,
        parent_id: str | None = None,
        tracker: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """Create the job (or return the one already submitted with this idempotency key).
        Returns ``(job, created)``."""
        self._register_product(product)
        job_id: str | None = None
        if manifest.idempotencyKey:
            job_id = self._claim_idempotency_key(product, manifest.idempotencyKey)
            try:
                return self.get_job(product, job_id), False
            except JobNotFound:
                pass  # the key was claimed but the job never written: write it now
        now = self.clock.now()
        job_id = job_id or sortable_id("j", now, self._entropy(10))
        job = self._new_job(product, job_id, manifest, actor, now)
        if parent_id is not None or tracker is not None:
            job = job.evolve(parentId=parent_id, tracker=tracker)
        try:
            created = Job.from_doc(self.docs.create(job.to_doc()))
        except AlreadyExists:
            return self.get_job(product, job_id), False
        if created.stage is Stage.QUEUED:
            self.bump_gate(product)
        return created, True

    def _claim_idempotency_key(self, product: str, key: str) -> str:
        """Bind the key to a job id, once: a deterministic document id makes the second
        submit's create fail, and it then reuses the first submit's job id."""
        doc_id = "idem-" + key_digest(product, key)
        try:
            return str(self.docs.read(product, doc_id)["jobId"])
        except NotFound:
            pass
        job_id = sortable_id("j", self.clock.now(), self._entropy(10))
        try:
            self.docs.create(
                {
                    "id": doc_id,
                    "productId": product,
                    "type": "idempotency",
                    "jobId": job_id,
                    "key": key,
                }
            )
            return job_id
        except AlreadyExists:
            return str(self.docs.read(product, doc_id)["jobId"])

    def _new_job(
        self, product: str, job_id: str, manifest: Manifest, actor: str, now: datetime
    ) -> Job:
        profile = self._current_profile(product, manifest.persona) if manifest.persona else None
        capabilities = tuple(
            dict.fromkeys((*manifest.capabilities, *(profile.capabilities if profile else ())))
        )
        stage = Stage.QUEUED
        reason = None
        if manifest.deps and manifest.deps.jobs:
            stage, reason = self._deps_stage(product, manifest)
        unroutable = not capabilities_offered(capabilities, self._known_fleet(product))
        if unroutable:  # only a fresh look at the fleet may say so
            fresh = self._known_fleet(product, fresh=True)
            unroutable = not capabilities_offered(capabilities, fresh)
        base = Job(
            id=job_id,
            productId=product,
            title=manifest.title,
            persona=manifest.persona,
            profile=profile.snapshot() if profile else None,
            capabilities=capabilities,
            priority=manifest.priority,
            budgetUsd=manifest.budgetUsd,
            channel=manifest.channel,
            deps=manifest.deps,
            idempotencyKey=manifest.idempotencyKey,
            maxAttempts=manifest.maxAttempts,
            leaseSeconds=manifest.leaseSeconds,
            verify=manifest.verify,
            review=manifest.review,
            body=manifest.body,
            repo=manifest.repo,
            base=manifest.base,
            pr=manifest.pr,
            timeoutSeconds=manifest.timeoutSeconds,
            maxCostUsd=manifest.maxCostUsd,
            stage=stage,
            unroutable=unroutable,
            createdAt=now,
            updatedAt=now,
            lastEventAt=now,
            queueKey=queue_key(manifest.priority, now, job_id),
        )
        data: dict[str, Any] = {}
        if unroutable:
            data["unroutable"] = "no known factory advertises: " + ", ".join(capabilities)
        # The creation event: from no stage to the first one.
        event = Event(
            seq=1,
            type="submit",
            at=now,
            actor=actor,
            epoch=0,
            fromStage=None,
            toStage=stage,
            reason=reason,
            data=data,
        )
        return base.evolve(seq=1, events=(event,))

    def _known_fleet(self, product: str, *, fresh: bool = False) -> list[FactoryView]:
        """The fleet as submit's routability check sees it: cached per instance for
        ``settings_ttl_seconds`` (a burst of submits would otherwise read every factory
        document once per job). A cached fleet may only say *routable*; "unroutable" is
        always confirmed fresh, so a factory enrolled a moment ago is never missed."""
        return self._fleet_cache.get(product, lambda: self.factory_views(product), fresh=fresh)

    def _deps_stage(self, product: str, manifest: Manifest) -> tuple[Stage, str | None]:
        assert manifest.deps is not None
        problems = []
        stages: list[Stage] = []
        for i, dep in enumerate(manifest.deps.jobs):
            try:
                stages.append(self.get_job(product, dep).stage)
            except JobNotFound:
                problems.append(
                    Problem(path=f"deps.jobs[{i}]", code="unknown_dep", message=f"no job {dep}")
                )
        if problems:
            raise ValidationFailed(problems, "unknown dependencies")
        verdict = _deps_verdict(manifest.deps.mode, stages)
        if verdict == "ready":
            return Stage.QUEUED, "dependencies already shipped"
        return Stage.BLOCKED, "waiting for dependencies"

    # --- DAGs ------------------------------------------------------------------------

    def add_children(
        self,
        product: str,
        parent_id: str,
        manifests: list[Manifest],
        mode: Literal["all", "any"],
        actor: str,
    ) -> tuple[Job, list[Job]]:
        """Decompose a queued (or blocked) job into child jobs it then waits for. Idempotent:
        each child's idempotency key defaults to ``{parent}:child:{index}``, so the same call
        twice creates nothing new. A child that would depend on the parent or on anything
        waiting for it would close a cycle: refused, nothing created."""
        parent = self.get_job(product, parent_id)
        if parent.stage not in (Stage.QUEUED, Stage.BLOCKED):
            raise IllegalTransition(parent.stage, Action.DECOMPOSE)
        keyed = [
            m.model_copy(update={"idempotencyKey": m.idempotencyKey or f"{parent_id}:child:{i}"})
            for i, m in enumerate(manifests)
        ]
        waiting = self._dependents(product, parent_id)
        problems = [
            Problem(
                path=f"children[{i}].deps.jobs[{j}]",
                code="cycle",
                message=f"{dep} waits for {parent_id}: depending on it would close a cycle",
            )
            for i, m in enumerate(keyed)
            for j, dep in enumerate(m.deps.jobs if m.deps else ())
            if dep in waiting
        ]
        if problems:
            raise ValidationFailed(problems, "the children would close a cycle")
        children = []
        for manifest in keyed:
            child, _ = self.submit(product, manifest, actor, parent_id=parent_id)
            children.append(child)
        ids = tuple(c.id for c in children)

        def change(job: Job, now: datetime) -> Job:
            deps = tuple(dict.fromkeys((*(job.deps.jobs if job.deps else ()), *ids)))
            changes: dict[str, Any] = {
                "deps": Deps(mode=mode, jobs=deps),
                "children": tuple(dict.fromkeys((*job.children, *ids))),
            }
            if job.stage is Stage.QUEUED:
                return J.transition(
                    job,
                    Action.DECOMPOSE,
                    actor=actor,
                    now=now,
                    reason=f"split into {len(ids)} child jobs",
                    data={"children": list(ids)},
                    **changes,
                )
            if job.stage is not Stage.BLOCKED:
                raise IllegalTransition(job.stage, Action.DECOMPOSE)
            if job.children == changes["children"] and job.deps == changes["deps"]:
                return job  # the same call again: nothing to change
            return J.record(
                job,
                type="children",
                actor=actor,
                now=now,
                data={"children": list(ids)},
                **changes,
            )

        updated = self._update(product, parent_id, change)
        # The children may all be done already (a repeated call): let the parent go.
        self._unblock_dependents(product)
        return self.get_job(product, updated.id), children

    def _dependents(self, product: str, job_id: str) -> set[str]:
        """Every job that waits, directly or not, for ``job_id`` (and the job itself)."""
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "job"})
        waiters: dict[str, set[str]] = {}
        for row in rows:
            for dep in (row.get("deps") or {}).get("jobs") or ():
                waiters.setdefault(dep, set()).add(str(row["id"]))
        seen = {job_id}
        frontier = [job_id]
        while frontier:
            for waiter in waiters.get(frontier.pop(), ()):
                if waiter not in seen:
                    seen.add(waiter)
                    frontier.append(waiter)
        return seen

    def dag(self, product: str, job_id: str, max_nodes: int = 500) -> dict[str, Any]:
        """The job and, recursively, what it waits for, with stages."""
        cache: dict[str, Job | None] = {}

        def load(jid: str) -> Job | None:
            if jid not in cache:
                try:
                    cache[jid] = self.get_job(product, jid)
                except JobNotFound:
                    cache[jid] = None
            return cache[jid]

        def node(jid: str, path: frozenset[str]) -> dict[str, Any]:
            job = load(jid)
            if job is None:
                return {"id": jid, "missing": True}
            out: dict[str, Any] = {
                "id": job.id,
                "title": job.title,
                "stage": job.stage.value,
                "mode": job.deps.mode if job.deps else None,
                "holder": job.lease.holder if job.lease else None,
            }
            if len(cache) < max_nodes and jid not in path:
                deps = job.deps.jobs if job.deps else ()
                out["deps"] = [node(d, path | {jid}) for d in deps]
            return out

        if load(job_id) is None:
            raise JobNotFound(f"job {job_id} not found", jobId=job_id)
        return node(job_id, frozenset())

    # --- profiles --------------------------------------------------------------------

    def _current_profile(self, product: str, name: str) -> Profile:
        rows = self.docs.query(PROFILE_VERSIONS, product, {"name": name, "top": 1})
        if not rows:
            raise ValidationFailed(
                [Problem(path="persona", code="unknown_persona", message=f"no profile {name!r}")],
                f"unknown persona {name!r}",
            )
        return Profile.from_doc(rows[0])

    def put_profile(self, product: str, name: str, spec: ProfileSpec) -> Profile:
        """Create the next immutable version of a profile."""
        self._register_product(product)
        for _ in range(self.config.write_retries):
            rows = self.docs.query(PROFILE_VERSIONS, product, {"name": name, "top": 1})
            version = int(rows[0]["version"]) + 1 if rows else 1
            profile = Profile(
                id=f"profile-{name}-{version}",
                productId=product,
                name=name,
                version=version,
                preamble=spec.preamble,
                engine=spec.engine,
                capabilities=spec.capabilities,
                description=spec.description,
                createdAt=self.clock.now(),
            )
            try:
                return Profile.from_doc(self.docs.create(profile.to_doc()))
            except AlreadyExists:
                continue  # another writer took this version number: take the next
        raise ConcurrencyConflict(f"profile {name} is being changed concurrently; retry")

    def get_profile(self, product: str, name: str, version: int | None = None) -> Profile:
        if version is None:
            rows = self.docs.query(PROFILE_VERSIONS, product, {"name": name, "top": 1})
            if not rows:
                raise NotFound(f"profile {name} not found", profile=name)
            return Profile.from_doc(rows[0])
        try:
            return Profile.from_doc(self.docs.read(product, f"profile-{name}-{version}"))
        except NotFound:
            raise NotFound(f"profile {name} version {version} not found", profile=name) from None

    def list_profiles(self, product: str) -> list[Profile]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "profile"})
        latest: dict[str, Profile] = {}
        for row in rows:
            profile = Profile.from_doc(row)
            if profile.name not in latest or profile.version > latest[profile.name].version:
                latest[profile.name] = profile
        return [latest[name] for name in sorted(latest)]

    # --- factories -------------------------------------------------------------------

    def register_factory(self, product: str, view: FactoryView, version: str | None) -> Factory:
        """Record what a factory says about itself (off the claim path: at start-up and on
        heartbeats), so the scheduler's explain and the unroutable check know the fleet.
        What the operator or the healer decided (paused, draining, revoked, ...) is kept."""
        self._register_product(product)
        doc_id = f"factory-{view.id}"
        for _ in range(self.config.write_retries):
            try:
                current: Factory | None = Factory.from_doc(self.docs.read(product, doc_id))
            except NotFound:
                current = None
            said: dict[str, Any] = {
                "capabilities": tuple(sorted(view.capabilities)),
                "seats": view.seats,
                "load": view.load,
                "cost": view.cost,
                "version": version,
                "status": "live",
                "lastSeen": self.clock.now(),
            }
            try:
                if current is None:
                    factory = Factory(id=doc_id, productId=product, **said)
                    return Factory.from_doc(self.docs.create(factory.to_doc()))
                updated = current.evolve(**said)
                return Factory.from_doc(self.docs.replace(updated.to_doc(), etag=current.etag))
            except (AlreadyExists, ConcurrencyConflict):
                continue
        raise ConcurrencyConflict(f"factory {view.id} is changing too fast; retry")

    def factories(self, product: str) -> list[Factory]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "factory"})
        return sorted((Factory.from_doc(r) for r in rows), key=lambda f: f.id)

    def factory_views(
        self, product: str, factories: list[Factory] | None = None
    ) -> list[FactoryView]:
        """The fleet as the scheduler sees it (from ``factories`` when already read).
        Liveness is the self-healer's verdict (``status``, kept from heartbeats); revoked
        and departed factories are not live."""
        return [
            FactoryView(
                id=f.id.removeprefix("factory-"),
                capabilities=frozenset(f.capabilities),
                seats=f.seats,
                load=f.load,
                cost=f.cost,
                paused=f.paused or f.draining,
                live=f.status == "live" and not f.revoked and not f.deregistered,
            )
            for f in (self.factories(product) if factories is None else factories)
        ]

    # --- per-product settings --------------------------------------------------------

    def settings(self, product: str) -> ProductSettings:
        """The product's settings (scheduler weights, preemption). Cached per instance for
        ``settings_ttl_seconds`` so the claim path stays one query and one write; a change
        reaches every instance within that time."""

        def load() -> ProductSettings:
            try:
                doc: dict[str, Any] = self.docs.read(product, SETTINGS_ID)
            except NotFound:
                doc = {}
            return ProductSettings.from_doc(doc, self.config.weights)

        return self._settings_cache.get(product, load)

    def weights(self, product: str) -> Weights:
        return self.settings(product).weights

    def product_settings(self, product: str) -> dict[str, Any]:
        self._settings_cache.forget(product)  # an operator reading them sees them fresh
        return self.settings(product).as_dict()

    def put_product_settings(
        self,
        product: str,
        weights: dict[str, float] | None = None,
        preemption: dict[str, Any] | None = None,
        alerts: dict[str, Any] | None = None,
        timeout_seconds: int | Keep | None = KEEP,
    ) -> dict[str, Any]:
        """Change the product's settings: omitted parts (and omitted weights) are kept;
        ``timeout_seconds`` None removes the default attempt timeout."""
        self._register_product(product)
        self._settings_cache.forget(product)
        current = self.settings(product)
        updated = ProductSettings(
            weights=weights_from(weights, current.weights) if weights else current.weights,
            preemption=current.preemption.merged(preemption or {}),
            alerts=current.alerts.merged(alerts or {}),
            timeout_seconds=(
                current.timeout_seconds if isinstance(timeout_seconds, Keep) else timeout_seconds
            ),
        )
        self.docs.upsert(
            {
                "id": SETTINGS_ID,
                "productId": product,
                "type": "settings",
                **updated.as_dict(),
                "updatedAt": format_ts(self.clock.now()),
            }
        )
        self._settings_cache.put(product, updated)
        return updated.as_dict()

    # --- the claim (hot path) --------------------------------------------------------

    def claim(
        self,
        product: str,
        factory: FactoryView,
        request_id: str | None = None,
        *,
        retry: bool = False,
    ) -> ClaimResult | None:
        """One query for the top-K queued jobs, pure ranking, one conditional replace of the
        chosen job. On a lost race, the next candidate. ``None``: nothing for this factory.

        Shared quotas are reserved before the job's compare-and-swap and given back if it
        is lost: a channel's token and running slot (a channel with limits costs a table
        read and write), and — in a product with a budget — the job's estimated cost (one
        conditional patch whose predicate is the budget rule itself).

        ``request_id`` (the factory's own id for this claim) is stored in the lease it
        writes, at no extra cost. With ``retry`` — the factory re-sends the claim after its
        reply was lost — the job this factory already won with that id, if it is still
        ``assigned`` under a current lease, is answered again (no write, no new event, the
        same epoch); else a normal claim follows."""
        now = self.clock.now()
        standing = self.standing(product, factory.id)
        if standing in ("revoked", "deregistered"):
            return None  # gone: what it holds is the reaper's to take back
        if retry and request_id is not None:
            won = self._claimed_by_request(product, factory.id, request_id, now)
            if won is not None:
                return won  # not new work: a paused or draining factory keeps it
        if standing is not None:
            return None  # paused or draining: it gets nothing new
        rows = self.docs.query(
            JOBS_IN_STAGE, product, {"stage": "queued", "top": self.config.claim_candidates}
        )
        settings = self.settings(product)
        candidates = rank([Job.from_doc(r) for r in rows], factory, now, settings.weights)
        budgeted = bool(candidates) and self.budgets.applies(product)
        exhausted_channels: set[str] = set()
        for attempt, (job, breakdown) in enumerate(candidates, start=1):
            if job.channel in exhausted_channels:
                continue
            if job.channel:
                taken, _why = self.channels.take(product, job.channel)
                if not taken:
                    exhausted_channels.add(job.channel)
                    continue
            epoch = job.epoch + 1
            key = reservation_key(job.id, epoch, self._entropy(4).hex()) if budgeted else None
            if key is not None:
                try:
                    self.budgets.reserve(product, job, key)
                except BudgetBlocked:
                    self._give_back_channel(product, job)
                    budget = self.budgets.get(product)
                    if budget is None or budget.blocked:
                        return None  # paused: nothing in this product may start
                    continue  # this one does not fit; a cheaper one may
                except NotFound:
                    budgeted, key = False, None  # the budget was deleted meanwhile
            assigned = J.assign(
                job,
                factory.id,
                now=now,
                breakdown=breakdown.as_dict(),
                request_id=request_id,
                timeout_seconds=RU.effective_timeout(job.timeoutSeconds, settings.timeout_seconds),
            )
            assigned = assigned.evolve(reservation=key)
            try:
                stored = self._write(assigned, job.etag, spill=False)
            except (ConcurrencyConflict, NotFound):
                # Another factory won this one (or it changed): undo, try the next.
                if key is not None:
                    self.budgets.settle(product, key, estimate_of(job), 0.0)
                self._give_back_channel(product, job)
                continue
            except StoreUnavailable as exc:
                # Its answer may be all that was lost: then the job is this factory's (else
                # it would sit leased to a factory that never knew, and spend an attempt).
                stored = self._landed(assigned, exc)
            assert stored.lease is not None
            return ClaimResult(
                job=stored,
                lease=stored.lease,
                cadence=self.cadence(stored),
                breakdown=breakdown.as_dict(),
                attempts=attempt,
            )
        return None

    def _claimed_by_request(
        self, product: str, factory_id: str, request_id: str, now: datetime
    ) -> ClaimResult | None:
        """The claim this factory already won with ``request_id``, answered again as it was
        first answered (job, lease, cadence, score): one bounded query, no write. ``None``
        when there is none, or its lease is no longer current (the reaper's to take back)."""
        rows = self.docs.query(
            CLAIM_OF_REQUEST,
            product,
            {"holder": factory_id, "requestId": request_id, "top": 2},
        )
        for row in rows:
            job = Job.from_doc(row)
            lease = job.lease
            if lease is None or lease.epoch != job.epoch or lease.expiresAt <= now:
                continue
            score = next(
                (
                    e.data.get("score")
                    for e in reversed(job.events)
                    if e.type == "assign" and e.epoch == job.epoch
                ),
                None,
            )
            return ClaimResult(
                job=job,
                lease=lease,
                cadence=self.cadence(job),
                breakdown=score if isinstance(score, dict) else {},
                attempts=0,
                replayed=True,
            )
        return None

    def standing(self, product: str, factory_id: str) -> str | None:
        """Why this factory may not claim (paused, draining, revoked, deregistered), or None.
        From its document, cached per instance for ``settings_ttl_seconds``: an operator's
        pause reaches every instance within that time (and the factory itself stops at
        once, told by its heartbeat). A factory that never registered has no objections."""

        def load() -> str | None:
            try:
                factory = Factory.from_doc(self.docs.read(product, f"factory-{factory_id}"))
            except NotFound:
                return None
            flags = ("revoked", "deregistered", "paused", "draining")
            return next((flag for flag in flags if getattr(factory, flag)), None)

        return self._standing_cache.get((product, factory_id), load)

    def _give_back_channel(self, product: str, job: Job) -> None:
        if job.channel:
            self.channels.give_back(product, job.channel, token=True)

    def _lease_ended(self, before: Job, after: Job) -> None:
        """After a write that ended ``before``'s lease: settle its budget reservation with
        the cost reported for that attempt and return its channel slot. Best effort: the
        reaper reconciles what a crash here leaves behind."""
        if before.stage not in LEASED or (after.stage in LEASED and after.epoch == before.epoch):
            return
        product, epoch = before.productId, before.epoch
        try:
            if before.reservation:
                cost = after.costs.get(str(epoch), 0.0)
                self.budgets.settle(product, before.reservation, estimate_of(before), cost)
            if before.channel:
                self.channels.give_back(product, before.channel, token=False)
        except FleetError as exc:
            log.warning("settling %s epoch %d left for the reaper: %s", before.id, epoch, exc)

    def cadence(self, job: Job) -> Cadence:
        return Cadence.for_lease(job.leaseSeconds, self.config.stale_after_seconds)

    # --- the lease holder's writes (fenced) ------------------------------------------

    def renew(self, product: str, job_id: str, factory_id: str, epoch: int) -> Job:
        """Extend the lease. Fenced: only the holder at this epoch, in a leased stage.

        Past the attempt's deadline the lease is not extended: the attempt is ended
        (``timeout``, retried following maxAttempts) and, once that write has landed, the
        holder is answered ``TimedOut`` (409 ``timeout``)."""

        def change(job: Job, now: datetime) -> Job:
            J.check_fence(job, factory_id, epoch)
            assert job.lease is not None
            run = RU.run_at(job.runs, epoch)
            if run is not None and run.deadlineAt is not None and RU.deadline_passed(run, now):
                return J.end_at_limit(
                    job,
                    "timeout",
                    now=now,
                    reason=f"attempt {epoch} passed its deadline {format_ts(run.deadlineAt)}",
                )
            return job.evolve(
                lease=job.lease.evolve(expiresAt=now + timedelta(seconds=job.leaseSeconds)),
                updatedAt=now,
            )

        job = self._update(product, job_id, change, spill=False)
        if job.epoch != epoch:  # the lease was current: this call ended the attempt
            self._ended_at_limit(job, factory_id, epoch)
        return job

    def report(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        *,
        stage: Stage | None = None,
        retryable: bool = False,
        reason: str | None = None,
        checkpoint: Any = None,
        progress: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job:
        """The holder reports a stage and/or checkpoint, progress, result (PATCH /jobs/{id})."""
        changes: dict[str, Any] = {}
        if checkpoint is not None:
            changes["checkpoint"] = checkpoint
        if progress is not None:
            changes["progress"] = progress
        if result is not None:
            changes["result"] = result

        cost = _reported_cost(result, progress)
        said = RU.HolderReport(progress=progress, result=result)
        ended_at_limit = False

        def change(job: Job, now: datetime) -> Job:
            nonlocal ended_at_limit
            ended_at_limit = False  # decided again on each fresh read
            J.check_fence(job, factory_id, epoch)
            if cost is not None:
                # The attempt's cumulative cost, as the holder reports it: settled against
                # the budget when the lease ends.
                changes["costs"] = {**job.costs, str(epoch): cost}
            action = REPORTABLE.get(stage) if stage is not None else None
            if stage is not None and action is None:
                raise J.IllegalReport(stage)
            run = RU.run_at(job.runs, epoch)
            over = RU.over_cap(run, cost)
            if over and action is not Action.FAIL:
                assert run is not None and run.maxCostUsd is not None and cost is not None
                ended_at_limit = True
                # Recorded (the budget settles with it), then ended: the holder's own
                # report cannot carry an attempt past its cap, shipped or not.
                return J.end_at_limit(
                    job,
                    "budget_exceeded",
                    now=now,
                    reason=(
                        f"attempt {epoch} reported ${cost:.4f}, over its cap ${run.maxCostUsd:.4f}"
                    ),
                    report=said,
                    **changes,
                )
            if action is None:
                return J.merge_report(job.evolve(**changes, updatedAt=now), said)
            if action is Action.FAIL and retryable:
                action = Action.RETRY
            report = said
            if over and RU.limit_outcome(result) is None:
                # The holder failed the attempt itself; its cost says why.
                report = RU.HolderReport(progress, {**(result or {}), "outcome": "budget_exceeded"})
            if R.goes_to_review(job, action):
                # The manifest wants a review quorum: not shipped yet (fleet.domain.review).
                return self.reviews.submit(
                    job, factory_id, now=now, reason=reason, report=report, **changes
                )
            moved = J.holder_report(
                job, action, factory_id, now=now, reason=reason, report=report, **changes
            )
            if moved.stage is Stage.QUEUED:
                moved = moved.evolve(queueKey=queue_key(job.priority, job.createdAt, job.id))
            return moved

        job = self._update(product, job_id, change)
        if ended_at_limit:
            self._ended_at_limit(job, factory_id, epoch)
        elif cost is not None and job.reservation and job.stage in LEASED and job.epoch == epoch:
            job = self._hold_running_spend(job, factory_id, epoch, cost)
        if job.stage in (Stage.QUEUED, Stage.REVIEW):
            self.bump_gate(product)  # work to claim, or to review
        if job.stage is Stage.SHIPPED:
            self._unblock_dependents(product)
        return job

    def _hold_running_spend(self, job: Job, factory_id: str, epoch: int, cost: float) -> Job:
        """A running attempt's reported spend, past what its claim reserved, is reserved too
        (so the budget sees it while the agent works and other claims cannot take it). When
        the ceiling cannot cover it the attempt is ended ``budget_exceeded``, like an attempt
        over its own cap: the holder is told 409 and stops spending."""
        if job.reservation is None or cost <= estimate_of(job):
            return job
        try:
            self.budgets.grow(job.productId, job.reservation, cost)
        except BudgetBlocked:

            def end(current: Job, now: datetime) -> Job:
                J.check_fence(current, factory_id, epoch)
                return J.end_at_limit(
                    current,
                    "budget_exceeded",
                    now=now,
                    reason=(
                        f"the product's budget cannot cover the ${cost:.4f} attempt {epoch} "
                        "has spent"
                    ),
                )

            ended = self._update(job.productId, job.id, end)
            self._ended_at_limit(ended, factory_id, epoch)
            return ended
        return job

    def _ended_at_limit(self, job: Job, factory_id: str, epoch: int) -> None:
        """After the write that ended the holder's attempt at a limit has landed: wake
        claimers, then tell the holder why it must stop (409 ``timeout`` or
        ``budget_exceeded``, from the closed run). The error comes after the write: the
        write is the attempt's end, and a reply lost now changes nothing."""
        if job.stage is Stage.QUEUED:
            self.bump_gate(job.productId)
        J.check_fence(job, factory_id, epoch)

    def release(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        *,
        checkpoint: Any = None,
        reason: str | None = None,
    ) -> Job:
        """Give the job back (drain, shutdown): queued again, checkpoint kept, no attempt
        counted."""
        changes: dict[str, Any] = {}
        if checkpoint is not None:
            changes["checkpoint"] = checkpoint

        def change(job: Job, now: datetime) -> Job:
            J.check_fence(job, factory_id, epoch)
            released = J.holder_report(
                job, Action.RELEASE, factory_id, now=now, reason=reason or "released", **changes
            )
            return released.evolve(queueKey=queue_key(job.priority, job.createdAt, job.id))

        job = self._update(product, job_id, change)
        self.bump_gate(product)
        return job

    # --- operator actions ------------------------------------------------------------

    def operator(
        self, product: str, job_id: str, action: Action, operator: str, reason: str | None = None
    ) -> Job:
        if action not in (Action.CANCEL, Action.REQUEUE, Action.SHIP, Action.REJECT):
            raise ValueError(f"{action} is not an operator action")

        def change(job: Job, now: datetime) -> Job:
            return J.operator_action(job, action, operator, now=now, reason=reason)

        job = self._update(product, job_id, change)
        if job.stage is Stage.QUEUED:
            self.bump_gate(product)
        if job.stage is Stage.SHIPPED:
            self._unblock_dependents(product)
        return job

    def reprioritize(self, product: str, job_id: str, priority: int, operator: str) -> Job:
        def change(job: Job, now: datetime) -> Job:
            if job.stage in TERMINAL:
                raise J.IllegalReprioritize(job.stage)
            return J.reprioritize(job, priority, operator, now=now)

        return self._update(product, job_id, change)

    # --- the reaper ------------------------------------------------------------------

    def reap(self, product: str) -> ReapReport:
        """Requeue (or dead-letter) jobs whose lease expired, unblock jobs whose deps are
        done, and spill long histories. Safe to run concurrently and repeatedly."""
        now = self.clock.now()
        report = ReapReport()
        rows = self.docs.query(
            EXPIRED_LEASES, product, {"now": format_ts(now), "top": self.config.reap_batch}
        )
        for row in rows:
            job = Job.from_doc(row)
            expired = J.expire(job, now=now)
            try:
                stored = self._write(expired, job.etag, spill=True)
            except (ConcurrencyConflict, NotFound):
                continue  # it moved (renewed, reported): not ours to touch any more
            except StoreUnavailable as exc:
                try:  # only the answer may have been lost: then it is done, settle it
                    stored = self._landed(expired, exc)
                except StoreUnavailable:
                    # Not done (or cannot tell yet): the next pass finds it still expired.
                    # The other expired jobs are not held up by this one.
                    log.warning("reaper %s: job %s deferred: %s", product, job.id, exc.message)
                    report.deferred.append(job.id)
                    continue
            self._lease_ended(job, stored)
            target = report.requeued if stored.stage is Stage.QUEUED else report.dead_lettered
            target.append(stored.id)
        gone = {
            f.id.removeprefix("factory-")
            for f in self.factories(product)
            if f.revoked or f.deregistered
        }
        if gone:
            for row in self.docs.query(LEASED_JOBS, product, {"top": self.config.reap_batch}):
                job = Job.from_doc(row)
                if job.lease is None or job.lease.holder not in gone:
                    continue
                taken = self._take_back_once(
                    job, now, f"holder {job.lease.holder} was revoked or left the fleet"
                )
                if taken is not None:
                    target = (
                        report.requeued if taken.stage is Stage.QUEUED else report.dead_lettered
                    )
                    target.append(taken.id)
        self._reconcile_quotas(product, now)
        report.preempted.extend(self.preempt(product))
        unblocked, failed = self._unblock_dependents(product, bump=False)
        report.unblocked.extend(unblocked)
        report.deps_failed.extend(failed)
        if report.requeued or report.unblocked or report.preempted:
            self.bump_gate(product)
        return report

    def preempt(self, product: str) -> list[str]:
        """When the product allows it: for each critical job (priority >= minPriority,
        waiting >= afterSeconds) that some live factory could run but none has a free seat
        for, evict the lowest-priority running job it outranks on such a factory — at most
        one per critical job per pass. Returns the evicted job ids."""
        rule = self.settings(product).preemption
        if not rule.enabled:
            return []
        now = self.clock.now()
        queued = [
            Job.from_doc(r)
            for r in self.docs.query(
                JOBS_IN_STAGE, product, {"stage": "queued", "top": self.config.claim_candidates}
            )
        ]
        critical = [
            j
            for j in queued
            if j.priority >= rule.min_priority
            and (now - j.createdAt).total_seconds() >= rule.after_seconds
            and not _recently_preempted_for(j, now, rule.after_seconds)
        ]
        if not critical:
            return []
        views = {v.id: v for v in self.factory_views(product) if v.live}
        rows = self.docs.query(LEASED_JOBS, product, {"top": 10 * self.config.reap_batch})
        running = [Job.from_doc(r) for r in rows]
        # Seats in use, counted from the leases themselves (exact, unlike reported load).
        held: dict[str, int] = {}
        for r in running:
            if r.lease:
                held[r.lease.holder] = held.get(r.lease.holder, 0) + 1
        evicted: list[str] = []
        for job in critical:
            able = {
                fid
                for fid, v in views.items()
                if set(job.capabilities) <= v.capabilities and not v.paused
            }
            if not able or any(held.get(f, 0) < views[f].seats for f in able):
                continue  # nobody can run it, or someone has a free seat: no eviction
            victims = sorted(
                (
                    r
                    for r in running
                    if r.lease
                    and r.lease.holder in able
                    and r.priority < job.priority
                    and r.id not in evicted
                ),
                key=lambda r: (r.priority, -r.updatedAt.timestamp(), r.id),
            )
            for victim in victims:
                try:
                    stored = self._write(
                        J.preempt(victim, now=now, for_job=job.id), victim.etag, spill=True
                    )
                except (ConcurrencyConflict, NotFound):
                    continue
                self._lease_ended(victim, stored)
                self._note_preemption(job, victim.id, now)
                evicted.append(victim.id)
                break
        return evicted

    def _note_preemption(self, job: Job, victim: str, now: datetime) -> None:
        def change(current: Job, at: datetime) -> Job:
            return J.record(
                current,
                type="preempted_for",
                actor="preemptor",
                now=at,
                reason=f"evicted {victim} to make room",
                data={"victim": victim},
            )

        try:
            self._update(job.productId, job.id, change)
        except FleetError as exc:
            log.warning("could not note the preemption on %s: %s", job.id, exc)

    def _reconcile_quotas(self, product: str, now: datetime) -> None:
        """Undo what a crash between two writes can leave behind: budget reservations with
        no live lease behind them (settled with the cost reported for that attempt), and
        channel running counts that disagree with the jobs actually leased."""
        rows = self.docs.query(LEASED_JOBS, product, {"top": 10 * self.config.reap_batch})
        leased = [Job.from_doc(r) for r in rows]
        live = {j.reservation for j in leased if j.reservation}
        budget = self.budgets.get(product)
        for key, reservation in (budget.reservations if budget else {}).items():
            if key in live or not reservation.settled_by(now, self.config.quota_quiet_seconds):
                continue
            job_id, epoch = parse_reservation_key(key)
            try:
                cost = self.get_job(product, job_id).costs.get(str(epoch), 0.0)
            except JobNotFound:
                cost = 0.0
            self.budgets.settle(product, key, reservation.usd, cost)
        running: dict[str, int] = {}
        for job in leased:
            if job.channel:
                running[job.channel] = running.get(job.channel, 0) + 1
        self.channels.reconcile(product, running, self.config.quota_quiet_seconds)

    def take_back(
        self, product: str, job_id: str, epoch: int, reason: str, actor: str = "healer"
    ) -> Job | None:
        """Requeue (or dead-letter) a leased job at exactly this epoch, fencing its holder:
        for the self-healer (stalled, never started) and for revoked holders. ``None`` when
        the job moved on meanwhile (another epoch, no longer leased): nothing to do."""
        try:
            job = self.get_job(product, job_id)
        except JobNotFound:
            return None
        if job.epoch != epoch or job.stage not in LEASED:
            return None
        taken = self._take_back_once(job, self.clock.now(), reason, actor)
        if taken is not None and taken.stage is Stage.QUEUED:
            self.bump_gate(product)
        return taken

    def _take_back_once(
        self, job: Job, now: datetime, reason: str, actor: str = "reaper"
    ) -> Job | None:
        try:
            return self._write(
                J.expire(job, now=now, reason=reason, actor=actor), job.etag, spill=True
            )
        except (ConcurrencyConflict, NotFound):
            return None  # it moved: whoever moved it decided

    def _unblock_dependents(
        self, product: str, *, bump: bool = True
    ) -> tuple[list[str], list[str]]:
        blocked = self.docs.query(
            JOBS_OLDEST_IN_STAGE, product, {"stage": "blocked", "top": self.config.reap_batch}
        )
        unblocked: list[str] = []
        failed: list[str] = []
        stage_cache: dict[str, Stage | None] = {}
        for row in blocked:
            job = Job.from_doc(row)
            if job.deps is None:
                continue
            stages = []
            for dep in job.deps.jobs:
                if dep not in stage_cache:
                    try:
                        stage_cache[dep] = self.get_job(product, dep).stage
                    except JobNotFound:
                        stage_cache[dep] = None
                known = stage_cache[dep]
                stages.append(known if known is not None else Stage.CANCELLED)
            verdict = _deps_verdict(job.deps.mode, stages)
            if verdict == "waiting":
                continue
            now = self.clock.now()
            if verdict == "ready":
                moved = J.transition(
                    job,
                    Action.UNBLOCK,
                    actor="reaper",
                    now=now,
                    reason="dependencies shipped",
                    queueKey=queue_key(job.priority, job.createdAt, job.id),
                )
            else:
                moved = J.transition(
                    job,
                    Action.DEPS_FAILED,
                    actor="reaper",
                    now=now,
                    reason="a dependency ended without shipping",
                )
            try:
                self._write(moved, job.etag, spill=True)
            except (ConcurrencyConflict, NotFound):
                continue
            (unblocked if verdict == "ready" else failed).append(job.id)
        if bump and unblocked:
            self.bump_gate(product)
        return unblocked, failed

    def products(self) -> list[str]:
        rows = self.docs.query(DOCS_OF_TYPE, SYSTEM_PARTITION, {"type": "product"})
        return sorted(str(r["product"]) for r in rows)

    def _register_product(self, product: str) -> None:
        if product in self._known_products:
            return
        with contextlib.suppress(AlreadyExists):
            self.docs.create(
                {
                    "id": f"product-{product}",
                    "productId": SYSTEM_PARTITION,
                    "type": "product",
                    "product": product,
                }
            )
        self._known_products.add(product)

    # --- explain and metrics ---------------------------------------------------------

    def explain(self, product: str, job_id: str) -> dict[str, Any]:
        job = self.get_job(product, job_id)
        now = self.clock.now()
        views = self.factory_views(product)
        verdicts = explain(job, views, now, self.weights(product))
        blockers = self._quota_blockers(job, now) if job.stage is Stage.QUEUED else []
        summary = _explain_summary(job, verdicts, views)
        if blockers and summary.startswith("queued"):
            summary = "queued: " + "; ".join(blockers)
        return {
            "jobId": job.id,
            "stage": job.stage.value,
            "holder": job.lease.holder if job.lease else None,
            "epoch": job.epoch,
            "failedBy": list(job.failedBy),
            "stalled": job.stalled,
            "unroutable": not can_ever_run(job, views),
            "blockers": blockers,
            "summary": summary,
            "factories": [
                {
                    "factory": v.factory,
                    "eligible": v.eligible,
                    "reasons": list(v.reasons),
                    "missingCapabilities": list(v.missing),
                    "score": v.breakdown.as_dict() if v.breakdown else None,
                }
                for v in verdicts
            ],
        }

    def _quota_blockers(self, job: Job, now: datetime) -> list[str]:
        """What holds a queued job back whatever the factory: its budget, its channel."""
        blockers = []
        budget = self.budgets.get(job.productId)
        if budget is not None:
            why = budget.why_not(estimate_of(job))
            if why:
                blockers.append(why)
        if job.channel:
            channel = self.channels.get(job.productId, job.channel)
            why = channel.why_not(now) if channel else None
            if why:
                blockers.append(why)
        return blockers

    def compute_metrics(self, product: str) -> dict[str, Any]:
        """Compute and store the product's metrics (``fleet.coordinator.metrics``)."""
        return compute_metrics(self, product)

    def metrics(self, product: str) -> dict[str, Any]:
        """The stored metrics: one point read."""
        return read_metrics(self, product)

    # --- the one write path ----------------------------------------------------------

    def _update(
        self,
        product: str,
        job_id: str,
        change: Callable[[Job, datetime], Job],
        *,
        spill: bool = True,
    ) -> Job:
        """Read, change, conditionally write; on a lost race, read again and re-decide (the
        change function re-checks fences and transitions against the fresh state)."""
        for _ in range(self.config.write_retries):
            job = self.get_job(product, job_id)
            updated = change(job, self.clock.now())
            try:
                stored = self._write(updated, job.etag, spill=spill)
            except ConcurrencyConflict:
                continue
            except StoreUnavailable as exc:
                stored = self._landed(updated, exc)
            self._lease_ended(job, stored)
            return stored
        raise ConcurrencyConflict(f"job {job_id} is changing too fast; retry", jobId=job_id)

    def _landed(self, expected: Job, error: StoreUnavailable) -> Job:
        """After a job write failed with ``StoreUnavailable``: the write may have happened
        with only its answer lost (a dropped connection, a timeout, a 503 after the commit).
        One point read tells: the stored job if it is what was written, else ``error`` again
        (nothing happened, or the store cannot tell yet: the caller retries, and re-decides
        against the fresh state). Without this, a retried report of a transition that did
        happen is refused as fenced, and a claim whose answer was lost leaves the job leased
        to a factory that never knew."""

        def written(job: Job) -> dict[str, Any]:
            # The write may have spilled (moved older events and runs to documents of their
            # own): compare what a spill leaves alone.
            return {k: v for k, v in job.to_doc().items() if k not in _SPILLED_FIELDS}

        try:
            current = self.get_job(expected.productId, expected.id)
        except JobNotFound:
            raise error from None
        if written(current) != written(expected):
            raise error
        return current

    def _write(self, job: Job, etag: str | None, *, spill: bool) -> Job:
        """Write ``job`` if its etag is still ``etag``. Runs are kept bounded on every write
        (the claim adds one); events only with ``spill`` (a renew never spills)."""
        for policy in _SPILLS if spill else (_RUN_SPILL,):
            job = self._spill(job, policy)
        return Job.from_doc(self.docs.replace(job.to_doc(), etag=etag))

    def _spill(self, job: Job, policy: _Spill) -> Job:
        """Move the older part of one of the job's bounded lists to documents of their own.
        The creates are idempotent (deterministic ids), so a write that then loses its race
        leaves only copies of history that already happened."""
        items: tuple[Any, ...] = getattr(job, policy.field)
        if len(items) <= policy.limit:
            return job
        old, recent = items[: -policy.keep], items[-policy.keep :]
        for item in old:
            with contextlib.suppress(AlreadyExists):
                self.docs.create(policy.document(job, item, self.config).to_doc())
        return job.evolve(**{policy.field: recent, policy.through: policy.key(old[-1])})


# --- spilling --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spill:
    """One of a job's bounded lists: past ``limit`` items, all but the newest ``keep`` move
    to documents (``document``); ``through`` records the key of the newest one moved."""

    field: str
    through: str
    limit: int
    keep: int
    key: Callable[[Any], int]
    document: Callable[[Job, Any, CoordinatorConfig], Document]


def _event_doc(job: Job, event: Event, config: CoordinatorConfig) -> Document:
    return EventDoc(
        id=f"{job.id}:{event.seq}",
        productId=job.productId,
        jobId=job.id,
        seq=event.seq,
        event=event,
        ttl=config.event_ttl_seconds,
    )


def _run_doc(job: Job, run: Run, config: CoordinatorConfig) -> Document:
    # No TTL: a run is the record of what an attempt cost and produced, one per attempt.
    return RunDoc(
        id=f"run:{job.id}:{run.epoch}",
        productId=job.productId,
        jobId=job.id,
        epoch=run.epoch,
        run=run,
    )


# Events are spilled by halves (a spill is a burst of creates: not on every write); runs
# one at a time past EMBEDDED_RUNS (a job gains one run per attempt).
_EVENT_SPILL = _Spill(
    "events",
    "spilledThrough",
    J.EMBEDDED_EVENTS,
    J.EMBEDDED_EVENTS // 2,
    lambda e: e.seq,
    _event_doc,
)
_RUN_SPILL = _Spill(
    "runs", "runsSpilledThrough", RU.EMBEDDED_RUNS, RU.EMBEDDED_RUNS, lambda r: r.epoch, _run_doc
)
_SPILLS = (_EVENT_SPILL, _RUN_SPILL)
_SPILLED_FIELDS = frozenset(f for p in _SPILLS for f in (p.field, p.through))


# --- helpers -------------------------------------------------------------------------


def _reported_cost(*reports: dict[str, Any] | None) -> float | None:
    for report in reports:
        value = (report or {}).get("costUsd")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


@dataclass(frozen=True)
class Preemption:
    """A critical job with no free seat may evict the lowest-priority running job it
    outranks. Off unless a product turns it on."""

    enabled: bool = False
    min_priority: int = 9  # jobs at or above this priority may preempt
    after_seconds: float = 60.0  # ... once they have waited this long

    def merged(self, raw: dict[str, Any]) -> Preemption:
        return Preemption(
            enabled=bool(raw.get("enabled", self.enabled)),
            min_priority=int(raw.get("minPriority", self.min_priority)),
            after_seconds=float(raw.get("afterSeconds", self.after_seconds)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "minPriority": self.min_priority,
            "afterSeconds": self.after_seconds,
        }


@dataclass(frozen=True)
class ProductSettings:
    weights: Weights = DEFAULT_WEIGHTS
    preemption: Preemption = field(default_factory=Preemption)
    alerts: AlertRules = field(default_factory=AlertRules)  # the metrics timer's alert rules
    timeout_seconds: int | None = None  # an attempt's timeout when its manifest names none

    @classmethod
    def from_doc(cls, doc: dict[str, Any], default_weights: Weights) -> ProductSettings:
        raw = doc.get("preemption")
        rules = doc.get("alerts")
        timeout = doc.get("timeoutSeconds")
        return cls(
            weights=weights_from(doc.get("weights"), default_weights),
            preemption=Preemption().merged(raw if isinstance(raw, dict) else {}),
            alerts=AlertRules().merged(rules if isinstance(rules, dict) else {}),
            timeout_seconds=(
                timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else None
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": weights_as_dict(self.weights),
            "preemption": self.preemption.as_dict(),
            "alerts": self.alerts.as_dict(),
            "timeoutSeconds": self.timeout_seconds,
        }


def weights_as_dict(weights: Weights) -> dict[str, float]:
    return {k: float(v) for k, v in dataclasses.asdict(weights).items()}


def weights_from(raw: Any, default: Weights) -> Weights:
    if not isinstance(raw, dict):
        return default
    known = {f.name for f in dataclasses.fields(Weights)}
    values = {k: v for k, v in raw.items() if k in known and isinstance(v, int | float)}
    values = {k: int(v) if k == "exclude_after_failures" else float(v) for k, v in values.items()}
    # Values were filtered to the dataclass's own numeric fields just above.
    return dataclasses.replace(default, **values)  # type: ignore[arg-type]


def _recently_preempted_for(job: Job, now: datetime, seconds: float) -> bool:
    return any(
        e.type == "preempted_for" and (now - e.at).total_seconds() < seconds for e in job.events
    )


def _deps_verdict(mode: str, stages: list[Stage]) -> str:
    """'ready', 'waiting' or 'impossible' for a dependent job, from its deps' stages."""
    shipped = [s is Stage.SHIPPED for s in stages]
    dead = [s in TERMINAL and s is not Stage.SHIPPED for s in stages]
    if mode == "any":
        if any(shipped):
            return "ready"
        return "impossible" if all(dead) else "waiting"
    if all(shipped):
        return "ready"
    return "impossible" if any(dead) else "waiting"


def _parse_cursor(cursor: str | None) -> tuple[str, tuple[str, str, int]]:
    if not cursor:
        return "", ("", "", 0)
    parts = cursor.split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValidationFailed(
            [Problem(path="after", code="invalid_cursor", message="not a cursor")], "bad cursor"
        )
    return parts[0], (parts[0], parts[1], int(parts[2]))


def _explain_summary(job: Job, verdicts: list[Verdict], views: list[FactoryView]) -> str:
    if job.stage in LEASED and job.lease:
        return (
            f"held by {job.lease.holder} (epoch {job.epoch}) until {format_ts(job.lease.expiresAt)}"
        )
    if job.stage is Stage.BLOCKED:
        return "blocked: waiting for its dependencies"
    if job.stage is not Stage.QUEUED:
        return f"not waiting: stage is {job.stage.value}"
    if not views:
        return "queued: no factory has registered with this product yet"
    if not can_ever_run(job, views):
        return "unroutable: no known factory advertises every required capability"
    eligible = [v for v in verdicts if v.eligible]
    if not eligible:
        return "queued: every capable factory is busy, paused, stale or excluded"
    return f"queued: {len(eligible)} factories can take it; best is {eligible[0].factory}"
