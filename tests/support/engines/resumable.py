"""An engine that works in two steps across attempts, for the repository tests.

First attempt (no ``step`` in its checkpoint): writes ``part1.txt``, writes the checkpoint
``{"step": 1}`` and then waits to be killed (the test kills or pauses its factory). Any later
attempt (``step`` 1 in the checkpoint the factory gave it): checks ``part1.txt`` came back
with the branch, writes ``part2.txt`` and exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    checkpoint_file = Path(os.environ["FLEET_CHECKPOINT_FILE"])
    try:
        checkpoint = json.loads(checkpoint_file.read_text())
    except (OSError, ValueError):
        checkpoint = {}
    if checkpoint.get("step") == 1:
        if not Path("part1.txt").exists():
            print("resumed without part1.txt: the branch did not come back", flush=True)
            return 1
        Path("part2.txt").write_text(f"part 2 at epoch {os.environ['FLEET_LEASE_EPOCH']}\n")
        print("part 2 written", flush=True)
        return 0
    Path("part1.txt").write_text(f"part 1 at epoch {os.environ['FLEET_LEASE_EPOCH']}\n")
    checkpoint_file.write_text(json.dumps({"step": 1}))
    print("part 1 written; waiting", flush=True)
    while True:  # until killed
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
