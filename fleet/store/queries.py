"""Every document query the project runs, named in one place.

Each query has its Cosmos SQL text and an equivalent Python description the in-memory twin
executes (filter, single-field order, TOP, the top-level fields it selects). The contract
suite runs them on both backends and checks they agree. Every query is confined to one
partition (the adapter passes the partition key and the SQL names it:
``c.productId = @partition``), but for the few marked ``across``: the timers' sweeps, which
ask the whole container which products have something due (``fleet.coordinator.sweep``),
each bounded by ``TOP`` and run once per tick, never per product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.store.expr import UNDEFINED, lookup

Where = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]


@dataclass(frozen=True)
class NamedQuery:
    name: str
    sql: str
    where: Where  # the twin's filter: (doc, params) -> bool; partition already applied
    order_by: str | None = None  # '/field' path; ascending unless descending
    descending: bool = False
    top_param: str | None = None  # name of the param that bounds the result size
    # The top-level fields a row carries (the SQL selects exactly these: ``select_list``);
    # empty: the whole document (``SELECT *``).
    select: tuple[str, ...] = ()
    # Across partitions (``DocumentStore.query_across``): the sweeps' only. Such a query
    # never names a partition, and the twin runs it over every document.
    across: bool = False

    def __post_init__(self) -> None:
        if self.across == ("c.productId = @partition" in self.sql):
            raise ValueError(
                f"query {self.name} must name the partition key unless it runs across them"
            )
        if self.select and f" {select_list(self.select)} FROM c " not in self.sql:
            raise ValueError(f"query {self.name} must select exactly its fields")


def select_list(fields: tuple[str, ...]) -> str:
    """The SQL projection of top-level ``fields``: ``c.id, c.stage``. A row leaves out a
    field its document does not have, on both backends."""
    for name in fields:
        if not name.isidentifier():
            raise ValueError(f"not a field name: {name!r}")
    return ", ".join(f"c.{name}" for name in fields)


def _field_equals(path: str, param: str) -> Where:
    def where(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        value = lookup(doc, path)
        return value is not UNDEFINED and value == params[param]

    return where


def _all(*wheres: Where) -> Where:
    return lambda doc, params: all(w(doc, params) for w in wheres)


DOCS_OF_TYPE = NamedQuery(
    name="docs_of_type",
    sql="SELECT * FROM c WHERE c.productId = @partition AND c.type = @type",
    where=_field_equals("/type", "type"),
)

# The claim's candidate query: the first K jobs of a stage in queue order. One field order
# (``queueKey`` = priority band + submit time) so no composite index is needed.
JOBS_IN_STAGE = NamedQuery(
    name="jobs_in_stage",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage = @stage ORDER BY c.queueKey ASC"
    ),
    where=_all(lambda doc, _: doc.get("type") == "job", _field_equals("/stage", "stage")),
    order_by="/queueKey",
    top_param="top",
)


def _gt(path: str, param: str) -> Where:
    def where(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        value = lookup(doc, path)
        bound = params[param]
        return value is not UNDEFINED and type(value) is type(bound) and value > bound

    return where


def _lt(path: str, param: str) -> Where:
    def where(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        value = lookup(doc, path)
        bound = params[param]
        return value is not UNDEFINED and type(value) is type(bound) and value < bound

    return where


def _is_job(doc: Mapping[str, Any], _: Mapping[str, Any]) -> bool:
    return doc.get("type") == "job"


LEASED_STAGES = ("assigned", "building", "testing")

# The reaper's query: leases past their expiry. Timestamps are fixed-width UTC strings.
EXPIRED_LEASES = NamedQuery(
    name="expired_leases",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage IN ('assigned', 'building', 'testing') AND c.lease.expiresAt < @now "
        "ORDER BY c.lease.expiresAt ASC"
    ),
    where=_all(
        _is_job,
        lambda doc, _: doc.get("stage") in LEASED_STAGES,
        _lt("/lease/expiresAt", "now"),
    ),
    order_by="/lease/expiresAt",
    top_param="top",
)

# Every job a factory holds right now (the reaper's sweep for revoked or departed holders).
LEASED_JOBS = NamedQuery(
    name="leased_jobs",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage IN ('assigned', 'building', 'testing') ORDER BY c.queueKey ASC"
    ),
    where=_all(_is_job, lambda doc, _: doc.get("stage") in LEASED_STAGES),
    order_by="/queueKey",
    top_param="top",
)

# How many live leases one factory holds (leased stage, unexpired): the claim's seat check,
# one row whatever the count.
COUNT_LIVE_LEASES_OF_HOLDER = NamedQuery(
    name="count_live_leases_of_holder",
    sql=(
        "SELECT VALUE COUNT(1) FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage IN ('assigned', 'building', 'testing') AND c.lease.holder = @holder "
        "AND c.lease.expiresAt > @now"
    ),
    where=_all(
        _is_job,
        lambda doc, _: doc.get("stage") in LEASED_STAGES,
        _field_equals("/lease/holder", "holder"),
        _gt("/lease/expiresAt", "now"),
    ),
)

# Leased jobs the self-healer flagged stalled (the metrics timer's count; normally none).
STALLED_JOBS = NamedQuery(
    name="stalled_jobs",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stalled = true AND c.stage IN ('assigned', 'building', 'testing') "
        "ORDER BY c.queueKey ASC"
    ),
    where=_all(
        _is_job,
        lambda doc, _: doc.get("stalled") is True and doc.get("stage") in LEASED_STAGES,
    ),
    order_by="/queueKey",
    top_param="top",
)

JOBS_OLDEST_IN_STAGE = NamedQuery(
    name="jobs_oldest_in_stage",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage = @stage ORDER BY c.createdAt ASC"
    ),
    where=_all(_is_job, _field_equals("/stage", "stage")),
    order_by="/createdAt",
    top_param="top",
)

EVENTS_OF_JOB = NamedQuery(
    name="events_of_job",
    sql=(
        "SELECT * FROM c WHERE c.productId = @partition AND c.type = 'event' "
        "AND c.jobId = @jobId AND c.seq > @after ORDER BY c.seq ASC"
    ),
    where=_all(
        lambda doc, _: doc.get("type") == "event",
        _field_equals("/jobId", "jobId"),
        _gt("/seq", "after"),
    ),
    order_by="/seq",
)

# A job's spilled runs (one document per attempt), oldest first.
RUNS_OF_JOB = NamedQuery(
    name="runs_of_job",
    sql=(
        "SELECT * FROM c WHERE c.productId = @partition AND c.type = 'run' "
        "AND c.jobId = @jobId ORDER BY c.epoch ASC"
    ),
    where=_all(lambda doc, _: doc.get("type") == "run", _field_equals("/jobId", "jobId")),
    order_by="/epoch",
)

# What an agent said while it worked: ordered by (epoch, its own sequence) as ``key``.
AGENT_EVENTS_OF_JOB = NamedQuery(
    name="agent_events_of_job",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'agent_event' "
        "AND c.jobId = @jobId AND c.key > @after ORDER BY c.key ASC"
    ),
    where=_all(
        lambda doc, _: doc.get("type") == "agent_event",
        _field_equals("/jobId", "jobId"),
        _gt("/key", "after"),
    ),
    order_by="/key",
    top_param="top",
)

# The product-wide live feed: jobs whose history moved at or after a cursor time, with
# their embedded events and nothing else (not a checkpoint, a body or a result).
# The product's event feed: every document holding events (a job's transitions, a factory's
# or a budget's fleet events, an event logged beside its state: ``fleet.domain.audit``) whose
# latest event is at or after ``@since``; only what the feed reads of each.
FEED_FIELDS = ("id", "type", "source", "lastEventAt", "events")
EVENTS_CHANGED_SINCE = NamedQuery(
    name="events_changed_since",
    sql=(
        f"SELECT TOP @top {select_list(FEED_FIELDS)} FROM c WHERE c.productId = @partition "
        "AND c.lastEventAt >= @since ORDER BY c.lastEventAt ASC"
    ),
    where=lambda doc, params: (
        isinstance(doc.get("lastEventAt"), str) and doc["lastEventAt"] >= params["since"]
    ),
    order_by="/lastEventAt",
    top_param="top",
    select=FEED_FIELDS,
)

# The same, jobs only: for a consumer of the jobs' transitions alone (the tracker echo), whose
# ``TOP`` fleet documents must not share.
JOBS_CHANGED_SINCE = NamedQuery(
    name="jobs_changed_since",
    sql=(
        f"SELECT TOP @top {select_list(FEED_FIELDS)} FROM c WHERE c.productId = @partition "
        "AND c.type = 'job' AND c.lastEventAt >= @since ORDER BY c.lastEventAt ASC"
    ),
    where=_all(
        _is_job,
        lambda doc, params: (
            isinstance(doc.get("lastEventAt"), str) and doc["lastEventAt"] >= params["since"]
        ),
    ),
    order_by="/lastEventAt",
    top_param="top",
    select=FEED_FIELDS,
)


def _stage_in(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    return doc.get("stage") in params["stages"]


# Demand (``fleet.coordinator.demand``): of the oldest queued jobs and of the leased ones, only
# what demand needs.
QUEUED_FOR_DEMAND = NamedQuery(
    name="queued_for_demand",
    sql=(
        "SELECT TOP @top c.capabilities, c.createdAt, c.budgetUsd FROM c "
        "WHERE c.productId = @partition AND c.type = 'job' AND c.stage = 'queued' "
        "ORDER BY c.createdAt ASC"
    ),
    where=_all(_is_job, lambda doc, _: doc.get("stage") == "queued"),
    order_by="/createdAt",
    top_param="top",
    select=("capabilities", "createdAt", "budgetUsd"),
)

LEASED_FOR_DEMAND = NamedQuery(
    name="leased_for_demand",
    sql=(
        "SELECT TOP @top c.capabilities FROM c WHERE c.productId = @partition "
        "AND c.type = 'job' AND c.stage IN ('assigned', 'building', 'testing')"
    ),
    where=_all(_is_job, lambda doc, _: doc.get("stage") in LEASED_STAGES),
    top_param="top",
    select=("capabilities",),
)


# --- the sweeps: which products a timer must visit (``fleet.coordinator.sweep``) --------
# Each is one request per page, whatever the number of products. Two shapes:
# - oldest first (``@seen``): the TOP rows, in the order of what is due, of the products not
#   found yet; the sweep asks again, with the products it found added to ``@seen``, while a
#   page comes back full. A product with many rows costs a page its rows, never another
#   product its turn;
# - by product (``@after``): the TOP rows of the products after ``@after``, in product order;
#   the sweep goes on from the last product read, tick after tick (a round robin: a product's
#   turn comes whatever the others hold).
# The system partition is never a product.


def _not_seen(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    return doc.get("productId") not in params["seen"] and doc.get("productId") != "_system"


# Documents with a moment due: ``dueAt`` is kept by each document in the write that changes
# what it derives from (``fleet.domain.models.Job.due_at``: a leased job's lease expiry; a
# product's pass-failures record: when its alert may clear). Once passed, what was due is
# done (requeued, cleared), so nothing stays due for long. An idle product has none.
DUE_PRODUCTS = NamedQuery(
    name="due_products",
    sql=(
        "SELECT TOP @top c.productId, c.dueAt FROM c WHERE c.dueAt < @now "
        "AND c.productId != '_system' AND NOT ARRAY_CONTAINS(@seen, c.productId) "
        "ORDER BY c.dueAt ASC"
    ),
    where=lambda doc, params: (
        isinstance(doc.get("dueAt"), str)
        and doc["dueAt"] < params["now"]
        and _not_seen(doc, params)
    ),
    order_by="/dueAt",
    top_param="top",
    select=("productId", "dueAt"),
    across=True,
)


# Products with a job under lease that has no ``dueAt``: written before jobs kept one. The
# reaper passes them, and its pass writes each such job's ``dueAt`` (``Reaper.reap``); then
# this finds nothing (one request a tick, served by the index).
UNDATED_LEASES = NamedQuery(
    name="undated_leases",
    sql=(
        "SELECT TOP @top c.productId FROM c WHERE c.type = 'job' "
        "AND c.stage IN ('assigned', 'building', 'testing') AND NOT IS_DEFINED(c.dueAt) "
        "AND c.productId != '_system' AND NOT ARRAY_CONTAINS(@seen, c.productId)"
    ),
    where=lambda doc, params: (
        _is_job(doc, params)
        and doc.get("stage") in LEASED_STAGES
        and "dueAt" not in doc
        and _not_seen(doc, params)
    ),
    top_param="top",
    select=("productId",),
    across=True,
)


def _product_after(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    product = doc.get("productId")
    return isinstance(product, str) and product > params["after"] and product != "_system"


WAITING_STAGES = ("queued", "review")


def _products_in_stages(name: str, stages: tuple[str, ...]) -> NamedQuery:
    """Products with a job in one of ``stages``, by product from after ``@after``: a round
    robin's query."""
    listed = ", ".join(f"'{stage}'" for stage in stages)
    return NamedQuery(
        name=name,
        sql=(
            f"SELECT TOP @top c.productId FROM c WHERE c.type = 'job' AND c.stage IN ({listed}) "
            "AND c.productId > @after AND c.productId != '_system' ORDER BY c.productId ASC"
        ),
        where=lambda doc, params: (
            _is_job(doc, params) and doc.get("stage") in stages and _product_after(doc, params)
        ),
        order_by="/productId",
        top_param="top",
        select=("productId",),
        across=True,
    )


