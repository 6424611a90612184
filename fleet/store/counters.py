"""Counts every store call by kind, so tests and benchmarks can assert what a path costs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

# Kinds of store call. Cosmos: point read, query, write (create/replace/upsert/delete),
# patch. Tables and blobs are counted separately: they are billed differently.
KINDS = (
    "read",
    "query",
    "write",
    "patch",
    "table_read",
    "table_query",
    "table_write",
    "blob_read",
    "blob_write",
    "queue_send",
)


class StoreCounters:
    """Thread-safe per-kind call counts. One instance is shared by the stores of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, kind: str, n: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown store call kind {kind!r}")
        with self._lock:
            self._counts[kind] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {kind: self._counts[kind] for kind in KINDS}

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    @contextmanager
    def measure(self) -> Iterator[dict[str, int]]:
        """Yields a dict filled, on exit, with the calls made inside the block (all threads)."""
        before = self.snapshot()
        delta: dict[str, int] = {}
        try:
            yield delta
        finally:
            after = self.snapshot()
            delta.update({k: after[k] - before[k] for k in KINDS if after[k] != before[k]})
