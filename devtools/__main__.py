"""`python -m devtools`: serve function_app.py locally without Azure Functions Core Tools.

Settings: `local.settings.json` Values (in --root) are loaded into the environment before
the app is imported; variables already set in the environment win. Function keys are not
enforced locally, as with `func start`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devtools.host import DevHost, DevHostError, load_app, load_local_settings

logger = logging.getLogger("devtools")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools",
        description="Serve an Azure Functions Python v2 app locally (HTTP routes and timers).",
    )
    parser.add_argument("--port", type=int, default=7071, help="port to listen on (default 7071)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--app", default="function_app:app", help="module:attribute of the FunctionApp"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="app root holding host.json and local.settings.json (default: cwd)",
    )
    parser.add_argument(
        "--webui", type=Path, default=None, help="static files served at / (default ROOT/webui)"
    )
    parser.add_argument(
        "--no-timers", action="store_true", help="do not run timer (or queue-triggered) functions"
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when this process exits (used by the local stack supervisor)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def _parent_alive(parent_pid: int, started_under_it: bool) -> bool:
    if started_under_it:
        # Once the parent dies this process is re-parented, so the ppid changes; unlike a
        # signal-0 probe this cannot be fooled by the pid being reused.
        return os.getppid() == parent_pid
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(parent_pid: int, host: DevHost, stop: threading.Event) -> None:
    started_under_it = os.getppid() == parent_pid
    while not stop.wait(1.0):
        if not _parent_alive(parent_pid, started_under_it):
            logger.warning("parent process %d is gone; shutting down", parent_pid)
            host.stop()
            return


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    root = (args.root or Path.cwd()).resolve()

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        load_local_settings(root)
        app = load_app(args.app, root)
        host = DevHost(
            app,
            root=root,
            host=args.host,
            port=args.port,
            webui=args.webui,
            run_timers=not args.no_timers,
        )
        host.bind()
    except DevHostError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"devhost: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    watcher_stop = threading.Event()
    if args.parent_pid is not None:
        threading.Thread(
            target=_watch_parent,
            args=(args.parent_pid, host, watcher_stop),
            name="devhost-parent-watch",
            daemon=True,
        ).start()
    try:
        host.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        watcher_stop.set()
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
