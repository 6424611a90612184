"""The local host's queue triggers (``devtools.queues``): host.json settings, and delivery,
retry and poison rules on an in-memory queue (the real queue service: the integration test
``tests/integration/test_devhost_queues.py``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devtools.host import index_app
from devtools.queues import (
    QueueFunction,
    QueueRunner,
    QueueSettings,
    QueueSettingsError,
)


@dataclass
class Message:
    id: str
    content: str
    dequeue_count: int = 0
    visible_at: float = 0.0
    pop_receipt: str | None = None
    expires_on: Any = None
    inserted_on: Any = None
    next_visible_on: Any = None


@dataclass
class FakeQueue:
    """A queue with the service's delivery rules, on a clock the test moves."""

    now: list[float]
    messages: list[Message] = field(default_factory=list)
    sent: int = 0

    def create_queue(self) -> None:
        pass

    def send_message(self, content: str) -> None:
        self.sent += 1
        self.messages.append(Message(id=f"m{self.sent}", content=content))

    def receive_messages(
        self, *, messages_per_page: int, visibility_timeout: int
    ) -> Iterator[Message]:
        for message in [m for m in self.messages if m.visible_at <= self.now[0]][
            :messages_per_page
        ]:
            message.dequeue_count += 1
            message.visible_at = self.now[0] + visibility_timeout
            message.pop_receipt = f"r{message.dequeue_count}"
            yield message

    def delete_message(self, message: Message, pop_receipt: Any = None) -> None:
        self.messages.remove(message)

    def update_message(self, message: Message, pop_receipt: Any = None, **kwargs: Any) -> None:
        message.visible_at = self.now[0] + kwargs.get("visibility_timeout", 0)


