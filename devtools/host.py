"""A local host for an Azure Functions Python v2 app, for machines without Core Tools.

`func start` cannot be installed everywhere (its installer downloads a native binary), so
this module serves a `func.FunctionApp` from the app's own function metadata
(`app.get_functions()`): HTTP routes, methods and timer schedules come from the same
decorators the Functions runtime indexes, so nothing here needs to be kept in step with
`function_app.py` by hand. Where `func` is installed, `func start` serves the same app.

Behaviour that mirrors Core Tools:

- `local.settings.json` `Values` are copied into the process environment before the app
  module is imported. A variable that is already set in the environment wins over the
  file, so `FOO=x python -m devtools` overrides a `FOO` in the file.
- `extensions.http.routePrefix` from `host.json` is honoured (default `api`; an empty
  prefix serves routes at the root).
- Auth levels are read but not enforced: locally, function and admin keys are not
  required, exactly as with `func start`.
- Route templates are matched as the Functions host matches them, for the part of ASP.NET
  route syntax the apps here use: literal segments and whole-segment `{name}` parameters.
  Matching is case-insensitive; where several routes match a path, the one with a literal
  at the first position where they differ wins, and registration order decides among equals.
- Timer schedules are 6-field NCRONTAB (seconds first) evaluated in UTC, the Azure default
  without `WEBSITE_TIME_ZONE`; `%NAME%` is resolved from app settings.

Deliberate local-only behaviour: static files of the web UI are served at `/` (routes under
the prefix take precedence) with the response headers Azure Static Web Apps would add, read
from the `globalHeaders` of `<webui>/staticwebapp.config.json` (one source for both: the
Content-Security-Policy the deployed page gets is the one the local page and its browser tests
run under); API replies carry only the headers the function set, as on Azure (the Functions
host adds no `X-Content-Type-Options` either). Timer functions run one at a time on one
scheduler thread; queue-triggered functions on one thread of their own (`devtools.queues`:
visibility timeout, dequeue count and poison queue as the Functions host has them). Any
other route syntax (constraints, optional, default or catch-all parameters, `{a}.{b}`)
is refused with a RouteError when the app is indexed, rather than matched differently from
Azure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import mimetypes
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.queue import QueueTrigger
from azure.functions.decorators.timer import TimerTrigger
from azure.functions.timer import TimerRequest
from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

from devtools.queues import QueueFunction, QueueRunner, QueueSettings, storage_queues

logger = logging.getLogger("devtools")

DEFAULT_ROUTE_PREFIX = "api"
ALL_METHODS: frozenset[str] = frozenset(m.value for m in func.HttpMethod)
# A timer that fires later than this after its due time is reported as past due (Azure
# sets IsPastDue when the host was down or busy at the scheduled moment).
DEFAULT_PAST_DUE_AFTER = timedelta(seconds=5)


class DevHostError(Exception):
    """The app or its settings cannot be served; the message says what to fix."""


class ScheduleError(DevHostError):
    """A timer schedule is missing, unresolved or not a valid NCRONTAB expression."""


class RouteError(DevHostError):
    """A route template is malformed or uses route syntax the local host does not serve."""


# --------------------------------------------------------------------------- settings


def load_local_settings(
    root: Path | str, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Copy `Values` from `<root>/local.settings.json` into the environment, like Core Tools.

    A variable already present in the environment is left as it is (the environment wins
    over the file). A missing file is not an error. Returns the settings that were applied.
    """
    env = os.environ if environ is None else environ
    path = Path(root) / "local.settings.json"
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DevHostError(f"{path}: not valid JSON ({exc})") from exc
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise DevHostError(f"{path}: 'Values' must be an object of app settings")
    applied: dict[str, str] = {}
    for name, value in values.items():
        if name in env or value is None:
            continue
        # Core Tools accepts JSON numbers and booleans here and passes them on as text.
        text = (
            json.dumps(value)
            if isinstance(value, bool)
            else value
            if isinstance(value, str)
            else str(value)
        )
        env[name] = text
        applied[name] = text
    return applied


