"""Outgoing webhooks, delivered in order from a cursor, off every write path.

Used by the tracker bridge's echo (stage changes of tracker jobs) and by the alert webhook
(alerts raised and cleared). A dispatcher is run by a timer: it reads its cursor document,
asks its source for the items after the cursor, and POSTs each one, signed with
``X-Fleet-Signature-256: sha256=<HMAC-SHA256 of the body>`` when a secret is set. A failing
endpoint (any non-2xx answer, or a transport error) stops the pass and is retried with capped
exponential backoff on a later pass; the cursor only moves past an item once it was
delivered, so nothing is lost and the order is kept (delivery is at least once: a receiver
dedupes on the item's own identity). Nothing a dispatcher does can block or fail the write
that produced the item.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fleet.coordinator.clock import Clock
from fleet.domain.models import format_ts, parse_ts
from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound
from fleet.store.ports import DocumentStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Fleet-Signature-256"
MAX_BACKOFF_SECONDS = 300.0

# (url, body bytes, headers) -> HTTP status; raises on transport errors.
Poster = Callable[[str, bytes, dict[str, str]], int]
# One item after the cursor: (the cursor just past it, its payload or None to skip it).
Item = tuple[str, dict[str, Any] | None]


def post_with_requests(url: str, body: bytes, headers: dict[str, str]) -> int:
    import requests

    return int(requests.post(url, data=body, headers=headers, timeout=10).status_code)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_seconds(attempts: int) -> float:
    """Capped exponential: 2, 4, 8, ... seconds, at most five minutes."""
    return float(min(MAX_BACKOFF_SECONDS, 2.0 ** max(1, min(attempts, 16))))


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Endpoint:
    url: str | None  # None: the webhook is off
    secret: str | None = None  # signs each body (X-Fleet-Signature-256)


class Dispatcher:
    """Delivers one ordered stream per product to one endpoint, from a cursor document
    (``doc_id`` in the product's partition, written with If-Match like everything else)."""

    def __init__(
        self,
        docs: DocumentStore,
        clock: Clock,
        endpoint: Endpoint,
        *,
        doc_id: str,
        doc_type: str,
        what: str,
        poster: Poster | None = None,
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.endpoint = endpoint
        self.doc_id = doc_id
        self.doc_type = doc_type
        self.what = what  # for log lines: "tracker echo", "alert webhook"
        self.poster = poster or post_with_requests

    def dispatch(self, product: str, source: Callable[[str | None], Iterable[Item]]) -> int:
        """Deliver the items ``source(cursor)`` yields, in order. Returns how many were
        delivered; stops at the first failure (retried after a backoff) or when another
        instance moved the cursor meanwhile (its pass wins; ours ends)."""
        url = self.endpoint.url
        if not url:
            return 0
        now = self.clock.now()
        state = self.cursor(product)
        due = state.get("nextAttemptAt")
        if due and now < parse_ts(due):
            return 0
        delivered = 0
        moved_to: str | None = None  # past skipped items, not yet saved
        for cursor, payload in source(state.get("cursor")):
            if payload is None:
                moved_to = cursor
                continue
            error = self._post(url, payload)
            if error is not None:
                attempts = int(state.get("attempts", 0)) + 1
                retry_at = now + timedelta(seconds=backoff_seconds(attempts))
                changes: dict[str, Any] = {
                    "attempts": attempts,
                    "nextAttemptAt": format_ts(retry_at),
                    "lastError": error,
                }
                if moved_to is not None:
                    changes["cursor"] = moved_to
                self._save(state, **changes)
                log.warning(
                    "%s for %s failed (%s); attempt %d, next at %s",
                    self.what,
                    product,
                    error,
                    attempts,
                    format_ts(retry_at),
                )
                return delivered
            delivered += 1
            moved_to = None
            saved = self._save(state, cursor=cursor, attempts=0, nextAttemptAt=None, lastError=None)
            if saved is None:
                return delivered
            state = saved
        if moved_to is not None:
            self._save(state, cursor=moved_to)
        return delivered

    def _post(self, url: str, payload: dict[str, Any]) -> str | None:
        """POST one item; None when it was accepted (2xx), else what went wrong: the status
        code, or the error's class, never its text (a transport error's message carries the
        URL, and a URL may carry a secret): not in the status, not in the log."""
        body = encode(payload)
        headers = {"Content-Type": "application/json"}
        if self.endpoint.secret:
            headers[SIGNATURE_HEADER] = sign(self.endpoint.secret, body)
        try:
            status = self.poster(url, body, headers)
        except Exception as exc:  # any transport failure is a failed delivery
            return type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    def cursor(self, product: str) -> dict[str, Any]:
        try:
            return self.docs.read(product, self.doc_id)
        except NotFound:
            doc = {"id": self.doc_id, "productId": product, "type": self.doc_type, "cursor": None}
            try:
                return self.docs.create(doc)
            except AlreadyExists:
                return self.docs.read(product, self.doc_id)

    def _save(self, state: dict[str, Any], **changes: Any) -> dict[str, Any] | None:
        """Write the cursor document if nobody else did since we read it; None if they did."""
        try:
            return self.docs.replace({**state, **changes}, etag=state.get("_etag"))
        except (ConcurrencyConflict, NotFound):
            return None

    def status(self, product: str) -> dict[str, Any]:
        """Where delivery stands (a read: a dispatcher that never ran has no document)."""
        try:
            state = self.docs.read(product, self.doc_id)
        except NotFound:
            state = {}
        return {k: state.get(k) for k in ("cursor", "attempts", "nextAttemptAt", "lastError")}