def encoded(body: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


@pytest.fixture
def queues(clock: list[float]) -> dict[str, FakeQueue]:
    return {}


def runner_for(
    handler: Any, queues: dict[str, FakeQueue], clock: list[float], **settings: Any
) -> QueueRunner:
    function = QueueFunction("work", "work-items", "AzureWebJobsStorage", "msg", handler)
    return QueueRunner(
        [function],
        lambda _connection, name: queues.setdefault(name, FakeQueue(clock)),
        QueueSettings(**settings),
    )


def test_queue_runner_delivers_each_message_and_deletes_it_on_success(
    queues: dict[str, FakeQueue], clock: list[float]
) -> None:
    seen: list[tuple[str, dict[str, Any], int]] = []

    def handler(msg: func.QueueMessage) -> None:
        seen.append((msg.id, msg.get_json(), msg.dequeue_count))

    runner = runner_for(handler, queues, clock)
    runner.poll_once()  # creates the queue
    for n in range(3):
        queues["work-items"].send_message(encoded({"n": n}))
    deliveries = runner.poll_once()
    assert [d.outcome for d in deliveries] == ["done"] * 3
    assert seen == [(f"m{n + 1}", {"n": n}, 1) for n in range(3)]
    assert queues["work-items"].messages == [] and runner.poll_once() == []


def test_queue_runner_retries_after_the_visibility_timeout_then_poisons(
    queues: dict[str, FakeQueue], clock: list[float]
) -> None:
    calls: list[int] = []

    def handler(msg: func.QueueMessage) -> None:
        calls.append(msg.dequeue_count)
        raise RuntimeError("store unavailable")

    runner = runner_for(handler, queues, clock, max_dequeue_count=3, visibility_timeout=30)
    runner.poll_once()
    queues["work-items"].send_message(encoded({"product": "p1"}))
    outcomes = []
    for _ in range(3):
        outcomes += [d.outcome for d in runner.poll_once()]
        assert runner.poll_once() == []  # invisible for 30 s after each failure
        clock[0] += 30
    assert outcomes == ["retry", "retry", "poisoned"] and calls == [1, 2, 3]
    assert queues["work-items"].messages == []  # moved, not lost:
    poison = queues["work-items-poison"].messages
    assert [m.content for m in poison] == [encoded({"product": "p1"})]  # as it was sent


def test_queue_runner_a_message_that_succeeds_on_a_retry_is_done_once(
    queues: dict[str, FakeQueue], clock: list[float]
) -> None:
    done: list[str] = []

    def handler(msg: func.QueueMessage) -> None:
        if msg.dequeue_count == 1:
            raise RuntimeError("throttled")
        done.append(msg.get_body().decode())

    runner = runner_for(handler, queues, clock)  # visibility 0: visible again at once
    runner.poll_once()
    queues["work-items"].send_message(base64.b64encode(b"p7").decode())
    assert [d.outcome for d in runner.poll_once()] == ["retry"]
    assert [d.outcome for d in runner.poll_once()] == ["done"]
    assert done == ["p7"] and "work-items-poison" not in queues


def test_queue_runner_a_message_not_in_base64_fails_like_any_error(
    queues: dict[str, FakeQueue], clock: list[float]
) -> None:
    runner = runner_for(lambda msg: None, queues, clock, max_dequeue_count=1)
    runner.poll_once()
    queues["work-items"].send_message("not base64 !")
    [delivery] = runner.poll_once()
    assert delivery.outcome == "poisoned" and "base64" in str(delivery.error)
    plain = runner_for(lambda msg: None, queues, clock, base64=False)
    queues["work-items"].send_message("plain text")
    assert [d.outcome for d in plain.poll_once()] == ["done"]


def test_queue_settings_from_host_json(tmp_path: Path) -> None:
    assert QueueSettings.from_host_json(tmp_path) == QueueSettings()  # no host.json
    (tmp_path / "host.json").write_text(
        json.dumps(
            {
                "extensions": {
                    "queues": {
                        "batchSize": 8,
                        "maxDequeueCount": 3,
                        "visibilityTimeout": "00:00:30",
                        "maxPollingInterval": "00:00:02.500",
                        "messageEncoding": "none",
                    }
                }
            }
        )
    )
    assert QueueSettings.from_host_json(tmp_path) == QueueSettings(
        batch_size=8,
        max_dequeue_count=3,
        visibility_timeout=30.0,
        max_polling_interval=2.5,
        base64=False,
    )


@pytest.mark.parametrize(
    ("values", "field_name"),
    [
        ({"batchSize": 0}, "batchSize"),
        ({"batchSize": 33}, "batchSize"),
        ({"maxDequeueCount": "5"}, "maxDequeueCount"),
        ({"visibilityTimeout": "30s"}, "visibilityTimeout"),
        ({"maxPollingInterval": 2}, "maxPollingInterval"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
    ],
)
def test_queue_settings_refuse_what_the_host_would_not_run(
    values: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(QueueSettingsError, match=field_name):
        QueueSettings.from_mapping(values)


def test_queue_settings_of_the_project_host_json() -> None:
    settings = QueueSettings.from_host_json(Path(__file__).resolve().parents[2])
    assert settings.max_dequeue_count >= 1 and settings.batch_size <= 32


def test_queue_functions_are_indexed_with_their_queue_names_resolved() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="Storage")
    def work(msg: func.QueueMessage) -> None:
        pass

    index = index_app(app, {"WORK_QUEUE": "fleet-work"})
    [queue] = index.queues
    assert (queue.name, queue.queue_name, queue.connection, queue.arg_name) == (
        "work",
        "fleet-work",
        "Storage",
        "msg",
    )
    assert index.unsupported == ()


def test_queue_settings_app_settings_override_host_json_as_the_host_does(tmp_path: Path) -> None:
    """``AzureFunctionsJobHost__extensions__queues__*`` (what the Bicep template sets per
    deployment) wins over host.json; an empty value leaves host.json's."""
    (tmp_path / "host.json").write_text(
        json.dumps({"extensions": {"queues": {"batchSize": 16, "maxDequeueCount": 5}}})
    )
    prefix = "AzureFunctionsJobHost__extensions__queues__"
    settings = QueueSettings.from_host_json(
        tmp_path,
        {
            f"{prefix}batchSize": "4",
            f"{prefix}maxDequeueCount": "",
            f"{prefix}visibilityTimeout": "00:00:30",
        },
    )
    assert (settings.batch_size, settings.max_dequeue_count) == (4, 5)
    assert settings.visibility_timeout == 30.0
    with pytest.raises(QueueSettingsError, match="batchSize"):
        QueueSettings.from_host_json(tmp_path, {f"{prefix}batchSize": "64"})
