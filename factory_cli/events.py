"""Agent events: the JSON lines an engine appends to ``FLEET_EVENTS_FILE``, forwarded to
``POST /fleet/jobs/{id}/events`` in batches.

Each complete line becomes one event ``{seq, type, payload}``; ``seq`` is the line's number
within the attempt (from 0), so a batch sent twice — a retry after a lost reply — is stored
once. A line that is not a JSON object with a valid ``type`` is still forwarded, as type
``engine.invalid`` with the raw text, so nothing an engine says is silently lost; a payload
over the coordinator's 16 KiB limit is replaced by a preview.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from factory_cli.workdir import open_regular

MAX_BATCH = 100  # events per request (the coordinator's limit)
MAX_BATCH_BYTES = 256 * 1024  # well under the 512 KiB request limit
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_PENDING = 10_000  # read no further while this many wait (the file keeps the rest)
TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
INVALID = "engine.invalid"
PREVIEW_CHARS = 4096


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def to_event(line: str, seq: int) -> dict[str, Any]:
    """One line of the events file as the event to forward."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"seq": seq, "type": INVALID, "payload": {"line": line[:PREVIEW_CHARS]}}
    kind = data.get("type")
    if not isinstance(kind, str) or len(kind) > 64 or not TYPE.match(kind):
        return {"seq": seq, "type": INVALID, "payload": {"line": line[:PREVIEW_CHARS]}}
    payload = data.get("payload")
    if _size(payload) > MAX_PAYLOAD_BYTES:
        text = json.dumps(payload, default=str)
        payload = {"truncated": True, "bytes": len(text), "preview": text[:PREVIEW_CHARS]}
    return {"seq": seq, "type": kind, "payload": payload}


class EventsReader:
    """Reads complete new lines of the events file and keeps the events not yet sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.next_seq = 0
        self.pending: list[dict[str, Any]] = []
        self.sent_count = 0
        self.dropped = 0

    def read(self) -> int:
        """Read what the engine appended since the last read; returns how many new events.
        A line still being written (no newline yet) waits for the next read."""
        if len(self.pending) >= MAX_PENDING:
            return 0
        try:
            with open_regular(self.path) as handle:
                handle.seek(self.offset)
                data = handle.read(4 * 1024 * 1024)
        except OSError:
            return 0
        end = data.rfind(b"\n")
        if end < 0:
            return 0
        chunk = data[: end + 1]
        self.offset += len(chunk)
        added = 0
        for raw in chunk.split(b"\n")[:-1]:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            self.pending.append(to_event(line, self.next_seq))
            self.next_seq += 1
            added += 1
        return added

    def push(self, kind: str, payload: Any) -> None:
        """An event read from the engine's output by its adapter (not from the file),
        numbered in the same sequence as the file's lines. Past ``MAX_PENDING`` waiting it is
        counted in ``dropped`` instead (the engine's log keeps the whole output)."""
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        line = json.dumps({"type": kind, "payload": payload}, default=str)
        self.pending.append(to_event(line, self.next_seq))
        self.next_seq += 1

    def batch(self) -> list[dict[str, Any]]:
        """The next events to send: at most ``MAX_BATCH``, within ``MAX_BATCH_BYTES``."""
        out: list[dict[str, Any]] = []
        total = 0
        for event in self.pending[:MAX_BATCH]:
            size = _size(event) + 1
            if out and total + size > MAX_BATCH_BYTES:
                break
            out.append(event)
            total += size
        return out

    def sent(self, count: int) -> None:
        del self.pending[:count]
        self.sent_count += count