def read_route_prefix(root: Path | str) -> str:
    """`extensions.http.routePrefix` from `<root>/host.json`, without surrounding slashes."""
    path = Path(root) / "host.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return DEFAULT_ROUTE_PREFIX
    except json.JSONDecodeError as exc:
        raise DevHostError(f"{path}: not valid JSON ({exc})") from exc
    prefix: Any = DEFAULT_ROUTE_PREFIX
    extensions = document.get("extensions") if isinstance(document, dict) else None
    http = extensions.get("http") if isinstance(extensions, dict) else None
    if isinstance(http, dict):
        prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise DevHostError(f"{path}: extensions.http.routePrefix must be a string")
    return prefix.strip("/")


_SETTING_REF = re.compile(r"%([^%\s]+)%")


def resolve_setting_refs(value: str, environ: Mapping[str, str], *, what: str) -> str:
    """Replace each `%NAME%` with the app setting NAME, as the Functions host does."""
    missing = [name for name in _SETTING_REF.findall(value) if not environ.get(name)]
    if missing:
        raise ScheduleError(
            f"{what} refers to app setting {missing[0]!r}, which is not set; add it to "
            "local.settings.json Values or to the environment"
        )
    return _SETTING_REF.sub(lambda m: environ[m.group(1)], value)


def validate_ncrontab(expr: str, *, what: str) -> str:
    """Check a 6-field NCRONTAB expression (seconds first); returns it normalised."""
    fields = expr.split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{what}: {expr!r} is not a 6-field NCRONTAB expression "
            "(second minute hour day month day-of-week)"
        )
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised, second_at_beginning=True):
        raise ScheduleError(f"{what}: {expr!r} is not a valid NCRONTAB expression")
    return normalised


# The web UI's Azure Static Web Apps configuration: its `globalHeaders` go on every static reply.
WEBUI_CONFIG = "staticwebapp.config.json"


def load_global_headers(webui: Path | str) -> tuple[tuple[str, str], ...]:
    """`globalHeaders` of `<webui>/staticwebapp.config.json`, in file order; none without it.

    Static Web Apps adds these headers to every response of the site, so the local host adds
    them to every reply it serves from the web UI's folder (files, 404s and 405s alike).
    """
    path = Path(webui) / WEBUI_CONFIG
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return ()
    except json.JSONDecodeError as exc:
        raise DevHostError(f"{path}: not valid JSON ({exc})") from exc
    headers = document.get("globalHeaders", {}) if isinstance(document, dict) else None
    if not isinstance(headers, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
    ):
        raise DevHostError(f"{path}: 'globalHeaders' must be an object of header name to text")
    return tuple(headers.items())


# --------------------------------------------------------------------------- routes

# A whole-segment parameter; its name is the key the handler reads in `req.route_params`.
_PARAMETER = re.compile(r"\{([A-Za-z_]\w*)\}")
# Braces in a segment that is not a plain `{name}` mean syntax this host does not serve
# (constraints, optional, default and catch-all parameters, `{a}.{b}`, escaped braces);
# ASP.NET refuses `?` in a literal.
_NOT_LITERAL = frozenset("{}?")
_SUPPORTED = "literal segments and whole-segment {name} parameters"


@dataclass(frozen=True)
class _Segment:
    text: str  # a literal, lower-cased for matching, or the parameter's name
    parameter: bool


