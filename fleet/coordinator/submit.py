"""Submitting work: a job from its manifest (once per idempotency key), its dependencies and
its children (a DAG, refused when it would close a cycle), and the personas' profiles a
manifest may name (immutable versions)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fleet.coordinator.config import Part
from fleet.coordinator.product import Gate, Products
from fleet.coordinator.writer import JobNotFound, Writer, deps_verdict
from fleet.domain import jobs as J
from fleet.domain.audit import new_event
from fleet.domain.ids import key_digest, sortable_id
from fleet.domain.manifest import Manifest, ProfileSpec
from fleet.domain.models import Deps, Event, Job, Profile, queue_key
from fleet.domain.scheduler import capabilities_offered
from fleet.domain.stages import Action, Stage
from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    IllegalTransition,
    NotFound,
    Problem,
    ValidationFailed,
)
from fleet.store.ports import Set
from fleet.store.queries import DOCS_OF_TYPE, PROFILE_VERSIONS


@dataclass(frozen=True, eq=False)
class Submissions(Part):
    writer: Writer
    products: Products
    gate: Gate
    entropy: Callable[[int], bytes]

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
        self.products.register(product)
        job_id: str | None = None
        if manifest.idempotencyKey:
            job_id = self._claim_idempotency_key(product, manifest.idempotencyKey)
            try:
                return self.writer.get_job(product, job_id), False
            except JobNotFound:
                pass  # the key was claimed but the job never written: write it now
        now = self.clock.now()
        job_id = job_id or sortable_id("j", now, self.entropy(10))
        job = self._new_job(product, job_id, manifest, actor, now)
        if parent_id is not None or tracker is not None:
            # A child: its parent waits for it (``add_children`` makes it so).
            job = job.evolve(
                parentId=parent_id, tracker=tracker, hasDependents=parent_id is not None
            )
        try:
            created = Job.from_doc(self.docs.create(job.to_doc()))
        except AlreadyExists:
            return self.writer.get_job(product, job_id), False
        if created.stage is Stage.QUEUED:
            self.gate.bump(product)
        elif created.stage is Stage.BLOCKED and created.deps is not None:
            self._mark_dependencies(product, created.deps.jobs)
        return created, True

    def _mark_dependencies(self, product: str, job_ids: tuple[str, ...]) -> None:
        """Tell each dependency some job waits for it (its ship then unblocks at once). One
        patch each; a dependency that ships before its mark lands leaves its dependent to the
        reaper's pass."""
        for job_id in job_ids:
            with contextlib.suppress(NotFound):
                self.docs.patch(product, job_id, [Set("/hasDependents", True)])

    def _claim_idempotency_key(self, product: str, key: str) -> str:
        """Bind the key to a job id, once: a deterministic document id makes the second
        submit's create fail, and it then reuses the first submit's job id."""
        doc_id = "idem-" + key_digest(product, key)
        try:
            return str(self.docs.read(product, doc_id)["jobId"])
        except NotFound:
            pass
        job_id = sortable_id("j", self.clock.now(), self.entropy(10))
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
        unroutable = not capabilities_offered(capabilities, self.products.known_fleet(product))
        if unroutable:  # only a fresh look at the fleet may say so
            fresh = self.products.known_fleet(product, fresh=True)
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

    def _deps_stage(self, product: str, manifest: Manifest) -> tuple[Stage, str | None]:
        assert manifest.deps is not None
        problems = []
        stages: list[Stage] = []
        for i, dep in enumerate(manifest.deps.jobs):
            try:
                stages.append(self.writer.get_job(product, dep).stage)
            except JobNotFound:
                problems.append(
                    Problem(path=f"deps.jobs[{i}]", code="unknown_dep", message=f"no job {dep}")
                )
        if problems:
            raise ValidationFailed(problems, "unknown dependencies")
        verdict = deps_verdict(manifest.deps.mode, stages)
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
        parent = self.writer.get_job(product, parent_id)
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

        updated = self.writer.update(product, parent_id, change)
        # The children may all be done already (a repeated call): let the parent go.
        self.writer.unblock_dependents(product)
        return self.writer.get_job(product, updated.id), children

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
                    cache[jid] = self.writer.get_job(product, jid)
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

    def put_profile(
        self, product: str, name: str, spec: ProfileSpec, by: str = "operator"
    ) -> Profile:
        """Create the next immutable version of a profile (its ``profile_saved`` event in
        the same write)."""
        self.products.register(product)
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
            event = new_event(
                "profile_saved",
                by,
                profile.createdAt,
                reason=f"{name} version {version}",
                profile=name,
                version=version,
            )
            try:
                return Profile.from_doc(self.fleet_log.create(profile.to_doc(), event))
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
