"""The tracker bridge: tracker items become jobs, and jobs' stage changes are echoed back.

Ingest is idempotent: an item's job has the idempotency key ``tracker:{source}:{id}``, so
the same issue delivered twice (webhooks retry) is one job.

GitHub's issues webhook lands only in the product its repository is bound to
(``fleet.coordinator.github``): the delivery names its repository, the repository's binding
names the product and holds the secret its ``X-Hub-Signature-256`` HMAC is checked with
(in constant time). Nothing the request says otherwise (``?product=``) is read. A delivery
naming a repository bound nowhere, or signed with anything but its binding's secret, is
refused (401) and changes nothing: no delivery ever creates a product. Once verified, an
issue becomes a job only if its author's ``author_association`` is one the binding allows
and it carries the binding's label (when there is one), and only once per
``X-GitHub-Delivery``; otherwise the reply says why nothing was made.

There is no process-wide GitHub secret (``TRACKER_WEBHOOK_SECRET`` is gone): one secret
shared by several repositories would let any of them sign deliveries naming another, and so
land jobs in its product.

The echo never blocks a transition: it is not done by the writer of the transition at all.
A dispatcher (``fleet.coordinator.webhooks``, run by the reaper's timer) follows the
product's job event feed from a stored cursor and POSTs each stage change of a tracker job
to the configured URL, signed with ``X-Fleet-Signature-256: sha256=<hmac>``. A failing
endpoint is retried with capped exponential backoff; the cursor only moves past an event
once it was delivered, so nothing is lost and the order is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fleet.coordinator.github import DELIVERY, GitHubBindings
from fleet.coordinator.webhooks import Dispatcher, Endpoint, Item, Poster, backoff_seconds, sign
from fleet.domain.manifest import parse_json
from fleet.domain.models import Job
from fleet.errors import NotFound, Problem, Unauthorized, ValidationFailed

if TYPE_CHECKING:
    from fleet.coordinator.service import Coordinator

log = logging.getLogger(__name__)

CURSOR_ID = "tracker-echo"
__all__ = [
    "CURSOR_ID",
    "Delivered",
    "GitHubDelivery",
    "Ignored",
    "Tracker",
    "TrackerConfig",
    "backoff_seconds",
    "sign",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_HEADER = "X-GitHub-Event"
SIGNATURE_PREFIX = "sha256="
# The one answer to every delivery that proves nothing: never which check failed (whether
# the repository is bound at all is not told to whoever asks).
REFUSED = (
    f"{SIGNATURE_HEADER} does not match a binding of the repository the delivery names "
    "(bind it: PUT /api/fleet/tracker/github)"
)
# The issues actions that make a job.
ACTIONS = ("opened", "reopened", "labeled")

# Why a verified delivery made no job.
Reason = Literal["event", "action", "author_association", "label", "duplicate_delivery"]


@dataclass(frozen=True)
class TrackerConfig:
    echo_url: str | None = None  # where stage changes are POSTed
    echo_secret: str | None = None  # signs what is POSTed there
    batch: int = 100
    # Events younger than this are echoed on a later pass: an event is stamped just before
    # its write lands, so a younger one may still be landing behind the cursor (a throttled
    # write is retried for up to COSMOS_THROTTLE_MAX_WAIT_SECONDS).
    settle_seconds: float = 10.0


def _malformed(header: str, message: str) -> ValidationFailed:
    return ValidationFailed([Problem(header, "malformed_header", message)], f"{header}: {message}")


@dataclass(frozen=True)
class GitHubDelivery:
    """One delivery of GitHub's webhook: its headers, checked for form, and its body."""

    event: str
    delivery: str
    signature: str  # the hex digest, lower case
    body: bytes
    payload: Mapping[str, Any]

    @classmethod
    def of(
        cls,
        event: str,
        delivery: str | None,
        signature: str | None,
        body: bytes,
        payload: Mapping[str, Any],
    ) -> GitHubDelivery:
        """400 for a header that is not what GitHub sends (a signature that is not
        ``sha256=`` and 64 hex digits, in ASCII); 401 for no signature at all."""
        signature = (signature or "").strip()
        if not signature:
            raise Unauthorized(f"missing {SIGNATURE_HEADER}", header=SIGNATURE_HEADER)
        digest = signature.removeprefix(SIGNATURE_PREFIX).lower()
        if (
            not signature.isascii()
            or not signature.startswith(SIGNATURE_PREFIX)
            or len(digest) != hashlib.sha256().digest_size * 2
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise _malformed(SIGNATURE_HEADER, "expected sha256= and 64 hexadecimal digits")
        delivery = (delivery or "").strip()
        if not DELIVERY.match(delivery):
            raise _malformed(DELIVERY_HEADER, "expected GitHub's delivery id (a GUID)")
        return cls(event.strip()[:100], delivery, digest, body, payload)

    @property
    def repository(self) -> str | None:
        repository = self.payload.get("repository")
        name = repository.get("full_name") if isinstance(repository, Mapping) else None
        return name if isinstance(name, str) else None

    def signed_with(self, secret: str) -> bool:
        expected = hmac.new(secret.encode("utf-8"), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode("ascii"), self.signature.encode("ascii"))


@dataclass(frozen=True)
class Delivered:
    """A delivery that made its issue's job (or found the one it made before)."""

    job: Job
    created: bool


@dataclass(frozen=True)
class Ignored:
    """A delivery that made nothing, and why."""

    event: str
    reason: Reason
    message: str


class Tracker:
    def __init__(
        self, coordinator: Coordinator, config: TrackerConfig, poster: Poster | None = None
    ) -> None:
        self.coord = coordinator
        self.config = config
        self.dispatcher = Dispatcher(
            coordinator.docs,
            coordinator.clock,
            Endpoint(config.echo_url, config.echo_secret),
            doc_id=CURSOR_ID,
            doc_type="tracker_cursor",
            what="tracker echo",
            poster=poster,
        )
        self.github = GitHubBindings(
            coordinator.docs, coordinator.clock, coordinator.register, coordinator.fleet_log
        )

    # --- ingest ----------------------------------------------------------------------

    def ingest(self, product: str, item: Mapping[str, Any], actor: str) -> tuple[Job, bool]:
        """A generic tracker item: {source, id, title, body?, url?, capabilities?, priority?,
        ...any manifest field}. Returns (job, created)."""
        source, external = str(item.get("source") or ""), str(item.get("id") or "")
        problems = []
        if not source:
            problems.append(("source", "missing", "the tracker's name, e.g. 'github'"))
        if not external:
            problems.append(("id", "missing", "the item's id in the tracker"))
        if problems:
            raise ValidationFailed.one(*problems[0])
        fields = {k: v for k, v in item.items() if k not in ("source", "id", "url")}
        fields.setdefault("body", "")
        fields["idempotencyKey"] = f"tracker:{source}:{external}"[:200]
        manifest = parse_json(fields)
        tracker = {"source": source, "id": external, "url": item.get("url")}
        return self.coord.submit(product, manifest, actor, tracker=tracker)

    def receive_github(self, delivery: GitHubDelivery) -> Delivered | Ignored:
        """GitHub's webhook, in the product the repository it names is bound to: verified
        with that binding's secret (401 otherwise: nothing is written), then an opened,
        reopened or labeled issue by an allowed author (with the binding's label, if it has
        one) becomes a job, once per delivery id. Everything else is ignored, with why."""
        repository = delivery.repository
        binding = self.github.route(repository) if repository else None
        if binding is None or not delivery.signed_with(binding.secret.get_secret_value()):
            shown = repository[:200] if repository else None
            log.info("github delivery %s refused (repository %r)", delivery.delivery, shown)
            raise Unauthorized(REFUSED, header=SIGNATURE_HEADER)
        payload, event = delivery.payload, delivery.event
        if event != "issues":
            return Ignored(event, "event", "only issues events make jobs")
        action = payload.get("action")
        if action not in ACTIONS:
            return Ignored(event, "action", "only opened, reopened and labeled issues make jobs")
        raw_issue = payload.get("issue")
        issue: Mapping[str, Any] = raw_issue if isinstance(raw_issue, Mapping) else {}
        association = str(issue.get("author_association") or "NONE")
        if not binding.allows(association):
            allowed = ", ".join(binding.allowedAssociations)
            return Ignored(
                event,
                "author_association",
                f"the issue's author is {association[:40]}; this repository takes issues "
                f"from {allowed}",
            )
        labels = [
            str(label.get("name", ""))
            for label in issue.get("labels") or []
            if isinstance(label, Mapping)
        ]
        if not binding.labelled(labels):
            return Ignored(event, "label", f"the issue is not labeled {binding.label}")
        number = issue.get("number")
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValidationFailed.one("issue.number", "missing", "the issue's number")
        product = binding.productId
        if not self.github.first_delivery(product, delivery.delivery, binding.repository):
            return Ignored(
                event, "duplicate_delivery", f"delivery {delivery.delivery} was received before"
            )
        try:
            # Named as GitHub spells it (the binding's spelling may differ in case).
            job, created = self._ingest_issue(product, str(repository), number, issue)
        except Exception:
            self.github.forget_delivery(product, delivery.delivery)  # GitHub may redeliver
            raise
        return Delivered(job, created)

    def _ingest_issue(
        self, product: str, repository: str, number: int, issue: Mapping[str, Any]
    ) -> tuple[Job, bool]:
        labels = [
            str(label.get("name", "")).lower()
            for label in issue.get("labels") or []
            if isinstance(label, Mapping)
        ]
        item = {
            "source": "github",
            "id": f"{repository}#{number}",
            "url": issue.get("html_url"),
            "title": str(issue.get("title") or f"issue {number}")[:200],
            "body": str(issue.get("body") or ""),
            # Labels like "cap:python" name required capabilities.
            "capabilities": [lab[4:] for lab in labels if lab.startswith("cap:")],
        }
        return self.ingest(product, item, f"tracker:github:{repository}")

    # --- echo ------------------------------------------------------------------------

    def echo(self, product: str) -> int:
        """Deliver the stage changes of tracker jobs since the cursor. Returns how many were
        delivered; stops at the first failure (retried after a backoff)."""
        return self.dispatcher.dispatch(product, lambda cursor: self._items(product, cursor))

    def _items(self, product: str, cursor: str | None) -> Iterator[Item]:
        events, _ = self.coord.product_events(
            product,
            cursor,
            self.config.batch,
            alerts=False,
            fleet=False,
            settle_seconds=self.config.settle_seconds,
        )
        for event in events:
            position = "|".join((event["at"], event["jobId"], str(event["seq"])))
            yield position, self._payload(product, event)

    def _payload(self, product: str, event: Mapping[str, Any]) -> dict[str, Any] | None:
        if event.get("fromStage") == event.get("toStage") and event.get("type") != "submit":
            return None  # not a stage change
        try:
            job = self.coord.get_job(product, str(event["jobId"]))
        except NotFound:
            return None
        if job.tracker is None:
            return None
        return {
            "product": product,
            "jobId": job.id,
            "tracker": job.tracker,
            "title": job.title,
            "from": event.get("fromStage"),
            "to": event.get("toStage"),
            "event": event.get("type"),
            "reason": event.get("reason"),
            "at": event.get("at"),
        }

    def status(self, product: str) -> dict[str, Any]:
        return self.dispatcher.status(product)
