"""The table-store and blob-store contracts, on the twins and on Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound
from fleet.store.ports import ETAG, Stores

TABLE = "heartbeats"


def test_tables_create_get_and_not_found(stores: Stores, partition: str) -> None:
    created = stores.tables.create(TABLE, {"PartitionKey": partition, "RowKey": "f1", "load": 2})
    got = stores.tables.get(TABLE, partition, "f1")
    assert got["load"] == 2 and got[ETAG] == created[ETAG]
    with pytest.raises(NotFound):
        stores.tables.get(TABLE, partition, "f2")
    with pytest.raises(AlreadyExists):
        stores.tables.create(TABLE, {"PartitionKey": partition, "RowKey": "f1", "load": 9})
    assert stores.tables.get(TABLE, partition, "f1")["load"] == 2


def test_tables_update_with_stale_etag_is_rejected_and_changes_nothing(
    stores: Stores, partition: str
) -> None:
    created = stores.tables.create(TABLE, {"PartitionKey": partition, "RowKey": "b", "tokens": 5})
    won = stores.tables.update(
        TABLE, {"PartitionKey": partition, "RowKey": "b", "tokens": 4}, etag=created[ETAG]
    )
    assert won["tokens"] == 4 and won[ETAG] != created[ETAG]
    with pytest.raises(ConcurrencyConflict):
        stores.tables.update(
            TABLE, {"PartitionKey": partition, "RowKey": "b", "tokens": 3}, etag=created[ETAG]
        )
    assert stores.tables.get(TABLE, partition, "b")["tokens"] == 4


def test_tables_upsert_merges_properties(stores: Stores, partition: str) -> None:
    stores.tables.upsert(TABLE, {"PartitionKey": partition, "RowKey": "f", "load": 1, "v": "1"})
    merged = stores.tables.upsert(TABLE, {"PartitionKey": partition, "RowKey": "f", "load": 3})
    assert merged["load"] == 3 and merged["v"] == "1"


def test_tables_list_partition_and_delete(stores: Stores, partition: str) -> None:
    for row in ("b", "a", "c"):
        stores.tables.upsert(TABLE, {"PartitionKey": partition, "RowKey": row, "n": 1})
    stores.tables.upsert(TABLE, {"PartitionKey": partition + "x", "RowKey": "z", "n": 1})
    assert [e["RowKey"] for e in stores.tables.list_partition(TABLE, partition)] == ["a", "b", "c"]
    stores.tables.delete(TABLE, partition, "b")
    assert [e["RowKey"] for e in stores.tables.list_partition(TABLE, partition)] == ["a", "c"]
    with pytest.raises(NotFound):
        stores.tables.delete(TABLE, partition, "b")


def test_tables_list_partitions_by_prefix_is_one_query(stores: Stores, partition: str) -> None:
    # The commands table's layout: PartitionKey "{product}:{factory}".
    for pk, row in ((":f2", "c2"), (":f1", "c3"), (":f1", "c1"), (":f10", "c4")):
        stores.tables.upsert("commands", {"PartitionKey": partition + pk, "RowKey": row, "n": 1})
    # Neighbours that share a prefix of the prefix, or sort right after it, are left out.
    stores.tables.upsert("commands", {"PartitionKey": partition + "x:f1", "RowKey": "z", "n": 1})
    stores.tables.upsert("commands", {"PartitionKey": partition + ";", "RowKey": "z", "n": 1})
    stores.tables.upsert("commands", {"PartitionKey": partition, "RowKey": "z", "n": 1})
    with stores.counters.measure() as cost:
        rows = stores.tables.list_partitions("commands", partition + ":")
    assert [(e["PartitionKey"].removeprefix(partition), e["RowKey"]) for e in rows] == [
        (":f1", "c1"),
        (":f1", "c3"),
        (":f10", "c4"),
        (":f2", "c2"),
    ]
    assert cost == {"table_query": 1}
    assert stores.tables.list_partitions("commands", partition + "-none:") == []


def test_tables_delete_with_stale_etag_is_rejected(stores: Stores, partition: str) -> None:
    created = stores.tables.create(TABLE, {"PartitionKey": partition, "RowKey": "r", "n": 1})
    stores.tables.upsert(TABLE, {"PartitionKey": partition, "RowKey": "r", "n": 2})
    with pytest.raises(ConcurrencyConflict):
        stores.tables.delete(TABLE, partition, "r", etag=created[ETAG])
    assert stores.tables.get(TABLE, partition, "r")["n"] == 2


def test_blobs_upload_download_info_delete(stores: Stores, partition: str) -> None:
    name = f"{partition}/job-1/1/log.txt"
    info = stores.blobs.upload("artifacts", name, b"hello", content_type="text/plain")
    assert (info.size, info.content_type) == (5, "text/plain")
    assert stores.blobs.download("artifacts", name) == b"hello"
    assert stores.blobs.info("artifacts", name).size == 5
    stores.blobs.delete("artifacts", name)
    with pytest.raises(NotFound):
        stores.blobs.download("artifacts", name)
    with pytest.raises(NotFound):
        stores.blobs.delete("artifacts", name)


@pytest.mark.integration
def test_blobs_sas_url_grants_exactly_what_it_says(azure_backend: Stores, partition: str) -> None:
    blobs = azure_backend.blobs
    name = f"{partition}/job-1/2/out.bin"
    expires = datetime.now(UTC) + timedelta(minutes=5)
    write_url = blobs.sas_url("artifacts", name, permissions="cw", expires_at=expires)
    put = requests.put(
        write_url, data=b"artifact", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10
    )
    assert put.status_code == 201, put.text
    assert blobs.download("artifacts", name) == b"artifact"
    # A write-only URL cannot read; a read URL can.
    assert requests.get(write_url, timeout=10).status_code == 403
    read_url = blobs.sas_url("artifacts", name, permissions="r", expires_at=expires)
    assert requests.get(read_url, timeout=10).content == b"artifact"
    expired = blobs.sas_url(
        "artifacts", name, permissions="r", expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert requests.get(expired, timeout=10).status_code == 403