# Products with a job waiting (queued, or in review): the reaper judges preemption, the metrics
# starvation and review waits, by how long it has waited.
WAITING_PRODUCTS = _products_in_stages("waiting_products", WAITING_STAGES)

# Products with a job under lease (the healer's: a holder's progress and silence are in its
# heartbeats, not in any document, so a product with work in hand is looked at every tick).
LEASED_PRODUCTS = _products_in_stages("leased_products", LEASED_STAGES)

# Products with an event at or after ``@since`` (a job's transition, a factory's or a budget's
# fleet event: every document holding events keeps ``lastEventAt``): what changed since the
# timer's last tick, for the passes that follow changes (metrics, the tracker echo, the
# release of a finished job's dependents). ``@at``: products already passed for their events
# at exactly ``@since`` (a tick that stopped short left the rest from there), whose later
# events still count.
CHANGED_PRODUCTS = NamedQuery(
    name="changed_products",
    sql=(
        "SELECT TOP @top c.productId, c.lastEventAt FROM c WHERE c.lastEventAt >= @since "
        "AND (c.lastEventAt > @since OR NOT ARRAY_CONTAINS(@at, c.productId)) "
        "AND c.productId != '_system' AND NOT ARRAY_CONTAINS(@seen, c.productId) "
        "ORDER BY c.lastEventAt ASC"
    ),
    where=lambda doc, params: (
        isinstance(doc.get("lastEventAt"), str)
        and doc["lastEventAt"] >= params["since"]
        and (doc["lastEventAt"] > params["since"] or doc.get("productId") not in params["at"])
        and _not_seen(doc, params)
    ),
    order_by="/lastEventAt",
    top_param="top",
    select=("productId", "lastEventAt"),
    across=True,
)

