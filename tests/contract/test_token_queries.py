"""The token queries give the same answer on the twin and on the Cosmos emulator."""

from __future__ import annotations

from typing import Any

from fleet.store.ports import Stores
from fleet.store.queries import TOKENS_OF_FACTORY, TOKENS_OF_PRODUCT


def _token(partition: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"tok-{n}", "productId": partition, "type": "token", **fields}


def test_queries_tokens_of_product_by_kind_oldest_first(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_token(partition, 1, kind="enrollment", product="a", createdAt="2026-01-02"))
    docs.create(_token(partition, 2, kind="enrollment", product="a", createdAt="2026-01-01"))
    docs.create(_token(partition, 3, kind="factory", product="a", createdAt="2026-01-01"))
    docs.create(_token(partition, 4, kind="enrollment", product="b", createdAt="2026-01-01"))
    docs.create({"id": "x", "productId": partition, "type": "job", "kind": "enrollment",
                 "product": "a", "createdAt": "2026-01-01"})  # fmt: skip
    rows = docs.query(TOKENS_OF_PRODUCT, partition, {"product": "a", "kind": "enrollment"})
    assert [r["id"] for r in rows] == ["tok-2", "tok-1"]


def test_queries_tokens_of_factory(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_token(partition, 1, kind="factory", product="a", factoryId="f1"))
    docs.create(_token(partition, 2, kind="factory", product="a", factoryId="f2"))
    docs.create(_token(partition, 3, kind="factory", product="b", factoryId="f1"))
    docs.create(_token(partition, 4, kind="factory", product="a", factoryId="f1", revoked=True))
    rows = docs.query(TOKENS_OF_FACTORY, partition, {"product": "a", "factoryId": "f1"})
    assert sorted(r["id"] for r in rows) == ["tok-1", "tok-4"]
