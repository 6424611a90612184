"""Store faults surface as the project's own errors, with the retry-after the store gave."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from fleet.errors import StoreUnavailable
from fleet.settings import Settings
from fleet.store.azure import CosmosDocumentStore, cosmos_client
from fleet.store.counters import StoreCounters
from fleet.store.memory import MemoryDocumentStore
from fleet.store.ports import DocumentStore
from tests.support.faultproxy import FaultProxy


@pytest.fixture
def cosmos_proxy(contract_settings: Settings, contract_backend: object) -> Iterator[FaultProxy]:
    assert contract_settings.cosmos is not None
    proxy = FaultProxy(contract_settings.cosmos.endpoint)
    yield proxy
    proxy.close()


def _proxied_store(settings: Settings, proxy: FaultProxy) -> CosmosDocumentStore:
    assert settings.cosmos is not None
    cosmos = replace(
        settings.cosmos, endpoint=proxy.url, throttle_retry_attempts=1, throttle_max_wait_s=1
    )
    client = cosmos_client(cosmos)
    container = client.get_database_client(cosmos.database).get_container_client(cosmos.container)
    return CosmosDocumentStore(container, StoreCounters())


def _docs_path(method: str, path: str) -> bool:
    return "/docs" in path


@pytest.mark.integration
@pytest.mark.parametrize("status", [429, 503])
def test_store_faults_cosmos_throttle_surfaces_as_store_unavailable_with_retry_after(
    contract_settings: Settings, cosmos_proxy: FaultProxy, partition: str, status: int
) -> None:
    store = _proxied_store(contract_settings, cosmos_proxy)
    store.create({"id": "a", "productId": partition, "n": 1})
    # Enough faults to outlast the SDK's own retries: the adapter must see the last one.
    rule = cosmos_proxy.inject(
        status, headers={"x-ms-retry-after-ms": "250"}, times=10, match=_docs_path
    )
    with pytest.raises(StoreUnavailable) as caught:
        store.read(partition, "a")
    assert caught.value.retry_after == pytest.approx(0.25)
    assert rule.hits >= 1
    rule.remaining = 0
    assert store.read(partition, "a")["n"] == 1


@pytest.mark.integration
def test_store_faults_cosmos_one_throttle_is_retried_by_the_sdk(
    contract_settings: Settings, cosmos_proxy: FaultProxy, partition: str
) -> None:
    store = _proxied_store(contract_settings, cosmos_proxy)
    store.create({"id": "a", "productId": partition, "n": 1})
    rule = cosmos_proxy.inject(429, headers={"x-ms-retry-after-ms": "10"}, match=_docs_path)
    assert store.read(partition, "a")["n"] == 1
    assert rule.hits == 1


def test_store_faults_twin_injected_throttle_surfaces_with_retry_after() -> None:
    store: DocumentStore = MemoryDocumentStore()
    store.create({"id": "a", "productId": "p"})
    assert isinstance(store, MemoryDocumentStore)
    store.inject("read", StoreUnavailable("throttled", retry_after=0.25))
    with pytest.raises(StoreUnavailable) as caught:
        store.read("p", "a")
    assert caught.value.retry_after == 0.25
    assert store.read("p", "a")["id"] == "a"
