"""Test doubles for the run loop's seams: a clock that moves only when told, and engine
processes that exit when told. Shipped with the package so that anyone driving a ``Runner``
(tests, simulations, benchmarks) can do it without sleeping or spawning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class FakeClock:
    """Monotonic time starts at 1000 s; ``wait`` advances it (no real sleep)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.waits: list[float] = []
        self.wakes = 0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += max(0.0, seconds)

    def wake(self) -> None:
        self.wakes += 1

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@dataclass
class FakeProcess:
    """An engine that runs until the test says it exited (``exit``)."""

    command: str
    cwd: Path
    env: dict[str, str]
    log: Path
    pid: int = 4242
    code: int | None = None
    terminated: bool = False
    killed: bool = False
    exit_on_terminate: int | None = 143  # None: ignores SIGTERM (only SIGKILL stops it)

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated = True
        if self.code is None and self.exit_on_terminate is not None:
            self.code = self.exit_on_terminate

    def kill(self) -> None:
        self.killed = True
        if self.code is None:
            self.code = -9

    def exit(self, code: int = 0) -> None:
        self.code = code

    def write(self, variable: str, text: str, *, append: bool = False) -> None:
        """Write a file the factory gave the engine (``FLEET_PROGRESS_FILE``, ...)."""
        path = Path(self.env[variable])
        with path.open("a" if append else "w", encoding="utf-8") as handle:
            handle.write(text)


@dataclass
class FakeSpawner:
    """Records every process started; each starts running."""

    processes: list[FakeProcess] = field(default_factory=list)
    exit_on_terminate: int | None = 143

    def __call__(
        self, command: str, *, cwd: Path, env: Mapping[str, str], log: Path
    ) -> FakeProcess:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        proc = FakeProcess(
            command,
            cwd,
            dict(env),
            log,
            pid=4242 + len(self.processes),
            exit_on_terminate=self.exit_on_terminate,
        )
        self.processes.append(proc)
        return proc

    @property
    def last(self) -> FakeProcess:
        return self.processes[-1]


class InlineExecutor:
    """Runs each background task at once, in the caller's thread: the run loop's slow steps
    (checkout, push, uploads) finish within the tick that started them."""

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)
        return future