# Every factory still in a fleet, any product (the healer's: which ones went silent is
# judged against one scan of the heartbeats table). Read to the end, page by page: pages of
# factories, not of products.
FLEET_FACTORIES = NamedQuery(
    name="fleet_factories",
    sql=(
        "SELECT c.productId, c.id, c.status, c.revoked, c.lastSeen, c.ephemeral FROM c "
        "WHERE c.type = 'factory' "
        "AND c.deregistered = false AND c.productId != '_system'"
    ),
    where=lambda doc, _: (
        doc.get("type") == "factory"
        and doc.get("deregistered") is False
        and doc.get("productId") != "_system"
    ),
    select=("productId", "id", "status", "revoked", "lastSeen", "ephemeral"),
    across=True,
)


# What a job in a list carries: every field of a job but the large ones a holder or an
# operator writes (``body``, ``events``, ``checkpoint``, ``progress``, ``result``), so that a
# page costs its rows' small fields whatever the jobs carry. Every field left out has a
# default in ``fleet.domain.models.Job``; a unit test keeps this list in step with it.
JOB_SUMMARY_FIELDS = (
    "id",
    "productId",
    "type",
    "title",
    "persona",
    "profile",
    "capabilities",
    "priority",
    "budgetUsd",
    "channel",
    "deps",
    "idempotencyKey",
    "maxAttempts",
    "leaseSeconds",
    "verify",
    "repo",
    "base",
    "pr",
    "timeoutSeconds",
    "maxCostUsd",
    "stage",
    "epoch",
    "lease",
    "attempts",
    "failedBy",
    "avoid",
    "unroutable",
    "stalled",
    "hasDependents",
    "costs",
    "reservation",
    "parentId",
    "children",
    "tracker",
    "review",
    "reviewState",
    "createdAt",
    "updatedAt",
    "lastEventAt",
    "queueKey",
    "seq",
    "spilledThrough",
    "runs",
    "runsSpilledThrough",
)

