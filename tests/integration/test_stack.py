"""The local stack supervisor against the real emulators (Azurite, the patched Cosmos server)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceNotFoundError,
)
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from devtools.stack import (
    REPO_ROOT,
    LocalStack,
    PortInUse,
    StackConfig,
    StackError,
    is_listening,
)
from devtools.watchdog import group_alive
from fleet.settings import EMULATOR_COSMOS_KEY, local_stack_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (REPO_ROOT / "node_modules" / ".bin").is_dir(),
        reason="needs node and `npm ci` (Azurite, @vercel/cosmosdb-server)",
    ),
]


def free_ports(count: int) -> list[int]:
    """Distinct ports that are free right now (held open together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def stack_config(
    tmp_path: Path, *, with_host: bool = False, repo_root: Path = REPO_ROOT
) -> StackConfig:
    cosmos, blob, queue, table, host = free_ports(5)
    return StackConfig(
        cosmos_port=cosmos,
        blob_port=blob,
        queue_port=queue,
        table_port=table,
        host_port=host,
        repo_root=repo_root,
        data_dir=tmp_path / "azurite",
        log_dir=tmp_path / "logs",
        with_host=with_host,
    )


def wait_until_closed(config: StackConfig, timeout: float = 5.0) -> list[int]:
    """Ports still accepting connections once `timeout` has passed (empty when all closed)."""
    deadline = time.monotonic() + timeout
    ports = list(config.ports().values())
    while True:
        busy = [p for p in ports if is_listening(config.host, p, timeout=0.2)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = stack_config(tmp_path_factory.mktemp("stack"))
    with LocalStack(config) as running:
        yield running


def test_env_points_the_app_at_the_chosen_ports(stack: LocalStack) -> None:
    config = stack.config
    digest = hashlib.sha256(stack.operator_token.encode()).hexdigest()
    assert stack.operator_token.startswith("flo_") and len(stack.operator_token) >= 40
    assert stack.env() == {
        **local_stack_env(
            cosmos_port=config.cosmos_port,
            blob_port=config.blob_port,
            queue_port=config.queue_port,
            table_port=config.table_port,
        ),
        "FLEET_OPERATOR_TOKENS": f"sha256:{digest}",
    }
    assert set(stack.log_paths) == {"azurite", "cosmos"}
    assert all(path.parent == config.logs_dir for path in stack.log_paths.values())
    assert stack.running() == {"azurite": None, "cosmos": None}


def test_azurite_serves_blobs_and_tables(stack: LocalStack) -> None:
    connection = stack.env()["AzureWebJobsStorage"]
    blobs = BlobServiceClient.from_connection_string(connection)
    container = blobs.get_container_client("stack-test")
    if not container.exists():
        container.create_container()
    container.upload_blob("hello.txt", b"hi", overwrite=True)
    assert container.download_blob("hello.txt").readall() == b"hi"

    tables = TableServiceClient.from_connection_string(connection)
    table = tables.create_table_if_not_exists("stacktest")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})
    assert table.get_entity("p", "r")["n"] == 1


def test_cosmos_emulator_bugs_are_patched(stack: LocalStack) -> None:
    client = CosmosClient(
        stack.cosmos_url, credential=EMULATOR_COSMOS_KEY, enable_endpoint_discovery=False
    )
    database = client.create_database_if_not_exists("stacktest")
    container = database.create_container_if_not_exists(
        "items", partition_key=PartitionKey("/productId")
    )
    # Unpatched, a missing document read answers 500 "Cannot read properties of undefined".
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("missing", partition_key="p1")
    container.upsert_item({"id": "b1", "productId": "p1", "spentUsd": 5, "ceilingUsd": 10})
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("b1", partition_key="another-product")

    # Unpatched, the filter predicate is lower-cased, so camelCase fields never match (412).
    patched = container.patch_item(
        "b1",
        partition_key="p1",
        patch_operations=[{"op": "incr", "path": "/spentUsd", "value": 3}],
        filter_predicate="from c where c.spentUsd + 3 <= c.ceilingUsd",
    )
    assert patched["spentUsd"] == 8
    with pytest.raises(CosmosAccessConditionFailedError):
        container.patch_item(
            "b1",
            partition_key="p1",
            patch_operations=[{"op": "incr", "path": "/spentUsd", "value": 3}],
            filter_predicate="from c where c.spentUsd + 3 <= c.ceilingUsd",
        )
    assert container.read_item("b1", partition_key="p1")["spentUsd"] == 8


def test_port_in_use_names_the_port_and_changes_nothing(tmp_path: Path) -> None:
    config = stack_config(tmp_path)
    with socket.socket() as occupant:
        occupant.bind((config.host, config.table_port))
        occupant.listen()
        stack = LocalStack(config)
        with pytest.raises(PortInUse) as caught:
            stack.start(timeout=30)
        assert caught.value.port == config.table_port
        assert caught.value.service == "azurite table"
        assert str(config.table_port) in str(caught.value)
        assert "azurite table" in str(caught.value)
        # Nothing was started, no log was written, and the occupant still owns its port.
        assert stack.running() == {}
        assert not config.logs_dir.exists()
        assert is_listening(config.host, config.table_port)
        others = [p for p in config.ports().values() if p != config.table_port]
        assert not [p for p in others if is_listening(config.host, p, timeout=0.2)]