@dataclass(frozen=True)
class CompiledRoute:
    template: str
    segments: tuple[_Segment, ...]

    @property
    def precedence(self) -> tuple[int, ...]:
        """Sort key, lower first: segment by segment, a literal (0) before a parameter (1).

        Only routes with as many segments as the path can match it, so comparing keys of
        different lengths never decides anything.
        """
        return tuple(int(segment.parameter) for segment in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for `path` (relative to the prefix, no leading slash), or None.

        Literals compare case-insensitively; parameter values keep their case and are
        percent-decoded.
        """
        trimmed = path.strip("/")
        parts = trimmed.split("/") if trimmed else []
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if not segment.parameter:
                if part.lower() != segment.text:
                    return None
            elif not part:
                return None
            else:
                values[segment.text] = unquote(part)
        return values


def compile_route(template: str) -> CompiledRoute:
    """Compile a route template made of literal segments and whole-segment `{name}` parameters.

    Any other route syntax raises RouteError naming the template: served here with other
    semantics than Azure's, such a route would mis-match silently.
    """
    trimmed = template.strip("/")
    segments: list[_Segment] = []
    seen: set[str] = set()
    for text in trimmed.split("/") if trimmed else []:
        parameter = _PARAMETER.fullmatch(text)
        if parameter is not None:
            name = parameter.group(1)
            if name.lower() in seen:
                raise RouteError(f"route {template!r}: parameter {name!r} repeats")
            seen.add(name.lower())
            segments.append(_Segment(name, parameter=True))
        elif text and _NOT_LITERAL.isdisjoint(text):
            segments.append(_Segment(text.lower(), parameter=False))
        else:
            shown = f"segment {text!r}" if text else "an empty segment"
            raise RouteError(
                f"route {template!r}: {shown} is not supported; the local host serves "
                f"{_SUPPORTED} only"
            )
    return CompiledRoute(template, tuple(segments))


# --------------------------------------------------------------------------- app index


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: CompiledRoute
    methods: frozenset[str]
    auth_level: str
    arg_name: str
    handler: Callable[..., Any]

    def allows(self, method: str) -> bool:
        return method.upper() in self.methods


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str
    arg_name: str
    handler: Callable[..., Any]
    run_on_startup: bool = False


@dataclass(frozen=True)
class AppIndex:
    http: tuple[HttpFunction, ...]
    timers: tuple[TimerFunction, ...]
    unsupported: tuple[str, ...] = ()
    queues: tuple[QueueFunction, ...] = ()


def _enum_text(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def index_app(app: func.FunctionRegister, environ: Mapping[str, str] | None = None) -> AppIndex:
    """Read the app's function metadata; raises ScheduleError/RouteError on bad metadata."""
    env = os.environ if environ is None else environ
    http: list[HttpFunction] = []
    timers: list[TimerFunction] = []
    queues: list[QueueFunction] = []
    unsupported: list[str] = []
    for function in app.get_functions():
        name = function.get_function_name() or function.get_user_function().__name__
        trigger = function.get_trigger()
        handler = function.get_user_function()
        if isinstance(trigger, HttpTrigger):
            methods = (
                frozenset(_enum_text(m).upper() for m in trigger.methods)
                if trigger.methods
                else ALL_METHODS
            )
            auth = trigger.auth_level if trigger.auth_level is not None else app.auth_level
            template = trigger.route if trigger.route is not None else name
            try:
                route = compile_route(template)
            except RouteError as exc:
                raise RouteError(f"HTTP function {name!r}: {exc}") from exc
            http.append(
                HttpFunction(
                    name=name,
                    route=route,
                    methods=methods,
                    auth_level=_enum_text(auth),
                    arg_name=trigger.name,
                    handler=handler,
                )
            )
        elif isinstance(trigger, TimerTrigger):
            what = f"timer function {name!r} schedule"
            resolved = resolve_setting_refs(str(trigger.schedule or ""), env, what=what)
            timers.append(
                TimerFunction(
                    name=name,
                    schedule=validate_ncrontab(resolved, what=what),
                    arg_name=trigger.name,
                    handler=handler,
                    run_on_startup=bool(trigger.run_on_startup),
                )
            )
        elif isinstance(trigger, QueueTrigger):
            what = f"queue function {name!r} queue name"
            queue_name = resolve_setting_refs(str(trigger.queue_name or ""), env, what=what)
            queues.append(
                QueueFunction(
                    name=name,
                    queue_name=queue_name,
                    connection=str(trigger.connection or "AzureWebJobsStorage"),
                    arg_name=trigger.name,
                    handler=handler,
                )
            )
        else:
            kind = trigger.get_binding_name() if trigger is not None else "no trigger"
            unsupported.append(f"{name} ({kind})")
    # Stable sort: among routes of equal precedence, registration order decides.
    http.sort(key=lambda f: f.route.precedence)
    return AppIndex(tuple(http), tuple(timers), tuple(unsupported), tuple(queues))


def call_user_function(handler: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a function handler, running it to completion if it is `async def`."""
    result = handler(**kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def load_app(spec: str, root: Path | str) -> func.FunctionRegister:
    """Import `module:attribute` from `root` (settings must already be in the environment)."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    root_text = str(Path(root).resolve())
    if root_text not in sys.path:
        sys.path.insert(0, root_text)
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionRegister):
        raise DevHostError(f"{spec}: {attribute!r} is not an azure.functions FunctionApp")
    return app


# --------------------------------------------------------------------------- timers


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TimerFiring:
    """One invocation of a timer function, as seen by the runner."""

    name: str
    due: datetime
    fired_at: datetime
    past_due: bool
    error: BaseException | None = None


@dataclass
class _TimerState:
    function: TimerFunction
    next_due: datetime
    last: datetime | None = None


class TimerRunner:
    """Fires timer functions when due. The clock is passed in, so tests drive it directly.

    `arm(now)` computes each function's first due time (and runs the `run_on_startup`
    ones); `tick(now)` fires whatever is due at `now`. A function that is overdue fires
    once, with `past_due` set when it is later than `past_due_after`, and is then
    rescheduled from `now`, as Azure does after downtime (missed occurrences are not
    replayed). `run(stop)` is the real scheduler loop.
    """

    def __init__(
        self,
        timers: Sequence[TimerFunction],
        *,
        past_due_after: timedelta = DEFAULT_PAST_DUE_AFTER,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._timers = tuple(timers)
        self._past_due_after = past_due_after
        self._clock = clock
        self._states: dict[str, _TimerState] = {}
        self._lock = threading.Lock()

    @property
    def timers(self) -> tuple[TimerFunction, ...]:
        return self._timers

    @staticmethod
    def next_occurrence(schedule: str, after: datetime) -> datetime:
        nxt: datetime = croniter(schedule, after, second_at_beginning=True).get_next(datetime)
        return nxt

    def arm(self, now: datetime) -> list[TimerFiring]:
        _require_aware(now)
        with self._lock:
            self._states = {
                t.name: _TimerState(t, self.next_occurrence(t.schedule, now)) for t in self._timers
            }
            startup = [self._states[t.name] for t in self._timers if t.run_on_startup]
        return [self._fire(state, due=now, now=now) for state in startup]

    def tick(self, now: datetime) -> list[TimerFiring]:
        _require_aware(now)
        if not self._states:
            self.arm(now)
        with self._lock:
            due = [s for s in self._states.values() if s.next_due <= now]
        firings = []
        for state in due:
            scheduled = state.next_due
            state.next_due = self.next_occurrence(state.function.schedule, now)
            firings.append(self._fire(state, due=scheduled, now=now))
        return firings

    def next_due(self) -> datetime | None:
        with self._lock:
            return min((s.next_due for s in self._states.values()), default=None)

    def schedule(self) -> dict[str, datetime]:
        with self._lock:
            return {name: s.next_due for name, s in self._states.items()}

    def _fire(self, state: _TimerState, *, due: datetime, now: datetime) -> TimerFiring:
        function = state.function
        past_due = now - due > self._past_due_after
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": state.last.isoformat() if state.last else None,
                "Next": state.next_due.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        state.last = now
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            call_user_function(function.handler, {function.arg_name: request})
        except Exception as exc:
            # A failing timer must not stop the scheduler; the next occurrence still runs.
            error = exc
            logger.exception("timer %s failed", function.name)
        else:
            logger.info(
                "timer %s ran in %.0f ms%s",
                function.name,
                (time.perf_counter() - started) * 1000,
                " (past due)" if past_due else "",
            )
        return TimerFiring(function.name, due, now, past_due, error)

    def run(self, stop: threading.Event) -> None:
        """Scheduler loop: fire what is due, then wait until the next due time or `stop`."""
        if not self._timers:
            return
        self.arm(self._clock())
        while not stop.is_set():
            try:
                self.tick(self._clock())
            except Exception:
                logger.exception("timer scheduler error")
            nxt = self.next_due()
            if nxt is None:
                return
            # Capped so that a wall-clock jump is noticed within a minute.
            wait = min(max(0.0, (nxt - self._clock()).total_seconds()), 60.0)
            stop.wait(wait)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError("timer times must be timezone-aware (UTC)")


# --------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def json_reply(status: int, payload: Mapping[str, Any], **headers: str) -> Reply:
    body = json.dumps(payload).encode()
    return Reply(
        status,
        [("Content-Type", "application/json"), *headers.items()],
        body,
    )


def _method_not_allowed(method: str, path: str, allowed: Iterable[str]) -> Reply:
    message = f"{method} is not allowed on {path}"
    return json_reply(
        405, {"error": "method_not_allowed", "message": message}, Allow=", ".join(allowed)
    )


def _not_found(path: str) -> Reply:
    return json_reply(404, {"error": "not_found", "message": f"no route for {path}"})


# Hop-by-hop and framing headers are the server's business, not the function's.
_SERVER_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def response_to_reply(result: Any) -> Reply:
    """Turn what an HTTP function returned into a reply, as the Python worker does."""
    if result is None:
        return Reply(204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"HTTP function returned {type(result).__name__}, not func.HttpResponse")
    headers = [(k, v) for k, v in result.headers.items() if k.lower() not in _SERVER_HEADERS]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = result.mimetype
        content_type = (
            f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        )
        headers.append(("Content-Type", content_type))
    return Reply(int(result.status_code), headers, result.get_body())


# How often the serving loop checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL = 0.05


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 resets connections when many factories connect at once.
    request_queue_size = 128
    devhost: DevHost


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections each hold a thread; drop them after a while.
    timeout = 60
    # The headers and the body go out as two writes: with Nagle's algorithm the body waits
    # for the client's delayed ACK (~40 ms a request on a keep-alive connection).
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        self.server.devhost.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # DevHost logs one line per request itself; this silences the stderr default.
        pass


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size_line = handler.rfile.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class DevHost:
    """Serves a FunctionApp over HTTP and runs its timers.

    `DevHost(app, root=..., port=0).start()` serves on a background thread and returns the
    bound port; `serve_forever()` serves on the calling thread (the CLI); `stop()` shuts
    both the server and the timer scheduler down promptly.
    """

    def __init__(
        self,
        app: func.FunctionRegister,
        *,
        root: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 7071,
        webui: Path | str | None = None,
        run_timers: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else Path.cwd()
        self.host = host
        self.requested_port = port
        self.webui = Path(webui) if webui is not None else self.root / "webui"
        self.static_headers = load_global_headers(self.webui)
        self.route_prefix = read_route_prefix(self.root)
        self.index = index_app(app, environ)
        self.run_timers = run_timers
        self.timer_runner = TimerRunner(self.index.timers)
        self.queue_runner = QueueRunner(
            self.index.queues,
            storage_queues(os.environ if environ is None else environ),
            QueueSettings.from_host_json(self.root, os.environ if environ is None else environ),
            call=call_user_function,
        )
        for name in self.index.unsupported:
            logger.warning("function %s: trigger not served by the local host", name)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- lifecycle

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DevHost is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/{self.route_prefix}" if self.route_prefix else self.url

    def bind(self) -> int:
        if self._server is None:
            server = _Server((self.host, self.requested_port), _Handler)
            server.devhost = self
            self._server = server
        return self.port

    def start(self) -> int:
        """Serve on a background thread; returns the bound port."""
        port = self.bind()
        assert self._server is not None
        self._stop.clear()
        server = self._server
        self._spawn(lambda: server.serve_forever(poll_interval=_POLL_INTERVAL), "devhost-http")
        self._start_timers()
        self._log_routes()
        return port

    def serve_forever(self) -> None:
        """Serve on the calling thread until `stop()` (or KeyboardInterrupt)."""
        self.bind()
        assert self._server is not None
        self._stop.clear()
        self._start_timers()
        self._log_routes()
        try:
            self._server.serve_forever(poll_interval=_POLL_INTERVAL)
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        server, self._server = self._server, None
        if server is not None:
            # shutdown() waits for serve_forever to return; calling it from the serving
            # thread itself would deadlock, and there the loop has already ended.
            if threading.current_thread() not in self._threads:
                with contextlib.suppress(Exception):
                    server.shutdown()
            server.server_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> DevHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _start_timers(self) -> None:
        """The background triggers: timers, and queue triggers (one thread each)."""
        if self.run_timers and self.index.timers:
            self._spawn(lambda: self.timer_runner.run(self._stop), "devhost-timers")
        if self.run_timers and self.index.queues:
            self._spawn(lambda: self.queue_runner.run(self._stop), "devhost-queues")

    def _log_routes(self) -> None:
        logger.info("serving on %s (route prefix %r)", self.url, self.route_prefix)
        for function in self.index.http:
            methods = ",".join(sorted(function.methods)) if function.methods != ALL_METHODS else "*"
            prefix = f"/{self.route_prefix}" if self.route_prefix else ""
            logger.info("  %s: [%s] %s/%s", function.name, methods, prefix, function.route.template)
        for timer in self.index.timers:
            logger.info("  %s: timer %r", timer.name, timer.schedule)
        for queue in self.index.queues:
            logger.info("  %s: queue %r", queue.name, queue.queue_name)

    # -- requests

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        method = request.command.upper()
        split = urlsplit(request.path)
        try:
            body = _read_body(request)
            reply = self.dispatch(method, request.path, request.headers.items(), body)
        except Exception as exc:
            logger.exception("request %s %s failed in the host", method, split.path)
            reply = json_reply(500, {"error": "internal", "message": str(exc)})
            # The request body may be only partly read: the connection cannot be reused.
            request.close_connection = True
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Logged before the reply is written, so the line exists once the client has its
        # answer (tests and operators reading the log never race the response).
        logger.info("%s %s %d %.1fms", method, split.path, reply.status, elapsed_ms)
        self._write(request, method, reply)

    def dispatch(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Reply:
        """Route one request; `target` is the request-target (path and query)."""
        split = urlsplit(target)
        path = split.path or "/"
        header_map: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            header_map[key] = f"{header_map[key]}, {value}" if key in header_map else value
        relative = self._strip_prefix(path)
        if relative is not None:
            matches = [
                (f, v) for f in self.index.http if (v := f.route.match(relative)) is not None
            ]
            for function, values in matches:
                if function.allows(method):
                    return self._invoke(function, method, split, header_map, values, body)
            if matches:
                allowed = sorted(set().union(*(f.methods for f, _ in matches)))
                return _method_not_allowed(method, path, allowed)
            if self.route_prefix:
                return _not_found(path)
        reply = self._static(method, path) or _not_found(path)
        reply.headers.extend(self.static_headers)
        return reply

    def _strip_prefix(self, path: str) -> str | None:
        trimmed = path.lstrip("/")
        if not self.route_prefix:
            return trimmed
        prefix = self.route_prefix.lower()
        lowered = trimmed.lower()
        if lowered == prefix:
            return ""
        if lowered.startswith(prefix + "/"):
            return trimmed[len(prefix) + 1 :]
        return None

    def _invoke(
        self,
        function: HttpFunction,
        method: str,
        split: SplitResult,
        headers: Mapping[str, str],
        route_values: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        params: dict[str, str] = {}
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            # Repeated keys are joined with commas, as the Functions host does.
            params[name] = f"{params[name]},{value}" if name in params else value
        host = headers.get("host") or f"{self.host}:{self.port}"
        url = f"http://{host}{split.path}" + (f"?{split.query}" if split.query else "")
        request = func.HttpRequest(
            method,
            url,
            headers=headers,
            params=params,
            route_params=dict(route_values),
            body=body,
        )
        try:
            result = call_user_function(function.handler, {function.arg_name: request})
            return response_to_reply(result)
        except Exception as exc:
            logger.error(
                "function %s failed:\n%s", function.name, "".join(traceback.format_exception(exc))
            )
            return json_reply(500, {"error": "internal", "message": str(exc)})

    def _static(self, method: str, path: str) -> Reply | None:
        if not self.webui.is_dir():
            return None
        base = self.webui.resolve()
        relative = unquote(path).lstrip("/")
        candidate = (base / relative).resolve()
        # resolve() has already followed `..` and symlinks, so this refuses both.
        if not candidate.is_relative_to(base):
            return _not_found(path)
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if not candidate.is_file():
            return None
        if method not in ("GET", "HEAD"):
            return _method_not_allowed(method, path, ["GET", "HEAD"])
        content_type = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in (
            "application/javascript",
            "application/json",
        ):
            content_type += "; charset=utf-8"
        return Reply(
            200,
            [("Content-Type", content_type), ("Cache-Control", "no-cache")],
            candidate.read_bytes(),
        )

    def _write(self, request: BaseHTTPRequestHandler, method: str, reply: Reply) -> None:
        try:
            request.send_response(reply.status)
            for name, value in reply.headers:
                request.send_header(name, value)
            no_body = reply.status in (204, 304) or 100 <= reply.status < 200
            if not no_body:
                request.send_header("Content-Length", str(len(reply.body)))
            request.end_headers()
            if method != "HEAD" and not no_body:
                request.wfile.write(reply.body)
            request.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            request.close_connection = True
