"""Terminal output: log lines, and a live status line when stderr is a terminal."""

from __future__ import annotations

import logging
import shutil
from typing import TextIO


class Console:
    """One status line kept at the bottom of a terminal, cleared before each log line."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._shown = False
        self._last = ""

    def status(self, text: str) -> None:
        if not self.live or text == self._last:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self._shown = True
        self._last = text

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
            self._last = ""


class ConsoleHandler(logging.StreamHandler[TextIO]):
    def __init__(self, console: Console) -> None:
        super().__init__(console.stream)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.clear()
        super().emit(record)


def setup_logging(console: Console, *, verbose: bool = False, quiet: bool = False) -> None:
    root = logging.getLogger("factory_cli")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = ConsoleHandler(console)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False
