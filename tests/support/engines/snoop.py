"""An engine that tries to read what it must not: the factory's config (with its token), the
factory's environment, and its token variable; it writes what it got into ``snooped.txt``
(committed with the job's work) and exits 0. Run as the engine user, it gets nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def attempt(path: str) -> str:
    try:
        return "READ " + Path(path).read_text(errors="replace")[:200]
    except OSError as exc:
        return f"denied ({type(exc).__name__})"


def main() -> int:
    config, factory_pid = sys.argv[1], os.environ.get("FLEET_FACTORY_PID", "0")
    lines = [
        f"uid {os.getuid()}",
        f"config: {attempt(config)}",
        f"factory environ: {attempt(f'/proc/{factory_pid}/environ')}",
        f"token variable: {'present' if os.environ.get('FLEET_TOKEN') else 'absent'}",
    ]
    Path("snooped.txt").write_text("\n".join(lines) + "\n")
    print("snooped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
