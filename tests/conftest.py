"""Shared fixtures: the local stack (started once per session) and store backends.

Integration tests run against the real local stack: Azurite and the Cosmos emulator started
by ``devtools.stack`` on free ports. Set ``FLEET_TEST_STACK=external`` to use an
already-running stack on the ports named by FLEET_COSMOS_PORT / FLEET_BLOB_PORT /
FLEET_QUEUE_PORT / FLEET_TABLE_PORT instead (and its operator token in FLEET_OPERATOR_TOKEN).

The stack is started with a known operator token (``RunningStack.operator_token``);
``RunningStack.enroll`` enrolls a factory over HTTP and returns its token.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

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
    operator_token: str  # the stack's bootstrap operator token

    def operator(self, product: str) -> dict[str, str]:
        """Headers of an operator call about ``product``."""
        return {"Authorization": f"Bearer {self.operator_token}", "X-Fleet-Product": product}

    def enrollment_token(self, product: str, **body: Any) -> dict[str, Any]:
        response = requests.post(
            f"{self.api}/fleet/enrollment-tokens",
            json=body,
            headers=self.operator(product),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def enroll(
        self, product: str, name: str, capabilities: Sequence[str] = ("python",), **body: Any
    ) -> str:
        """Enroll a factory in ``product`` (an enrollment token, then the exchange); returns
        the factory's token. Four seats unless ``body`` says otherwise: the tests' claims say
        four, and a factory never holds more live leases than it registered."""
        enrollment = self.enrollment_token(product)["token"]
        response = requests.post(
            f"{self.api}/fleet/factories/enroll",
            json={"name": name, "capabilities": list(capabilities), "seats": 4, **body},
            headers=bearer(enrollment),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def submit_and_claim(
        self, product: str, factory: dict[str, str], **manifest: Any
    ) -> dict[str, Any]:
        """Submit a job (``manifest`` over a plain default) as the operator and claim it with
        the ``factory`` headers: the claim's reply (job, lease, limits)."""
        body = {"title": "build", "body": "x", "leaseSeconds": 30, **manifest}
        submitted = requests.post(
            f"{self.api}/fleet/jobs", json=body, headers=self.operator(product), timeout=30
        )
        assert submitted.status_code == 201, submitted.text
        me = {"capabilities": list(manifest.get("capabilities") or []), "seats": 4}
        claim = requests.post(f"{self.api}/fleet/claim", json=me, headers=factory, timeout=30)
        assert claim.status_code == 200, claim.text
        reply: dict[str, Any] = claim.json()
        assert reply["job"]["id"] == submitted.json()["job"]["id"]
        return reply


def bearer(token: str, product: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if product is not None:
        headers["X-Fleet-Product"] = product
    return headers


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Azurite + the Cosmos emulator + the local Functions host serving function_app.py."""
    if os.environ.get("FLEET_TEST_STACK") == "external":
        token = os.environ.get("FLEET_OPERATOR_TOKEN")
        if not token:
            pytest.fail("FLEET_TEST_STACK=external needs the stack's FLEET_OPERATOR_TOKEN")
        yield RunningStack(
            env=local_stack_env(
                cosmos_port=int(os.environ.get("FLEET_COSMOS_PORT", "8081")),
                blob_port=int(os.environ.get("FLEET_BLOB_PORT", "10000")),
                queue_port=int(os.environ.get("FLEET_QUEUE_PORT", "10001")),
                table_port=int(os.environ.get("FLEET_TABLE_PORT", "10002")),
            ),
            api=f"http://127.0.0.1:{os.environ.get('FLEET_HOST_PORT', '7071')}/api",
            operator_token=token,
        )
        return
    from devtools.stack import LocalStack, StackConfig

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
        operator_token="flo_" + secrets.token_urlsafe(32),
    )
    stack = LocalStack(config)
    stack.start(timeout=120)
    try:
        yield RunningStack(env=stack.env(), api=stack.api_url, operator_token=stack.operator_token)
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


@pytest.fixture(scope="session")
def contract_settings(stack_env: dict[str, str]) -> Settings:
    """The local stack's settings with a Cosmos container of the contract tests' own: the raw
    documents they write (a store's contract, not the app's models) stay out of the container
    the local host's timers sweep, where every pass over them would fail until poisoned."""
    return Settings.from_env({**stack_env, "COSMOS_CONTAINER": "contract"})


@pytest.fixture(scope="session")
def contract_backend(contract_settings: Settings) -> Stores:
    return azure_stores(contract_settings)


@pytest.fixture(params=["memory", pytest.param("azure", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The same contract, on the in-memory twin and on the local stack (its own container)."""
    if request.param == "memory":
        return memory_stores()
    backend: Stores = request.getfixturevalue("contract_backend")
    return backend


@pytest.fixture
def partition() -> str:
    """A fresh partition (product) per test, so tests never see each other's data."""
    return f"p-{uuid.uuid4().hex[:12]}"
