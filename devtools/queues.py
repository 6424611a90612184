"""Queue triggers for the local host, as the Azure Functions host runs them.

A queue-triggered function (``@app.queue_trigger``) is served from the app's own function
metadata, like timers: the queue name (``%NAME%`` resolved from app settings) and the
connection setting come from the decorator. For each such function the runner polls the
Storage queue (Azurite locally) and, for each message:

- calls the function with a ``func.QueueMessage`` (id, body, dequeue count, times);
- on success deletes the message;
- on failure leaves it on the queue, invisible for ``visibilityTimeout``, so it is delivered
  again with its dequeue count one higher; once a message has failed ``maxDequeueCount``
  times it is moved to ``<queue>-poison`` (created when needed) and deleted, as the Functions
  host does.

The settings are ``extensions.queues`` of ``host.json``, with the Functions host's names and
defaults (``batchSize`` 16, ``maxDequeueCount`` 5, ``visibilityTimeout`` 00:00:00,
``maxPollingInterval`` 00:01:00, ``messageEncoding`` base64). An idle queue is polled less and
less often, doubling from 100 ms up to ``maxPollingInterval``; a poll that found messages is
followed at once. Messages are handled one at a time, per function in turn.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from azure.functions.queue import QueueMessage

logger = logging.getLogger("devtools.host")

POISON_SUFFIX = "-poison"
HOST_OVERRIDE = "AzureFunctionsJobHost__extensions__queues__"
_INT_KEYS = frozenset({"batchSize", "maxDequeueCount", "newBatchThreshold"})
FIRST_IDLE_WAIT = 0.1  # seconds before the first re-poll of an empty queue


class QueueSettingsError(ValueError):
    """``extensions.queues`` of host.json says something the host cannot honour."""


@dataclass(frozen=True)
class QueueSettings:
    """``extensions.queues`` of host.json (the Functions host's defaults)."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds a failed message stays invisible
    max_polling_interval: float = 60.0  # seconds between polls of an idle queue, at most
    base64: bool = True  # messageEncoding: base64 (the default) or none

    @classmethod
    def from_host_json(
        cls, root: Path | str, environ: Mapping[str, str] | None = None
    ) -> QueueSettings:
        """host.json's ``extensions.queues``, each value overridden by the app setting
        ``AzureFunctionsJobHost__extensions__queues__<name>`` when ``environ`` sets it, as
        the Functions host does (the Bicep template sets them per deployment)."""
        path = Path(root) / "host.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            document = {}
        extensions = document.get("extensions") if isinstance(document, dict) else None
        queues = extensions.get("queues") if isinstance(extensions, dict) else None
        if queues is not None and not isinstance(queues, dict):
            raise QueueSettingsError(f"{path}: extensions.queues must be an object")
        values: dict[str, Any] = dict(queues or {})
        for name, value in (environ or {}).items():
            if name.startswith(HOST_OVERRIDE) and value != "":
                key = name[len(HOST_OVERRIDE) :]
                values[key] = int(value) if key in _INT_KEYS and value.isdigit() else value
        return cls.from_mapping(values, what=f"{path}: extensions.queues")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, what: str = "queues") -> QueueSettings:
        defaults = cls()
        batch = _positive_int(values.get("batchSize", defaults.batch_size), f"{what}.batchSize")
        if batch > 32:
            raise QueueSettingsError(f"{what}.batchSize: at most 32 (the queue service's limit)")
        encoding = str(values.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise QueueSettingsError(f"{what}.messageEncoding: base64 or none, not {encoding!r}")
        return cls(
            batch_size=batch,
            max_dequeue_count=_positive_int(
                values.get("maxDequeueCount", defaults.max_dequeue_count),
                f"{what}.maxDequeueCount",
            ),
            visibility_timeout=_timespan(
                values.get("visibilityTimeout", "00:00:00"), f"{what}.visibilityTimeout"
            ),
            max_polling_interval=_timespan(
                values.get("maxPollingInterval", "00:01:00"), f"{what}.maxPollingInterval"
            ),
            base64=encoding == "base64",
        )


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QueueSettingsError(f"{what}: a whole number of at least 1, not {value!r}")
    return value


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def _timespan(value: Any, what: str) -> float:
    """A .NET TimeSpan (``[d.]hh:mm:ss[.fff]``, as host.json writes them) in seconds."""
    match = _TIMESPAN.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise QueueSettingsError(f"{what}: a time span like 00:00:30, not {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    span = timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int(((fraction or "") + "000000")[:6]),
    )
    return span.total_seconds()


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue_name: str
    connection: str  # the app setting holding the storage connection string
    arg_name: str
    handler: Callable[..., Any]


class Queue(Protocol):
    """The part of ``azure.storage.queue.QueueClient`` the runner uses."""

    def create_queue(self) -> Any: ...
    def receive_messages(self, *, messages_per_page: int, visibility_timeout: int) -> Any: ...
    def delete_message(self, message: Any, pop_receipt: Any = None) -> Any: ...
    def update_message(self, message: Any, pop_receipt: Any = None, **kwargs: Any) -> Any: ...
    def send_message(self, content: Any) -> Any: ...


QueueFactory = Callable[[str, str], Queue]  # (connection setting, queue name) -> a client


def storage_queues(environ: Mapping[str, str]) -> QueueFactory:
    """Queue clients from the connection strings the app settings hold (plain text: the
    runner does the Functions host's encoding itself)."""
    from azure.storage.queue import QueueClient

    def client(connection: str, queue_name: str) -> Queue:
        setting = environ.get(connection) or environ.get(f"AzureWebJobs{connection}")
        if not setting:
            raise QueueSettingsError(f"queue trigger connection {connection!r} is not set")
        queue: Queue = QueueClient.from_connection_string(setting, queue_name)
        return queue

    return client


@dataclass(frozen=True)
class Delivery:
    """One message handed to one function, as the runner saw it."""

    function: str
    message_id: str
    dequeue_count: int
    outcome: str  # "done", "retry" (left for another delivery) or "poisoned"
    error: BaseException | None = None


class QueueRunner:
    """Delivers queue messages to queue-triggered functions (see the module docstring).
    ``poll_once`` is one round over every function's queue; ``run`` is the loop."""

    # How long a received message is hidden while its function runs (the Functions host
    # renews it; one delivery here is one call, bounded by this).
    PROCESSING_SECONDS = 300

    def __init__(
        self,
        functions: Sequence[QueueFunction],
        queues: QueueFactory,
        settings: QueueSettings | None = None,
        *,
        call: Callable[[Callable[..., Any], Mapping[str, Any]], Any] | None = None,
    ) -> None:
        self.functions = tuple(functions)
        self.settings = settings or QueueSettings()
        self._queues = queues
        self._call = call or (lambda handler, kwargs: handler(**kwargs))
        self._clients: dict[str, Queue] = {}
        self._created: set[str] = set()

    def _client(self, connection: str, name: str) -> Queue:
        key = f"{connection}\n{name}"
        if key not in self._clients:
            self._clients[key] = self._queues(connection, name)
        client = self._clients[key]
        if key not in self._created:
            _create_if_missing(client)
            self._created.add(key)
        return client

    def poll_once(self) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for function in self.functions:
            queue = self._client(function.connection, function.queue_name)
            received = queue.receive_messages(
                messages_per_page=self.settings.batch_size,
                visibility_timeout=self.PROCESSING_SECONDS,
            )
            for count, message in enumerate(received):
                deliveries.append(self._deliver(function, queue, message))
                if count + 1 >= self.settings.batch_size:
                    break
        return deliveries

    def _deliver(self, function: QueueFunction, queue: Queue, message: Any) -> Delivery:
        dequeue_count = int(message.dequeue_count or 1)
        try:
            body = self._decode(message.content)
            self._call(
                function.handler,
                {
                    function.arg_name: QueueMessage(  # type: ignore[no-untyped-call]
                        id=message.id,
                        body=body,
                        dequeue_count=dequeue_count,
                        expiration_time=message.expires_on,
                        insertion_time=message.inserted_on,
                        time_next_visible=message.next_visible_on,
                        pop_receipt=message.pop_receipt,
                    )
                },
            )
        except Exception as exc:
            if dequeue_count >= self.settings.max_dequeue_count:
                poison = self._client(function.connection, function.queue_name + POISON_SUFFIX)
                poison.send_message(message.content)  # as received: the same encoding
                queue.delete_message(message)
                logger.error(
                    "queue function %s: message %s failed %d times, moved to %s%s: %s",
                    function.name,
                    message.id,
                    dequeue_count,
                    function.queue_name,
                    POISON_SUFFIX,
                    exc,
                )
                return Delivery(function.name, message.id, dequeue_count, "poisoned", exc)
            queue.update_message(message, visibility_timeout=int(self.settings.visibility_timeout))
            logger.warning(
                "queue function %s: message %s failed (delivery %d of %d): %s",
                function.name,
                message.id,
                dequeue_count,
                self.settings.max_dequeue_count,
                exc,
            )
            return Delivery(function.name, message.id, dequeue_count, "retry", exc)
        queue.delete_message(message)
        return Delivery(function.name, message.id, dequeue_count, "done")

    def _decode(self, content: Any) -> bytes:
        raw = content.encode() if isinstance(content, str) else bytes(content or b"")
        if not self.settings.base64:
            return raw
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the message is not base64 (messageEncoding is base64)") from exc

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop``: at once after a round that found messages, else after a wait
        that doubles from 100 ms up to ``maxPollingInterval``."""
        if not self.functions:
            return
        wait = FIRST_IDLE_WAIT
        while not stop.is_set():
            try:
                found = bool(self.poll_once())
            except Exception:
                logger.exception("queue runner: a poll failed")
                found = False
            if found:
                wait = FIRST_IDLE_WAIT
                continue
            stop.wait(wait)
            wait = min(wait * 2, max(FIRST_IDLE_WAIT, self.settings.max_polling_interval))


def _create_if_missing(queue: Queue) -> None:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