# ``GET /fleet/jobs``, one page: jobs in some stages before a job id, newest first (ids sort by
# creation time and never change, so a walk by id neither skips nor repeats a job while jobs
# move between stages; jobs submitted during the walk are on the first page, not later ones). Flat
# predicates, no parentheses: ``ARRAY_CONTAINS`` is the stage filter (every stage, or one).
# ``@top`` is the page size plus one: a row past the page says there is a next page. Rows are
# job summaries (``JOB_SUMMARY_FIELDS``).
JOBS_PAGE = NamedQuery(
    name="jobs_page",
    sql=(
        f"SELECT TOP @top {select_list(JOB_SUMMARY_FIELDS)} FROM c "
        "WHERE c.productId = @partition AND c.type = 'job' "
        "AND ARRAY_CONTAINS(@stages, c.stage) AND c.id < @before ORDER BY c.id DESC"
    ),
    where=_all(_is_job, _stage_in, _lt("/id", "before")),
    order_by="/id",
    descending=True,
    top_param="top",
    select=JOB_SUMMARY_FIELDS,
)

# The same page, of the jobs one factory holds or held (``lease.holder``): a factory's view.
JOBS_OF_HOLDER_PAGE = NamedQuery(
    name="jobs_of_holder_page",
    sql=(
        f"SELECT TOP @top {select_list(JOB_SUMMARY_FIELDS)} FROM c "
        "WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.lease.holder = @holder AND ARRAY_CONTAINS(@stages, c.stage) AND c.id < @before "
        "ORDER BY c.id DESC"
    ),
    where=_all(_is_job, _field_equals("/lease/holder", "holder"), _stage_in, _lt("/id", "before")),
    order_by="/id",
    descending=True,
    top_param="top",
    select=JOB_SUMMARY_FIELDS,
)

