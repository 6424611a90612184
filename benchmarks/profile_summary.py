"""Where the host's time goes, from a ``py-spy record --idle --threads -f raw`` profile of the
benchmark host (``python -m benchmarks.lifecycle --profile FILE``).

    .venv/bin/python -m benchmarks.profile_summary FILE

Each sampled stack is put in one row (what the request was doing, by the product code on the
stack: verifying the caller's token, or the rest of the handler; or the local host's own HTTP
work) and one column (what the innermost frames were: waiting on a store socket, opening a
connection, the Azure SDK's pipeline, JSON, pydantic, or anything else). Threads that wait for
work (the server's accept loop, a keep-alive connection waiting for its next request, the
parent watchdog, idle pool workers) are counted apart and left out of the percentages.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.common import table

COLUMNS = (
    "store wait",
    "connect",
    "SDK pipeline",
    "JSON",
    "validation",
    "other CPU",
)
ROWS = ("token verification", "rest of the handler", "host HTTP (parse, write)")
IDLE = "idle"

_SDK = ("cosmos/", "core/", "data/tables/", "storage/blob/", "urllib3/", "requests/", "http/client")
_WAIT_LEAVES = ("socket.py", "ssl.py", "selectors.py", "(select", "(poll", "recv", "readinto")


def parse(lines: Iterable[str]) -> Counter[str]:
    """``stack count`` lines (py-spy's raw format) -> samples by stack."""
    stacks: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def classify(stack: str) -> tuple[str, str]:
    """``(row, column)`` of one sampled stack, or ``(IDLE, reason)``."""
    frames = stack.split(";")
    leaf = frames[-1]
    if "call_user_function" not in stack:
        if "handle_one_request" in stack:
            tail = frames[frames.index(next(f for f in frames if "handle_one_request" in f)) :]
            if len(tail) <= 3 and any(w in tail[-1] for w in _WAIT_LEAVES):
                return IDLE, "keep-alive connection waiting for a request"
            return "host HTTP (parse, write)", _column(frames, leaf)
        return IDLE, "server loop, watchdog, idle workers"
    row = (
        "token verification"
        if "fleet/coordinator/tokens.py" in stack or "identity.py" in stack
        else "rest of the handler"
    )
    return row, _column(frames, leaf)


def _column(frames: Sequence[str], leaf: str) -> str:
    stack = ";".join(frames)
    if "_new_conn" in stack or "create_connection" in stack:
        return "connect"
    in_sdk = any(s in stack for s in _SDK)
    if in_sdk and any(w in leaf for w in _WAIT_LEAVES):
        return "store wait"
    if in_sdk:
        return "SDK pipeline"
    if "json/" in leaf or "json/" in ";".join(frames[-3:]):
        return "JSON"
    if "pydantic" in stack:
        return "validation"
    return "other CPU"


def summarize(stacks: Counter[str]) -> tuple[dict[tuple[str, str], int], Counter[str]]:
    """Samples by (row, column), and the idle samples by reason."""
    cells: Counter[tuple[str, str]] = Counter()
    idle: Counter[str] = Counter()
    for stack, n in stacks.items():
        row, column = classify(stack)
        if row == IDLE:
            idle[column] += n
        else:
            cells[(row, column)] += n
    return dict(cells), idle


_LAYERS = (
    ("http/client", "http.client"),
    ("ssl.py", "ssl"),
    ("socket.py", "socket"),
    ("urllib3/", "urllib3"),
    ("requests/", "requests"),
    ("core/", "azure-core policies"),
    ("cosmos/", "azure-cosmos"),
    ("data/tables/", "azure-data-tables"),
    ("storage/blob/", "azure-storage-blob"),
)


def sdk_layers(stacks: Counter[str]) -> Counter[str]:
    """Busy samples in the SDK pipeline, by the innermost SDK layer on the stack."""
    layers: Counter[str] = Counter()
    for stack, n in stacks.items():
        row, column = classify(stack)
        if row == IDLE or column != "SDK pipeline":
            continue
        frames = stack.split(";")
        for frame in reversed(frames):
            name = next((label for key, label in _LAYERS if key in frame), None)
            if name is not None:
                layers[name] += n
                break
    return layers


def render(stacks: Counter[str]) -> str:
    cells, idle = summarize(stacks)
    busy = sum(cells.values())
    if not busy:
        return "no busy samples"

    def pct(n: float) -> str:
        return f"{100 * n / busy:.1f}%"

    rows = []
    for row in ROWS:
        values = [cells.get((row, c), 0) for c in COLUMNS]
        rows.append([row, *(pct(v) for v in values), pct(sum(values))])
    totals = [sum(cells.get((r, c), 0) for r in ROWS) for c in COLUMNS]
    rows.append(["all", *(pct(v) for v in totals), pct(busy)])
    return "\n".join(
        [
            f"{busy} busy samples (request threads at work), {sum(idle.values())} idle "
            f"samples left out ({', '.join(f'{k}: {v}' for k, v in idle.most_common())})",
            table(["", *COLUMNS, "row"], rows, numbers_right=False),
            "SDK pipeline by innermost layer: "
            + ", ".join(f"{k} {pct(v)}" for k, v in sdk_layers(stacks).most_common()),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_summary",
        description="Where the benchmark host's time went, from a py-spy raw profile.",
    )
    p.add_argument("profile", type=Path, help="py-spy record --idle --threads -f raw output")
    args = p.parse_args(argv)
    with args.profile.open(encoding="utf-8") as f:
        print(render(parse(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
