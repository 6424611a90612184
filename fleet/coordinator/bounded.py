"""Bounded lists kept in one document: the newest N of something appended by many writers
(a product's burndown points, its timer passes given up), each append one conditional write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound
from fleet.store.ports import DocumentStore


def append_bounded(
    docs: DocumentStore,
    product: str,
    doc: Mapping[str, Any],
    field: str,
    entry: Any,
    *,
    limit: int,
    retries: int,
    same: Callable[[Any, Any], bool] | None = None,
    also: Mapping[str, Any] | None = None,
) -> bool:
    """Append ``entry`` to the list ``field`` of the product's document ``doc["id"]`` (created
    from ``doc`` when there is none), keeping the newest ``limit``, with ``also``'s fields, in
    one conditional write (``If-Match``; a lost race reads again). Nothing is written when
    ``same(last entry, entry)``. Returns whether it wrote; raises ``ConcurrencyConflict``
    after ``retries`` lost races."""
    extra = dict(also or {})
    for _ in range(retries):
        try:
            current = docs.read(product, str(doc["id"]))
        except NotFound:
            try:
                docs.create({**doc, "productId": product, field: [entry], **extra})
                return True
            except AlreadyExists:
                continue
        kept = list(current.get(field) or [])
        if same is not None and kept and same(kept[-1], entry):
            return False
        try:
            updated = {**current, field: [*kept, entry][-limit:], **extra}
            docs.replace(updated, etag=current["_etag"])
            return True
        except ConcurrencyConflict:
            continue
    raise ConcurrencyConflict(f"{doc['id']} of {product} changing too fast")
