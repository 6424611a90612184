"""A fault-injecting HTTP proxy for the store seam on the real local stack.

It forwards every request to an upstream service (the Cosmos emulator, Azurite) and, when
told to, answers the next matching requests itself with a chosen status and headers (429
with a retry-after, 503), so tests can see how the real SDKs and our adapters behave when
the store throttles or fails, without mocking either. A rule can also wait before answering
(``delay``: the client times out), forward the request first and then answer with the fault
(``forward=True``: the write happened, its response is lost), or answer nothing at all and
close the connection (``status=0``).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class _Rule:
    status: int
    headers: dict[str, str]
    remaining: int
    match: Callable[[str, str], bool]
    hits: int = 0
    forward: bool = False  # let the request through first: only its response is lost
    queries: bool | None = None  # Cosmos queries only (True), never (False), or either
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class FaultProxy:
    upstream: str  # http://host:port
    rules: list[_Rule] = field(default_factory=list)
    forwarded: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        target = urlsplit(self.upstream)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                try:
                    self._serve()
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up first (its timeout): nobody is left to answer.
                    self.close_connection = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = bool(self.headers.get("x-ms-documentdb-isquery"))
                rule = proxy._take(self.command, self.path, query)
                if rule is not None:
                    if rule.delay:
                        time.sleep(rule.delay)
                    if rule.forward:
                        self._upstream(body)
                    if rule.status == 0:
                        self.close_connection = True  # not a byte back: the connection drops
                        return
                    payload = b'{"code":"Injected","message":"fault injected by test proxy"}'
                    self.send_response(rule.status)
                    for name, value in rule.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                status, upstream_headers, data = self._upstream(body)
                self.send_response(status)
                for name, value in upstream_headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy._host, proxy._port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                with proxy._lock:
                    proxy.forwarded += 1
                return response.status, response.getheaders(), data

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        match: Callable[[str, str], bool] = lambda method, path: True,
        forward: bool = False,
        delay: float = 0.0,
        queries: bool | None = None,
    ) -> _Rule:
        rule = _Rule(
            status=status,
            headers=headers or {},
            remaining=times,
            match=match,
            forward=forward,
            delay=delay,
            queries=queries,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def _take(self, method: str, path: str, query: bool) -> _Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.queries is not None and rule.queries != query:
                    continue
                if rule.remaining > 0 and rule.match(method, path):
                    rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