# A job's artifacts (pointer documents), its newest attempts' first: a bounded read of one
# job's, never a scan of the product's.
ARTIFACTS_OF_JOB = NamedQuery(
    name="artifacts_of_job",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'artifact' "
        "AND c.jobId = @jobId ORDER BY c.epoch DESC"
    ),
    where=_all(lambda doc, _: doc.get("type") == "artifact", _field_equals("/jobId", "jobId")),
    order_by="/epoch",
    descending=True,
    top_param="top",
)

# A claim retried after its reply was lost: the job this factory already won with this
# request id (``lease.requestId``), if it still sits in ``assigned``. Flat predicates, no
# parentheses. Normally one row at most; ``@top`` bounds a client that reused an id.
CLAIM_OF_REQUEST = NamedQuery(
    name="claim_of_request",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND ARRAY_CONTAINS(@stages, c.stage) AND c.lease.holder = @holder "
        "AND c.lease.requestId = @requestId ORDER BY c.queueKey ASC"
    ),
    where=_all(
        _is_job,
        _stage_in,
        _field_equals("/lease/holder", "holder"),
        _field_equals("/lease/requestId", "requestId"),
    ),
    order_by="/queueKey",
    top_param="top",
)

COUNT_JOBS_IN_STAGE = NamedQuery(
    name="count_jobs_in_stage",
    sql=(
        "SELECT VALUE COUNT(1) FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage = @stage"
    ),
    where=_all(_is_job, _field_equals("/stage", "stage")),
)

