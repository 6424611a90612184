"""Shared fixtures: the local stack (started once per session) and store backends.

Integration tests run against the real local stack: Azurite and the Cosmos emulator started
by ``fleet.devhost.stack`` on free ports. Set ``FLEET_TEST_STACK=external`` to use an
already-running stack on the ports named by FLEET_COSMOS_PORT / FLEET_BLOB_PORT /
FLEET_QUEUE_PORT / FLEET_TABLE_PORT instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.settings import Settings, local_stack_env
from fleet.store.azure import azure_stores
from fleet.store.memory import memory_stores
from fleet.store.ports import Stores

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RunningStack:
    env: dict[str, str]  # the app settings pointing at it
    api: str  # base URL of the local Functions host, e.g. http://127.0.0.1:7071/api


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Azurite + the Cosmos emulator + the local Functions host serving function_app.py."""
    if os.environ.get("FLEET_TEST_STACK") == "external":
        yield RunningStack(
            env=local_stack_env(
                cosmos_port=int(os.environ.get("FLEET_COSMOS_PORT", "8081")),
                blob_port=int(os.environ.get("FLEET_BLOB_PORT", "10000")),
                queue_port=int(os.environ.get("FLEET_QUEUE_PORT", "10001")),
                table_port=int(os.environ.get("FLEET_TABLE_PORT", "10002")),
            ),
            api=f"http://127.0.0.1:{os.environ.get('FLEET_HOST_PORT', '7071')}/api",
        )
        return
    from fleet.devhost.stack import LocalStack, StackConfig

    config = StackConfig(
        cosmos_port=free_port(),
        blob_port=free_port(),
        queue_port=free_port(),
        table_port=free_port(),
        host_port=free_port(),
        data_dir=tmp_path_factory.mktemp("azurite"),
        log_dir=tmp_path_factory.mktemp("logs"),
        with_host=True,
        repo_root=REPO,
    )
    stack = LocalStack(config)
    stack.start(timeout=120)
    try:
        yield RunningStack(env=stack.env(), api=stack.api_url)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack_env(running_stack: RunningStack) -> dict[str, str]:
    return running_stack.env


@pytest.fixture(scope="session")
def azure_settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def azure_backend(azure_settings: Settings) -> Stores:
    return azure_stores(azure_settings)


@pytest.fixture(params=["memory", pytest.param("azure", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The same contract, on the in-memory twin and on the local stack."""
    if request.param == "memory":
        return memory_stores()
    backend: Stores = request.getfixturevalue("azure_backend")
    return backend


@pytest.fixture
def partition() -> str:
    """A fresh partition (product) per test, so tests never see each other's data."""
    return f"p-{uuid.uuid4().hex[:12]}"