def test_stop_leaves_nothing_listening(tmp_path: Path) -> None:
    config = stack_config(tmp_path)
    stack = LocalStack(config).start(timeout=30)
    pids = list(stack.pids.values())
    assert len(pids) == 2
    assert all(is_listening(config.host, p) for p in config.ports().values())
    stack.stop()
    assert wait_until_closed(config) == []
    assert not [pid for pid in pids if group_alive(pid)]
    stack.stop()  # idempotent


def fake_repo(tmp_path: Path, function_app: str | None = None) -> Path:
    """A repository root with the real node_modules and emulator script, and a tiny app."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    shutil.copy(REPO_ROOT / "scripts" / "cosmos-emulator.js", root / "scripts")
    (root / "host.json").write_text('{"version": "2.0"}')
    if function_app is not None:
        (root / "function_app.py").write_text(textwrap.dedent(function_app))
    return root


def test_child_exiting_early_fails_with_its_log_tail(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    (root / "scripts" / "cosmos-emulator.js").write_text(
        'console.error("emulator exploded on purpose"); process.exit(3);\n'
    )
    config = stack_config(tmp_path, repo_root=root)
    stack = LocalStack(config)
    with pytest.raises(StackError) as caught:
        stack.start(timeout=30)
    message = str(caught.value)
    assert "cosmos exited with code 3" in message
    assert "emulator exploded on purpose" in message
    # Azurite, already started, was stopped again.
    assert wait_until_closed(config) == []
    assert stack.running() == {}


def test_host_that_never_gets_healthy_fails_with_last_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_repo(
        tmp_path,
        """
        import azure.functions as func

        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

        @app.route(route="health")
        def health(req: func.HttpRequest) -> func.HttpResponse:
            print("health probed", flush=True)
            return func.HttpResponse('{"status": "degraded"}', status_code=503)
        """,
    )
    # The host child imports devtools from the real repository.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    config = stack_config(tmp_path, with_host=True, repo_root=root)
    stack = LocalStack(config)
    with pytest.raises(StackError) as caught:
        stack.start(timeout=4)
    message = str(caught.value)
    assert "host was not ready in time" in message
    assert "last answered 503" in message
    assert '{"status": "degraded"}' in message
    assert "health probed" in message  # the tail of the host's log
    assert wait_until_closed(config) == []


def test_host_gets_the_stack_settings_and_serves_the_web_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_repo(
        tmp_path,
        """
        import json
        import os

        import azure.functions as func

        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
        NAMES = ("FLEET_STORE", "COSMOS_ENDPOINT", "AzureWebJobsStorage", "FROM_FILE_ONLY")

        @app.route(route="health")
        def health(req: func.HttpRequest) -> func.HttpResponse:
            seen = {name: os.environ.get(name) for name in NAMES}
            return func.HttpResponse(json.dumps(seen), mimetype="application/json")
        """,
    )
    # The stack's settings must beat a developer's local.settings.json for the same names.
    (root / "local.settings.json").write_text(
        '{"Values": {"COSMOS_ENDPOINT": "http://elsewhere:1", "FROM_FILE_ONLY": "file"}}'
    )
    (root / "webui").mkdir()
    (root / "webui" / "index.html").write_text("<title>fleet</title>")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    config = stack_config(tmp_path, with_host=True, repo_root=root)
    with LocalStack(config) as stack:
        assert set(stack.log_paths) == {"azurite", "cosmos", "host"}
        seen = requests.get(stack.health_url, timeout=10).json()
        expected = stack.env()
        assert seen == {
            "FLEET_STORE": expected["FLEET_STORE"],
            "COSMOS_ENDPOINT": stack.cosmos_url,
            "AzureWebJobsStorage": expected["AzureWebJobsStorage"],
            "FROM_FILE_ONLY": "file",
        }
        assert requests.get(stack.webui_url, timeout=10).text == "<title>fleet</title>"
    assert wait_until_closed(config) == []


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_stack_command_killed_leaves_nothing_listening(tmp_path: Path, signal_name: str) -> None:
    """The README's command, run as a process: Ctrl-C stops it cleanly, and even a SIGKILL
    of the supervisor leaves no child behind (its watchdog stops them)."""
    import os
    import signal
    import subprocess
    import sys

    config = stack_config(tmp_path, with_host=True)
    args = [
        sys.executable, "-m", "devtools.stack",
        "--cosmos-port", str(config.cosmos_port), "--blob-port", str(config.blob_port),
        "--queue-port", str(config.queue_port), "--table-port", str(config.table_port),
        "--host-port", str(config.host_port), "--data-dir", str(tmp_path / "azurite"),
    ]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        else:
            pytest.fail("the stack never came up:\n" + "".join(output))
        health = requests.get(f"http://127.0.0.1:{config.host_port}/api/health", timeout=10)
        assert health.status_code == 200, health.text
        # The banner shows the bootstrap operator token, and the host accepts it.
        (token,) = [
            line.split(":", 1)[1].strip() for line in output if line.startswith("Operator token:")
        ]
        assert token.startswith("flo_")
        jobs = f"http://127.0.0.1:{config.host_port}/api/fleet/jobs"
        assert requests.get(jobs, timeout=10).status_code == 401
        listed = requests.get(jobs, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert listed.status_code == 200, listed.text
        process.send_signal(getattr(signal, signal_name))
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert wait_until_closed(config, timeout=15) == []