PROFILE_VERSIONS = NamedQuery(
    name="profile_versions",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'profile' "
        "AND c.name = @name ORDER BY c.version DESC"
    ),
    where=_all(lambda doc, _: doc.get("type") == "profile", _field_equals("/name", "name")),
    order_by="/version",
    descending=True,
    top_param="top",
)

# Tokens live in the system partition (one point read authenticates a request); these two
# are for the operator's views and for rotation and revocation, never for authentication.
TOKENS_OF_PRODUCT = NamedQuery(
    name="tokens_of_product",
    sql=(
        "SELECT * FROM c WHERE c.productId = @partition AND c.type = 'token' "
        "AND c.product = @product AND c.kind = @kind ORDER BY c.createdAt ASC"
    ),
    where=_all(
        lambda doc, _: doc.get("type") == "token",
        _field_equals("/product", "product"),
        _field_equals("/kind", "kind"),
    ),
    order_by="/createdAt",
)

TOKENS_OF_FACTORY = NamedQuery(
    name="tokens_of_factory",
    sql=(
        "SELECT * FROM c WHERE c.productId = @partition AND c.type = 'token' "
        "AND c.product = @product AND c.factoryId = @factoryId"
    ),
    where=_all(
        lambda doc, _: doc.get("type") == "token",
        _field_equals("/product", "product"),
        _field_equals("/factoryId", "factoryId"),
    ),
)

# Learned routing's reading (``fleet.coordinator.routing``): the most recently changed jobs
# that were ever assigned (so have runs), newest first, with only what learning needs.
RECENT_RUNS = NamedQuery(
    name="recent_runs",
    sql=(
        "SELECT TOP @top c.persona, c.capabilities, c.runs, c.updatedAt FROM c "
        "WHERE c.productId = @partition AND c.type = 'job' AND c.attempts > 0 "
        "ORDER BY c.updatedAt DESC"
    ),
    where=_all(
        _is_job,
        lambda doc, _: (
            isinstance(doc.get("attempts"), int)
            and not isinstance(doc.get("attempts"), bool)
            and doc["attempts"] > 0
        ),
    ),
    order_by="/updatedAt",
    descending=True,
    top_param="top",
    select=("persona", "capabilities", "runs", "updatedAt"),
)

ALL_QUERIES = (
    DOCS_OF_TYPE,
    JOBS_IN_STAGE,
    EXPIRED_LEASES,
    LEASED_JOBS,
    STALLED_JOBS,
    JOBS_OLDEST_IN_STAGE,
    EVENTS_OF_JOB,
    RUNS_OF_JOB,
    AGENT_EVENTS_OF_JOB,
    EVENTS_CHANGED_SINCE,
    JOBS_CHANGED_SINCE,
    JOBS_PAGE,
    JOBS_OF_HOLDER_PAGE,
    ARTIFACTS_OF_JOB,
    CLAIM_OF_REQUEST,
    PROFILE_VERSIONS,
    COUNT_JOBS_IN_STAGE,
    TOKENS_OF_PRODUCT,
    TOKENS_OF_FACTORY,
    QUEUED_FOR_DEMAND,
    LEASED_FOR_DEMAND,
    DUE_PRODUCTS,
    UNDATED_LEASES,
    WAITING_PRODUCTS,
    LEASED_PRODUCTS,
    CHANGED_PRODUCTS,
    FLEET_FACTORIES,
    RECENT_RUNS,
)
