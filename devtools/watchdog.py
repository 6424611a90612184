"""Kills the local stack's process groups if the supervisor dies without stopping them.

`atexit` and signal handlers cover a supervisor that exits or is interrupted, but not one
that is SIGKILLed or crashes hard; then the emulators would keep their ports. The
supervisor starts this process with a pipe on stdin and writes `watch <pgid>` for each
child group it starts, and `exit` once it has stopped them itself. End of input without
`exit` means the supervisor is gone: every watched group is terminated.

Run as `python -m devtools.watchdog` (only by `devtools.stack`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """True while any process is left in the group (an unreaped zombie counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_process_groups(
    pgids: Iterable[int],
    *,
    grace: float = 5.0,
    reap: Callable[[], None] | None = None,
    poll_interval: float = 0.05,
) -> list[int]:
    """SIGTERM each group, SIGKILL whatever is left after `grace` seconds.

    `reap` is called while waiting so that a parent can collect its own exited children
    (a zombie still counts as a member of its group). Returns the groups that had to be
    killed.
    """
    pending = set(pgids)
    for pgid in pending:
        _signal_group(pgid, signal.SIGTERM)

    def wait(until: float) -> None:
        nonlocal pending
        while True:
            if reap is not None:
                reap()
            pending = {pgid for pgid in pending if group_alive(pgid)}
            if not pending or time.monotonic() >= until:
                return
            time.sleep(poll_interval)

    wait(time.monotonic() + grace)
    killed = sorted(pending)
    for pgid in killed:
        _signal_group(pgid, signal.SIGKILL)
    wait(time.monotonic() + 5.0)
    return killed


def main() -> int:
    # The supervisor's Ctrl-C must not reach us: we are the fallback for when it is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "watch":
            groups.add(int(argument))
        elif command == "forget":
            groups.discard(int(argument))
        elif command == "exit":
            return 0
    if groups:
        # Stop them first, say so after: whoever reads our output may be gone too, and a
        # write to a closed pipe must not cost the cleanup.
        terminate_process_groups(groups)
        with contextlib.suppress(OSError):
            print(
                f"watchdog: supervisor gone, stopped process groups {sorted(groups)}",
                file=sys.stderr,
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
