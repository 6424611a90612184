"""The run loop's local state file, read by ``fleet-factory status``.

The loop rewrites it (atomically, at most about once a second) with the factory's seats,
held jobs, last heartbeat and gate counters, and once more when it stops. It holds no
secret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_state(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", "utf-8")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool | None:
    """Whether a process with this id exists (None: cannot tell on this platform)."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) would signal the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
