"""What the stand-in agent CLIs (``claude``, ``codex``, ``aider`` here) share.

Each stand-in checks its command line the way the real CLI does (an unknown flag fails, as
the real one would), reads the prompt, makes the file edits a real agent would, and replays a
recorded stream from tests/fixtures/engines to stdout. Environment:

- ``STANDIN_FIXTURE``: the fixture to replay (a file name in tests/fixtures/engines, or a
  path); default the engine's success recording.
- ``STANDIN_EDIT``: ``path:content`` lines (``;``-separated) appended to files under the
  current directory; default (success fixtures only): a line appended to ``NOTES.md``.
  ``-`` makes no edit.
- ``STANDIN_SLEEP``: seconds to wait before each replayed line.
- ``STANDIN_HANG=1``: print the first line(s), then wait for ever (a hung engine).
- ``STANDIN_COST_STEP``: USD a runaway spends per step, for ever (see each stand-in).
- ``STANDIN_ARGV_FILE``: where to write ``{"argv", "cwd", "prompt"}`` as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "engines"
DEFAULT_EDIT = "NOTES.md:change made by the stand-in agent"


def fail(message: str, code: int) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def fixture(default: str) -> Path:
    name = os.environ.get("STANDIN_FIXTURE") or default
    path = Path(name) if os.sep in name else FIXTURES / name
    if not path.is_file():
        fail(f"stand-in: no fixture {path}", 3)
    return path


def record(argv: list[str], prompt: str) -> None:
    target = os.environ.get("STANDIN_ARGV_FILE")
    if target:
        Path(target).write_text(
            json.dumps({"argv": argv, "cwd": os.getcwd(), "prompt": prompt}), encoding="utf-8"
        )


def edit(path: Path) -> list[str]:
    """Make the configured edits; returns the paths edited."""
    spec = os.environ.get("STANDIN_EDIT")
    if spec is None:
        spec = DEFAULT_EDIT if ("success" in path.name or "session" in path.name) else "-"
    if spec.strip() == "-":
        return []
    edited = []
    for item in spec.split(";"):
        if not item.strip():
            continue
        name, _, content = item.partition(":")
        target = Path.cwd() / name.strip()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write(content + "\n")
        edited.append(name.strip())
    return edited


def sleep_step() -> None:
    delay = float(os.environ.get("STANDIN_SLEEP") or 0)
    if delay > 0:
        time.sleep(delay)


def emit(line: str) -> None:
    sleep_step()
    sys.stdout.write(line.rstrip("\n") + "\n")
    sys.stdout.flush()


def hang() -> None:
    while True:
        time.sleep(3600)


def hanging() -> bool:
    return os.environ.get("STANDIN_HANG") == "1"


def cost_step() -> float | None:
    value = os.environ.get("STANDIN_COST_STEP")
    return float(value) if value else None


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
