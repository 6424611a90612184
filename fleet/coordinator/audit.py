"""The fleet event log's writes (``fleet.domain.audit`` says what an event is and where it
is kept).

- ``create``/``replace``/``patch``: the state change and its event in one conditional write
  of the document the event is about (older events spilled first, idempotently);
- ``beside``: an event whose state is not a document of the product's partition (a token, a
  command), in a document of its own whose id the operation fixes: written twice, it is one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fleet.coordinator.clock import Clock
from fleet.domain.audit import FleetEvent, beside_doc, event_fields, spill_doc, with_event
from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound
from fleet.store.ports import DocumentStore, PatchOp, Set

log = logging.getLogger(__name__)

Doc = dict[str, Any]


class FleetLog:
    """Writes fleet events with (or beside) the state they describe."""

    def __init__(
        self, docs: DocumentStore, clock: Clock, ttl_seconds: int | None, retries: int = 8
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.ttl = ttl_seconds
        self.retries = retries

    def create(self, doc: Doc, event: FleetEvent) -> Doc:
        """Create ``doc`` with its first event (AlreadyExists as the store raises it)."""
        stamped, _ = with_event(doc, event)
        return self.docs.create(stamped)

    def replace(self, doc: Doc, event: FleetEvent, *, etag: str | None) -> Doc:
        """Replace ``doc`` (as read, then changed) with ``event`` appended, conditional on
        ``etag`` (ConcurrencyConflict as the store raises it: the caller re-reads)."""
        stamped, spill = with_event(doc, event)
        self._spill(str(doc["productId"]), str(doc["id"]), spill)
        return self.docs.replace(stamped, etag=etag)

    def upsert(self, doc: Doc, event: FleetEvent) -> Doc:
        """Write ``doc`` whole (what it was is of no matter), keeping the events the stored
        one has and adding ``event``: a read and a conditional write, re-read on a lost race."""
        product, doc_id = str(doc["productId"]), str(doc["id"])
        for _ in range(self.retries):
            try:
                current = self.docs.read(product, doc_id)
            except NotFound:  # nothing to keep
                try:
                    return self.create(doc, event)
                except AlreadyExists:
                    continue
            kept: Doc = {k: current[k] for k in ("events", "eventSeq") if k in current}
            try:
                return self.replace({**doc, **kept}, event, etag=current.get("_etag"))
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"document {doc_id} is changing too fast; retry")

    def patch(
        self,
        product: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        event: FleetEvent,
        *,
        current: Doc | None = None,
        etag: str | None = None,
        done: Callable[[Doc], bool] | None = None,
    ) -> Doc:
        """Patch ``ops`` and append ``event`` in one write. With ``etag`` (and the document
        ``current`` it is the etag of) the write is conditional on it and a lost race is the
        caller's (ConcurrencyConflict); without, the document is read and the write retried
        on a lost race. ``done`` says the document as read already is what the patch would
        make it (a deregistered factory deregistered again): then nothing is written, no
        event logged, and the document is returned as read. NotFound as the store raises it."""
        for _ in range(self.retries):
            doc = current if current is not None else self.docs.read(product, doc_id)
            if done is not None and done(doc):
                return doc
            stamped, spill = with_event(doc, event)
            self._spill(product, doc_id, spill)
            fields = [Set(f"/{k}", v) for k, v in event_fields(stamped).items()]
            try:
                return self.docs.patch(
                    product, doc_id, [*ops, *fields], etag=etag or doc.get("_etag")
                )
            except ConcurrencyConflict:
                if etag is not None:
                    raise
                current = None
        raise ConcurrencyConflict(f"document {doc_id} is changing too fast; retry")

    def beside(self, product: str, key: str, event: FleetEvent) -> bool:
        """Log ``event`` in a document of its own named by ``key``; False if it was already
        logged (the operation ran twice)."""
        try:
            self.docs.create(beside_doc(product, key, event, self.ttl))
        except AlreadyExists:
            return False
        return True

    def _spill(self, product: str, source: str, events: list[FleetEvent]) -> None:
        for event in events:
            # Spilled already by a write that then lost its race: the same document.
            with contextlib.suppress(AlreadyExists):
                self.docs.create(spill_doc(product, source, event, self.ttl))
