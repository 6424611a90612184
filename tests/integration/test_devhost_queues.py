"""The local host's queue triggers on the real queue service (Azurite): an app's
queue-triggered function is indexed from its decorator, its queue created, each message
delivered and deleted; a message that keeps failing is delivered again with a higher dequeue
count and then moved to ``<queue>-poison`` (nothing lost); the runner's own loop serves it."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devtools.host import index_app
from devtools.queues import QueueRunner, QueueSettings, storage_queues

pytestmark = pytest.mark.integration


def send(env: dict[str, str], queue: str, body: dict[str, Any]) -> None:
    client = QueueClient.from_connection_string(env["AzureWebJobsStorage"], queue)
    client.send_message(base64.b64encode(json.dumps(body).encode()).decode())


def waiting(env: dict[str, str], queue: str) -> list[str]:
    client = QueueClient.from_connection_string(env["AzureWebJobsStorage"], queue)
    return [m.content for m in client.peek_messages(max_messages=32)]


def app_with_a_queue(done: list[dict[str, Any]], failures: dict[str, int]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="AzureWebJobsStorage")
    def work(msg: func.QueueMessage) -> None:
        body = msg.get_json()
        if failures.get(body["product"], 0) >= msg.dequeue_count:
            raise RuntimeError(f"{body['product']} is throttled")
        done.append({**body, "dequeueCount": msg.dequeue_count})

    return app


def test_devhost_queue_trigger_delivers_retries_and_poisons_on_azurite(
    stack_env: dict[str, str],
) -> None:
    queue = f"fleet-test-{uuid.uuid4().hex[:10]}"
    done: list[dict[str, Any]] = []
    failures = {"p-flaky": 1, "p-broken": 99}  # fails its first delivery / every delivery
    index = index_app(app_with_a_queue(done, failures), {**stack_env, "TEST_QUEUE": queue})
    settings = QueueSettings(max_dequeue_count=3, visibility_timeout=0)
    runner = QueueRunner(index.queues, storage_queues(stack_env), settings)
    assert runner.poll_once() == []  # creates the queue
    for product in ("p-ok", "p-flaky", "p-broken"):
        send(stack_env, queue, {"product": product})
    outcomes: list[tuple[str, int, str]] = []
    for _ in range(6):  # visibility 0: each failed message is back at the next poll
        outcomes += [(d.message_id, d.dequeue_count, d.outcome) for d in runner.poll_once()]
        if not waiting(stack_env, queue):
            break
    assert sorted((d["product"], d["dequeueCount"]) for d in done) == [("p-flaky", 2), ("p-ok", 1)]
    assert sorted(o for _, _, o in outcomes) == sorted(
        ["done", "retry", "done", "retry", "retry", "poisoned"]
    )
    assert waiting(stack_env, queue) == []
    poisoned = waiting(stack_env, queue + "-poison")
    assert [json.loads(base64.b64decode(c)) for c in poisoned] == [{"product": "p-broken"}]


def test_devhost_queue_runner_loop_serves_messages_until_stopped(
    stack_env: dict[str, str],
) -> None:
    queue = f"fleet-test-{uuid.uuid4().hex[:10]}"
    done: list[dict[str, Any]] = []
    arrived = threading.Event()
    app = app_with_a_queue(done, {})
    index = index_app(app, {**stack_env, "TEST_QUEUE": queue})
    original = index.queues[0].handler

    def handler(msg: func.QueueMessage) -> None:
        original(msg=msg)
        arrived.set()

    runner = QueueRunner(
        [dataclasses.replace(index.queues[0], handler=handler)],
        storage_queues(stack_env),
        QueueSettings(max_polling_interval=0.5),
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        send(stack_env, queue, {"product": "p-loop"})
        assert arrived.wait(timeout=30), "the runner never delivered the message"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive() and done == [{"product": "p-loop", "dequeueCount": 1}]
