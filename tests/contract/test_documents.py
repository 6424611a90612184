"""The document-store contract: one suite, run on the in-memory twin and on the Cosmos emulator."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InvalidStoreRequest,
    NotFound,
    PreconditionFailed,
)
from fleet.store.expr import Defined, F, Not, all_of, any_of
from fleet.store.ports import ETAG, Incr, Remove, Set, Stores
from fleet.store.queries import DOCS_OF_TYPE, JOBS_IN_STAGE


def _doc(partition: str, doc_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "productId": partition, "type": "thing", **fields}


def _user_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def test_documents_create_then_read_returns_the_doc_with_an_etag(
    stores: Stores, partition: str
) -> None:
    created = stores.documents.create(_doc(partition, "a", n=1, nested={"x": [1, 2]}))
    read = stores.documents.read(partition, "a")
    assert created[ETAG] and read[ETAG] == created[ETAG]
    assert _user_fields(read) == _doc(partition, "a", n=1, nested={"x": [1, 2]})


def test_documents_read_missing_raises_not_found(stores: Stores, partition: str) -> None:
    with pytest.raises(NotFound):
        stores.documents.read(partition, "missing")


def test_documents_create_twice_raises_already_exists_and_keeps_the_first(
    stores: Stores, partition: str
) -> None:
    stores.documents.create(_doc(partition, "a", n=1))
    with pytest.raises(AlreadyExists):
        stores.documents.create(_doc(partition, "a", n=2))
    assert stores.documents.read(partition, "a")["n"] == 1


def test_documents_same_id_in_two_partitions_are_two_docs(stores: Stores, partition: str) -> None:
    other = partition + "-other"
    stores.documents.create(_doc(partition, "a", n=1))
    stores.documents.create(_doc(other, "a", n=2))
    assert stores.documents.read(partition, "a")["n"] == 1
    assert stores.documents.read(other, "a")["n"] == 2


def test_documents_replace_with_current_etag_succeeds_and_moves_the_etag(
    stores: Stores, partition: str
) -> None:
    created = stores.documents.create(_doc(partition, "a", n=1))
    replaced = stores.documents.replace({**created, "n": 2}, etag=created[ETAG])
    assert replaced["n"] == 2 and replaced[ETAG] != created[ETAG]
    assert stores.documents.read(partition, "a")["n"] == 2


def test_documents_replace_with_stale_etag_is_rejected_and_changes_nothing(
    stores: Stores, partition: str
) -> None:
    created = stores.documents.create(_doc(partition, "a", n=1))
    winner = stores.documents.replace({**created, "n": 2}, etag=created[ETAG])
    with pytest.raises(ConcurrencyConflict):
        stores.documents.replace({**created, "n": 3}, etag=created[ETAG])
    after = stores.documents.read(partition, "a")
    assert after["n"] == 2 and after[ETAG] == winner[ETAG]


def test_documents_replace_missing_raises_not_found(stores: Stores, partition: str) -> None:
    with pytest.raises(NotFound):
        stores.documents.replace(_doc(partition, "nope"), etag=None)


def test_documents_upsert_creates_then_replaces(stores: Stores, partition: str) -> None:
    stores.documents.upsert(_doc(partition, "a", n=1))
    stores.documents.upsert(_doc(partition, "a", n=2))
    assert stores.documents.read(partition, "a")["n"] == 2


def test_documents_patch_set_incr_remove(stores: Stores, partition: str) -> None:
    stores.documents.create(_doc(partition, "a", n=1, gone=True, lease={"epoch": 1}))
    patched = stores.documents.patch(
        partition,
        "a",
        [Incr("/n", 4), Set("/lease/holder", "f1"), Incr("/lease/epoch", 1), Remove("/gone")],
    )
    assert patched["n"] == 5
    assert patched["lease"] == {"epoch": 2, "holder": "f1"}
    assert "gone" not in patched
    assert _user_fields(stores.documents.read(partition, "a")) == _user_fields(patched)


def test_documents_patch_incr_creates_a_missing_field(stores: Stores, partition: str) -> None:
    stores.documents.create(_doc(partition, "a"))
    assert stores.documents.patch(partition, "a", [Incr("/version", 1)])["version"] == 1


def test_documents_patch_remove_of_missing_field_is_rejected(
    stores: Stores, partition: str
) -> None:
    stores.documents.create(_doc(partition, "a", n=1))
    with pytest.raises(InvalidStoreRequest):
        stores.documents.patch(partition, "a", [Remove("/absent")])
    assert stores.documents.read(partition, "a")["n"] == 1


def test_documents_patch_with_false_predicate_is_rejected_and_changes_nothing(
    stores: Stores, partition: str
) -> None:
    created = stores.documents.create(_doc(partition, "b", spent=90, reserved=5, ceiling=100))
    over_budget = F("/spent") + F("/reserved") + 10 <= F("/ceiling")
    with pytest.raises(PreconditionFailed):
        stores.documents.patch(partition, "b", [Incr("/reserved", 10)], condition=over_budget)
    after = stores.documents.read(partition, "b")
    assert after["reserved"] == 5 and after[ETAG] == created[ETAG]


def test_documents_patch_with_true_predicate_applies(stores: Stores, partition: str) -> None:
    stores.documents.create(_doc(partition, "b", spent=90, reserved=0, ceiling=100))
    fits = F("/spent") + F("/reserved") + 10 <= F("/ceiling")
    patched = stores.documents.patch(partition, "b", [Incr("/reserved", 10)], condition=fits)
    assert patched["reserved"] == 10
    with pytest.raises(PreconditionFailed):
        stores.documents.patch(partition, "b", [Incr("/reserved", 10)], condition=fits)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (F("/stage").eq("queued"), True),
        (F("/stage").ne("queued"), False),
        (F("/lease/epoch") >= 3, True),
        (F("/lease/epoch") > 3, False),
        (F("/missing").eq(1), False),
        (F("/missing").ne(1), False),  # undefined is not "not equal": it is undefined
        (Not(F("/missing").eq(1)), False),
        (Defined(F("/lease/holder")), True),
        (Not(Defined(F("/lease/gone"))), True),
        (F("/title").eq('say "hi" \\ it\'s'), True),
        (all_of(F("/stage").eq("queued"), F("/lease/epoch").eq(3)), True),
        (all_of(F("/stage").eq("queued"), F("/lease/epoch").eq(4)), False),
        (any_of(F("/stage").eq("shipped"), F("/lease/epoch").eq(3)), True),
        (F("/lease/holder").eq(None), False),
        (F("/nothing").eq(None), True),
        (F("/priority") - 1 < 2, True),
        (F("/stage") < 5, False),  # ordering across types is undefined, never true
    ],
)
def test_documents_patch_condition_semantics(
    stores: Stores, partition: str, condition: Any, expected: bool
) -> None:
    stores.documents.create(
        _doc(
            partition,
            "c",
            stage="queued",
            priority=2,
            nothing=None,
            title='say "hi" \\ it\'s',
            lease={"epoch": 3, "holder": "f1"},
        )
    )
    if expected:
        assert stores.documents.patch(partition, "c", [Set("/hit", True)], condition=condition)
        assert stores.documents.read(partition, "c")["hit"] is True
    else:
        with pytest.raises(PreconditionFailed):
            stores.documents.patch(partition, "c", [Set("/hit", True)], condition=condition)
        assert "hit" not in stores.documents.read(partition, "c")


def test_documents_patch_with_stale_etag_is_rejected(stores: Stores, partition: str) -> None:
    created = stores.documents.create(_doc(partition, "a", n=1))
    stores.documents.patch(partition, "a", [Incr("/n", 1)])
    with pytest.raises(ConcurrencyConflict):
        stores.documents.patch(partition, "a", [Incr("/n", 1)], etag=created[ETAG])
    assert stores.documents.read(partition, "a")["n"] == 2


def test_documents_patch_missing_raises_not_found(stores: Stores, partition: str) -> None:
    with pytest.raises(NotFound):
        stores.documents.patch(partition, "nope", [Incr("/n", 1)])


def test_documents_concurrent_incr_patches_lose_no_increment(
    stores: Stores, partition: str
) -> None:
    stores.documents.create(_doc(partition, "counter", version=0))
    threads, per_thread = 6, 10
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(per_thread):
                stores.documents.patch(partition, "counter", [Incr("/version", 1)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert stores.documents.read(partition, "counter")["version"] == threads * per_thread


def test_documents_concurrent_cas_replaces_have_exactly_one_winner(
    stores: Stores, partition: str
) -> None:
    created = stores.documents.create(_doc(partition, "job", holder=None))
    outcomes: list[str] = []
    lock = threading.Lock()

    def claim(name: str) -> None:
        try:
            stores.documents.replace({**created, "holder": name}, etag=created[ETAG])
            result = "won"
        except ConcurrencyConflict:
            result = "lost"
        with lock:
            outcomes.append(result)

    workers = [threading.Thread(target=claim, args=(f"f{i}",)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert stores.documents.read(partition, "job")["holder"] is not None


def test_documents_delete_with_stale_etag_is_rejected(stores: Stores, partition: str) -> None:
    created = stores.documents.create(_doc(partition, "a", n=1))
    stores.documents.replace({**created, "n": 2}, etag=None)
    with pytest.raises(ConcurrencyConflict):
        stores.documents.delete(partition, "a", etag=created[ETAG])
    stores.documents.delete(partition, "a")
    with pytest.raises(NotFound):
        stores.documents.read(partition, "a")
    with pytest.raises(NotFound):
        stores.documents.delete(partition, "a")


def test_documents_query_stays_inside_its_partition(stores: Stores, partition: str) -> None:
    other = partition + "-other"
    stores.documents.create(_doc(partition, "a"))
    stores.documents.create(_doc(partition, "b", type="other"))
    stores.documents.create(_doc(other, "c"))
    rows = stores.documents.query(DOCS_OF_TYPE, partition, {"type": "thing"})
    assert [r["id"] for r in rows] == ["a"]


def test_documents_jobs_in_stage_returns_top_k_in_queue_order(
    stores: Stores, partition: str
) -> None:
    for i, key in enumerate(["3:b", "1:z", "2:a", "1:a", "0:q"]):
        stage = "assigned" if key == "0:q" else "queued"
        stores.documents.create(
            {"id": f"j{i}", "productId": partition, "type": "job", "stage": stage, "queueKey": key}
        )
    rows = stores.documents.query(JOBS_IN_STAGE, partition, {"stage": "queued", "top": 3})
    assert [r["queueKey"] for r in rows] == ["1:a", "1:z", "2:a"]


def test_documents_calls_are_counted_by_kind(stores: Stores, partition: str) -> None:
    with stores.counters.measure() as cost:
        stores.documents.create(_doc(partition, "a", n=0))
        stores.documents.read(partition, "a")
        stores.documents.patch(partition, "a", [Incr("/n", 1)])
        stores.documents.query(DOCS_OF_TYPE, partition, {"type": "thing"})
    assert cost == {"write": 1, "read": 1, "patch": 1, "query": 1}


def test_documents_patch_condition_is_judged_in_its_own_partition(
    stores: Stores, partition: str
) -> None:
    other = partition + "-other"
    stores.documents.create(_doc(partition, "budget", ceiling=1))
    stores.documents.create(_doc(other, "budget", ceiling=None))  # would satisfy the condition
    with pytest.raises(PreconditionFailed):
        stores.documents.patch(
            partition, "budget", [Set("/hit", True)], condition=F("/ceiling").eq(None)
        )
    assert "hit" not in stores.documents.read(partition, "budget")
