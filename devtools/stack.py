"""One command for the whole local stack: Azurite, the Cosmos DB emulator and the local host.

    python -m devtools.stack [--cosmos-port N] [--blob-port N] [--queue-port N]
                                  [--table-port N] [--host-port N] [--no-host]

Every port is checked before anything starts (a port in use exits 2 naming the port and
the service that wanted it). Each service runs in its own process group with its output in
`.local/logs/<service>.log`; readiness is polled, not assumed. Ctrl-C or SIGTERM stops
everything (SIGTERM to each group, SIGKILL after a grace period). Orphans are prevented
three ways: `atexit`, the host child watching its parent pid, and a watchdog process that
kills the groups if this process dies without stopping them (even on SIGKILL).

A bootstrap operator token is generated at start (or taken from FLEET_OPERATOR_TOKEN), handed
to the host as FLEET_OPERATOR_TOKENS (as its hash) and printed in the banner.

From Python (tests): `with LocalStack(StackConfig(...)) as stack: ...`; the token is
`stack.operator_token`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import http.client
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from devtools.host import read_route_prefix
from devtools.watchdog import group_alive, terminate_process_groups

if TYPE_CHECKING:
    from devtools.demo import DemoRun
from fleet.settings import AZURITE_ACCOUNT, OPERATOR_TOKEN_PREFIX, local_stack_env

logger = logging.getLogger("devtools.stack")

REPO_ROOT = Path(__file__).resolve().parents[1]
_POLL = 0.1  # seconds between readiness probes
_LOG_TAIL_LINES = 40

# CLI flag -> (StackConfig field, environment fallback)
_PORT_OPTIONS: dict[str, tuple[str, str]] = {
    "--cosmos-port": ("cosmos_port", "FLEET_COSMOS_PORT"),
    "--blob-port": ("blob_port", "FLEET_BLOB_PORT"),
    "--queue-port": ("queue_port", "FLEET_QUEUE_PORT"),
    "--table-port": ("table_port", "FLEET_TABLE_PORT"),
    "--host-port": ("host_port", "FLEET_HOST_PORT"),
}


class StackError(Exception):
    """The local stack could not be started (the message says why, with log excerpts)."""


def bootstrap_operator_token(configured: str | None = None) -> str:
    """The stack's operator token: the one configured (or FLEET_OPERATOR_TOKEN), else a new
    high-entropy one. A configured token that is not an operator token is refused."""
    token = configured or os.environ.get("FLEET_OPERATOR_TOKEN") or None
    if token is None:
        return OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = token.strip()
    if not token.startswith(OPERATOR_TOKEN_PREFIX) or len(token) < len(OPERATOR_TOKEN_PREFIX) + 16:
        raise StackError(
            f"FLEET_OPERATOR_TOKEN must be an operator token: {OPERATOR_TOKEN_PREFIX} and at "
            "least 16 more characters"
        )
    return token


class PortInUse(StackError):
    def __init__(self, service: str, host: str, port: int, option: str | None = None) -> None:
        self.service = service
        self.host = host
        self.port = port
        hint = f"; free it or choose another port with {option}" if option else ""
        super().__init__(f"port {port} on {host} is already in use (wanted by {service}){hint}")


@dataclass(frozen=True)
class StackConfig:
    host: str = "127.0.0.1"
    cosmos_port: int = 8081
    blob_port: int = 10000
    queue_port: int = 10001
    table_port: int = 10002
    host_port: int = 7071
    repo_root: Path = REPO_ROOT
    data_dir: Path | None = None  # Azurite's files; default <repo>/.local/azurite
    log_dir: Path | None = None  # default <repo>/.local/logs
    with_host: bool = True
    # The bootstrap operator token; None: FLEET_OPERATOR_TOKEN from the environment, or a
    # fresh one.
    operator_token: str | None = None

    @property
    def azurite_dir(self) -> Path:
        return self.data_dir or self.repo_root / ".local" / "azurite"

    @property
    def logs_dir(self) -> Path:
        return self.log_dir or self.repo_root / ".local" / "logs"

    def ports(self) -> dict[str, int]:
        """Service -> port, for every port this configuration will listen on."""
        ports = {
            "cosmos emulator": self.cosmos_port,
            "azurite blob": self.blob_port,
            "azurite queue": self.queue_port,
            "azurite table": self.table_port,
        }
        if self.with_host:
            ports["functions host"] = self.host_port
        return ports


_SERVICE_OPTION = {
    "cosmos emulator": "--cosmos-port or FLEET_COSMOS_PORT",
    "azurite blob": "--blob-port or FLEET_BLOB_PORT",
    "azurite queue": "--queue-port or FLEET_QUEUE_PORT",
    "azurite table": "--table-port or FLEET_TABLE_PORT",
    "functions host": "--host-port or FLEET_HOST_PORT",
}


def host_command(host: str, port: int, root: Path, *extra: str) -> list[str]:
    """The command line of a local Functions host (``python -m devtools``) serving
    ``root`` on ``host:port``, stopped with this process (``--parent-pid``); ``extra``: more
    of its options (``--app``, ``--no-timers``, ``--log-level`` ...)."""
    return [
        sys.executable,
        "-m",
        "devtools",
        "--host",
        host,
        "--port",
        str(port),
        "--root",
        str(root),
        "--parent-pid",
        str(os.getpid()),
        *extra,
    ]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Node and Python servers set SO_REUSEADDR too, so only a live listener blocks them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_ports(config: StackConfig) -> None:
    """Raise PortInUse (or StackError for a port configured twice) before starting anything."""
    owners: dict[int, str] = {}
    for service, port in config.ports().items():
        if port in owners:
            raise StackError(f"port {port} is configured for both {owners[port]} and {service}")
        owners[port] = service
    for service, port in config.ports().items():
        if not port_is_free(config.host, port):
            raise PortInUse(service, config.host, port, _SERVICE_OPTION.get(service))


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _http_get(url_host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, str] | None:
    """(status, body) of GET, or None if nothing answered HTTP."""
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)


class LocalStack:
    """Starts, supervises and stops the local services. Also a context manager."""

    def __init__(
        self, config: StackConfig | None = None, *, echo: Callable[[str], None] | None = None
    ) -> None:
        self.config = config or StackConfig()
        self.operator_token = bootstrap_operator_token(self.config.operator_token)
        self._echo = echo or logger.info
        self._children: list[_Child] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # -- addresses

    @property
    def cosmos_url(self) -> str:
        return f"http://{self.config.host}:{self.config.cosmos_port}"

    @property
    def blob_url(self) -> str:
        return f"http://{self.config.host}:{self.config.blob_port}/{AZURITE_ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"http://{self.config.host}:{self.config.queue_port}/{AZURITE_ACCOUNT}"

    @property
    def table_url(self) -> str:
        return f"http://{self.config.host}:{self.config.table_port}/{AZURITE_ACCOUNT}"

    @property
    def host_url(self) -> str:
        return f"http://{self.config.host}:{self.config.host_port}"

    @property
    def webui_url(self) -> str:
        return f"{self.host_url}/"

    @property
    def api_url(self) -> str:
        prefix = read_route_prefix(self.config.repo_root)
        return f"{self.host_url}/{prefix}" if prefix else self.host_url

    @property
    def health_url(self) -> str:
        return f"{self.api_url}/health"

    @property
    def log_paths(self) -> dict[str, Path]:
        return {child.name: child.log_path for child in self._children}

    def env(self) -> dict[str, str]:
        """The app settings that point the app (or `func start`) at this stack, with the
        bootstrap operator token (as its hash: the plaintext is ``operator_token``)."""
        digest = hashlib.sha256(self.operator_token.encode("utf-8")).hexdigest()
        return {
            **local_stack_env(
                host=self.config.host,
                cosmos_port=self.config.cosmos_port,
                blob_port=self.config.blob_port,
                queue_port=self.config.queue_port,
                table_port=self.config.table_port,
            ),
            "FLEET_OPERATOR_TOKENS": f"sha256:{digest}",
        }

    # -- lifecycle

    def start(self, timeout: float = 60) -> LocalStack:
        if self._children:
            raise StackError("the local stack is already started")
        config = self.config
        node = shutil.which("node")
        azurite = config.repo_root / "node_modules" / ".bin" / "azurite"
        emulator = config.repo_root / "scripts" / "cosmos-emulator.js"
        if node is None:
            raise StackError("node is not on PATH (needed for Azurite and the Cosmos emulator)")
        if not azurite.exists() or not emulator.exists():
            raise StackError(f"{azurite} or {emulator} is missing; run `npm ci` in the repo")
        check_ports(config)
        deadline = time.monotonic() + timeout
        try:
            config.azurite_dir.mkdir(parents=True, exist_ok=True)
            config.logs_dir.mkdir(parents=True, exist_ok=True)
            self._start_watchdog()
            self._spawn(
                "azurite",
                [
                    str(azurite),
                    "--silent",
                    "--disableTelemetry",
                    "--skipApiVersionCheck",
                    "--location",
                    str(config.azurite_dir),
                    "--blobHost",
                    config.host,
                    "--blobPort",
                    str(config.blob_port),
                    "--queueHost",
                    config.host,
                    "--queuePort",
                    str(config.queue_port),
                    "--tableHost",
                    config.host,
                    "--tablePort",
                    str(config.table_port),
                ],
            )
            self._spawn(
                "cosmos",
                [
                    node,
                    str(emulator),
                    "--no-ssl",
                    "-p",
                    str(config.cosmos_port),
                    "--host",
                    config.host,
                ],
            )
            azurite_ports = (config.blob_port, config.queue_port, config.table_port)
            self._wait_ready(
                "azurite",
                deadline,
                lambda: all(is_listening(config.host, p) for p in azurite_ports),
            )
            self._wait_ready(
                "cosmos",
                deadline,
                lambda: _http_get(config.host, config.cosmos_port, "/") is not None,
            )
            if config.with_host:
                self._start_host(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_host(self, deadline: float) -> None:
        config = self.config
        env = {**os.environ, **self.env(), "PYTHONUNBUFFERED": "1"}
        self._spawn("host", host_command(config.host, config.host_port, config.repo_root), env=env)
        health_path = self.health_url.removeprefix(self.host_url)
        last: list[tuple[int, str] | None] = [None]

        def healthy() -> bool:
            last[0] = _http_get(config.host, config.host_port, health_path, timeout=10)
            return last[0] is not None and last[0][0] == 200

        def describe() -> str:
            if last[0] is None:
                return f"{self.health_url} never answered"
            return f"{self.health_url} last answered {last[0][0]}: {last[0][1][:2000]}"

        self._wait_ready("host", deadline, healthy, describe)

    def _start_watchdog(self) -> None:
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        with (self.config.logs_dir / "watchdog.log").open("ab") as log:
            # Its own log, not our stdout: it must outlive whatever reads our output.
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "devtools.watchdog"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=self.config.repo_root,
                start_new_session=True,
            )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is None or self._watchdog.stdin is None:
            return
        with contextlib.suppress(OSError):
            self._watchdog.stdin.write(f"{line}\n".encode())
            self._watchdog.stdin.flush()

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> None:
        log_path = self.config.logs_dir / f"{name}.log"
        log_file = log_path.open("wb")
        try:
            process = subprocess.Popen(
                command,
                cwd=self.config.repo_root,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own process group: stop() signals the whole group, and the terminal's
                # Ctrl-C reaches only the supervisor, which then stops children in order.
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            raise
        self._children.append(_Child(name, process, log_path, log_file))
        self._tell_watchdog(f"watch {process.pid}")
        self._echo(f"started {name} (pid {process.pid}), log: {log_path}")

    def _wait_ready(
        self,
        name: str,
        deadline: float,
        probe: Callable[[], bool],
        describe: Callable[[], str] | None = None,
    ) -> None:
        child = next(c for c in self._children if c.name == name)
        while True:
            code = child.process.poll()
            if code is not None:
                raise StackError(
                    f"{name} exited with code {code} before it was ready; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                )
            if probe():
                self._echo(f"{name} is ready")
                return
            if time.monotonic() >= deadline:
                detail = f" ({describe()})" if describe is not None else ""
                raise StackError(
                    f"{name} was not ready in time{detail}; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                )
            # Doubles as the pause between probes and as early-exit detection.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=_POLL)

    def stop(self, grace: float = 5.0) -> None:
        """Stop every service; returns once none of them is left and their ports are free."""
        children, self._children = self._children, []
        if children:

            def reap() -> None:
                for child in children:
                    child.process.poll()

            # Reverse start order: the host goes first, while its dependencies still answer.
            for child in reversed(children):
                terminate_process_groups([child.process.pid], grace=grace, reap=reap)
            for child in children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=5)
                child.log_file.close()
                if group_alive(child.process.pid):
                    logger.warning("process group %d (%s) survived", child.process.pid, child.name)
            self._wait_ports_closed()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            if watchdog.stdin is not None:
                with contextlib.suppress(OSError):
                    watchdog.stdin.write(b"exit\n")
                    watchdog.stdin.close()
            try:
                watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def _wait_ports_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        ports = list(self.config.ports().values())
        while True:
            busy = [p for p in ports if is_listening(self.config.host, p, timeout=0.2)]
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        if busy:
            logger.warning("ports still listening after stop: %s", busy)

    @property
    def pids(self) -> dict[str, int]:
        """Service -> pid, which is also its process group id."""
        return {child.name: child.process.pid for child in self._children}

    def running(self) -> dict[str, int | None]:
        """Service -> exit code (None while running)."""
        return {child.name: child.process.poll() for child in self._children}

    def wait(self, poll_interval: float = 0.5) -> str:
        """Block until a service exits on its own; returns its name."""
        while True:
            for child in self._children:
                if child.process.poll() is not None:
                    return child.name
            time.sleep(poll_interval)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"stack: {name} must be a port number, not {raw!r}") from None


def _parser() -> argparse.ArgumentParser:
    defaults = StackConfig()
    parser = argparse.ArgumentParser(
        prog="python -m devtools.stack",
        description="Run the agent-fleet local stack: Azurite, the Cosmos DB emulator and "
        "the local Functions host. Ctrl-C stops everything.",
    )
    for option, (attribute, env_name) in _PORT_OPTIONS.items():
        default = getattr(defaults, attribute)
        parser.add_argument(
            option,
            type=int,
            default=_env_port(env_name, default),
            metavar="PORT",
            help=f"(env {env_name}, default {default})",
        )
    parser.add_argument(
        "--no-host",
        action="store_true",
        help="start only the emulators (e.g. to run `func start` against them)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="once up, submit sample jobs and run two demo factories that claim and ship them",
    )
    parser.add_argument(
        "--elastic",
        action="store_true",
        help="with --demo: gpu factories autoscale from zero for the gpu job "
        "(fleet-factory autoscale; its log: LOG_DIR/autoscale.log)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Azurite data (default .local/azurite)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds to wait for readiness (default 60)"
    )
    return parser


def _banner(stack: LocalStack) -> str:
    config = stack.config
    lines = ["", "agent-fleet local stack is up:"]
    if config.with_host:
        lines += [
            f"  Web UI   {stack.webui_url}",
            f"  API      {stack.api_url}/",
            f"  Health   {stack.health_url}",
        ]
    lines += [
        f"  Cosmos   {stack.cosmos_url}  (the emulator's well-known key)",
        f"  Blob     {stack.blob_url}",
        f"  Queue    {stack.queue_url}",
        f"  Table    {stack.table_url}",
        f"Operator token: {stack.operator_token}",
        "  (send it as `Authorization: Bearer <token>`; paste it into the web UI; set",
        "  FLEET_OPERATOR_TOKEN to keep the same one across restarts)",
        "Logs:",
        *(f"  {name:<8} {path}" for name, path in stack.log_paths.items()),
    ]
    if not config.with_host:
        lines += ["App settings for this stack:"]
        lines += [f"  {name}={value}" for name, value in stack.env().items()]
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = StackConfig(with_host=not args.no_host)
    config = replace(
        config,
        **{attribute: getattr(args, attribute) for attribute, _ in _PORT_OPTIONS.values()},
        data_dir=args.data_dir,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        stack = LocalStack(config, echo=say)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 2
    try:
        stack.start(timeout=args.timeout)
    except PortInUse as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # start() has already stopped whatever it had started.
        return 130
    demo: DemoRun | None = None
    try:
        say(_banner(stack))
        if args.demo and config.with_host:
            from devtools.demo import run_demo

            say("demo: product 'demo' (send X-Fleet-Product: demo to see it in the API)")
            elastic = str(config.logs_dir / "autoscale.log") if args.elastic else None
            demo = run_demo(
                stack.api_url,
                stack.operator_token,
                say=lambda line: say(f"demo: {line}"),
                elastic=elastic,
            )
        failed = stack.wait()
        code = stack.running().get(failed)
        child_log = stack.log_paths[failed]
        print(
            f"stack: {failed} exited unexpectedly (code {code}); "
            f"last lines of {child_log}:\n{log_tail(child_log)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        _ignore_interrupts()  # a second Ctrl-C now would only print a traceback
        say("stopping...")
        return 0
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave orphans behind.
        _ignore_interrupts()
        if demo is not None:
            demo.stop()
        stack.stop()
        say("stopped")


def _ignore_interrupts() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
