"""The tracker bridge: tracker items become jobs, and jobs' stage changes are echoed back.

Ingest is idempotent: an item's job has the idempotency key ``tracker:{source}:{id}``, so
the same issue delivered twice (webhooks retry) is one job. GitHub's issues webhook is
authenticated by its ``X-Hub-Signature-256`` HMAC, compared in constant time.

The echo never blocks a transition: it is not done by the writer of the transition at all.
A dispatcher (``fleet.coordinator.webhooks``, run by the reaper's timer) follows the
product's job event feed from a stored cursor and POSTs each stage change of a tracker job
to the configured URL, signed with ``X-Fleet-Signature-256: sha256=<hmac>``. A failing
endpoint is retried with capped exponential backoff; the cursor only moves past an event
once it was delivered, so nothing is lost and the order is kept.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.coordinator.webhooks import Dispatcher, Endpoint, Item, Poster, backoff_seconds, sign
from fleet.domain.manifest import parse_json
from fleet.domain.models import Job
from fleet.errors import NotFound, Unauthorized, ValidationFailed

if TYPE_CHECKING:
    from fleet.coordinator.service import Coordinator

log = logging.getLogger(__name__)

CURSOR_ID = "tracker-echo"
__all__ = ["CURSOR_ID", "Tracker", "TrackerConfig", "backoff_seconds", "sign"]


@dataclass(frozen=True)
class TrackerConfig:
    webhook_secret: str | None = None  # GitHub webhook secret (X-Hub-Signature-256)
    echo_url: str | None = None  # where stage changes are POSTed
    echo_secret: str | None = None  # signs what is POSTed there
    batch: int = 100
    # Events younger than this are echoed on a later pass: an event is stamped just before
    # its write lands, so a younger one may still be landing behind the cursor (a throttled
    # write is retried for up to COSMOS_THROTTLE_MAX_WAIT_SECONDS).
    settle_seconds: float = 10.0


def verify_github_signature(secret: str | None, body: bytes, header: str | None) -> None:
    if not secret:
        raise Unauthorized("GitHub webhooks are not configured (no webhook secret)")
    if not header or not hmac.compare_digest(sign(secret, body), header.strip()):
        raise Unauthorized("bad or missing X-Hub-Signature-256")


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

    def ingest_github(self, product: str, event: str, payload: Mapping[str, Any]) -> Job | None:
        """GitHub's issues webhook: an opened (or reopened, labeled) issue becomes a job.
        Other events and actions are acknowledged and ignored (None)."""
        if event != "issues" or payload.get("action") not in ("opened", "reopened", "labeled"):
            return None
        issue = payload.get("issue") or {}
        repo = (payload.get("repository") or {}).get("full_name") or "github"
        labels = [
            str(label.get("name", "")).lower()
            for label in issue.get("labels") or []
            if isinstance(label, dict)
        ]
        item = {
            "source": "github",
            "id": f"{repo}#{issue.get('number')}",
            "url": issue.get("html_url"),
            "title": str(issue.get("title") or f"issue {issue.get('number')}")[:200],
            "body": str(issue.get("body") or ""),
            # Labels like "cap:python" name required capabilities.
            "capabilities": [lab[4:] for lab in labels if lab.startswith("cap:")],
        }
        job, _ = self.ingest(product, item, f"tracker:github:{repo}")
        return job

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
