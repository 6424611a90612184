"""A private local Functions host over the test session's emulators.

Chaos tests restart (and kill) the host mid-storm and give it fast timers; doing that to the
session's shared host would disturb every other test. This host serves the same
``function_app.py`` against the same Cosmos emulator and Azurite (the data lives there, so a
restart keeps it), on its own port, with its own app settings.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import requests

from devtools.stack import host_command
from tests.conftest import REPO, RunningStack, free_port


class PrivateHost:
    def __init__(self, stack: RunningStack, log: Path, settings: dict[str, str]) -> None:
        self.stack = stack
        self.log = log
        self.port = free_port()
        digest = hashlib.sha256(stack.operator_token.encode("utf-8")).hexdigest()
        self.env = {
            **os.environ,
            **stack.env,
            "FLEET_OPERATOR_TOKENS": f"sha256:{digest}",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def running_stack(self) -> RunningStack:
        """The session's stack as seen through this host."""
        return replace(self.stack, api=self.api)

    def start(self, timeout: float = 60) -> PrivateHost:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                host_command("127.0.0.1", self.port, REPO),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"the private host exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the private host never got healthy:\n{self.output()}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.api}/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """``kill -9``: a host crash, requests in flight cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
