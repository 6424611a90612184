"""Real ``fleet-factory`` processes against a running local host, and polling helpers.

Each factory is a ``python -m factory_cli run`` subprocess with its own config dir
(``FLEET_CONFIG_DIR``), enrolled through ``fleet-factory enroll``, running the demo engine.
Nothing here sleeps a fixed time to wait for something: ``wait_for`` polls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests

from fleet.coordinator import Coordinator
from fleet.store.ports import Stores
from tests.conftest import REPO, RunningStack

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie or a dead pid does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


class Factory:
    """One `fleet-factory` factory: its config dir, its `run` process and its log."""

    def __init__(
        self,
        stack: RunningStack,
        product: str,
        name: str,
        root: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stack = stack
        self.name = name
        self.home = root / name
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
            "FLEET_CONFIG_DIR": str(self.home),
            "FLEET_ALLOW_ROOT_ENGINE": "1",  # the tests run as root in CI
            "FLEET_DEMO_STEPS": "2",
            "FLEET_DEMO_STEP_SECONDS": "0.3",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}.log"
        enrollment = stack.enrollment_token(product)["token"]
        self.cli("enroll", "--api", stack.api, "--token", enrollment, "--name", name)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "factory_cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, *args: str) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "factory_cli",
                    "run",
                    *([] if "--engine-cmd" in args or "--engine" in args else ["--engine", "demo"]),
                    "--poll",
                    "0.5",
                    *args,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.home / "state.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def held(self) -> list[dict[str, Any]]:
        """The jobs its state file says it runs (as of its last write)."""
        return list(self.state().get("jobs") or [])

    def kill(self) -> None:
        """``kill -9``: no drain, no release."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused factory must hear the SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Fleet:
    """A product's operator view over HTTP, and the factories started for it."""

    def __init__(self, stack: RunningStack, product: str, root: Path) -> None:
        self.stack = stack
        self.product = product
        self.root = root
        self.factories: list[Factory] = []

    def factory(self, name: str, **env: str) -> Factory:
        factory = Factory(self.stack, self.product, name, self.root, env)
        self.factories.append(factory)
        return factory

    def submit(self, **fields: Any) -> str:
        body = {"capabilities": [], "leaseSeconds": 30, **fields}
        response = requests.post(
            f"{self.stack.api}/fleet/jobs",
            json=body,
            headers=self.stack.operator(self.product),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["job"]["id"])

    def post(self, path: str, body: Any, expect: int = 201) -> Any:
        response = requests.post(
            f"{self.stack.api}{path}",
            json=body,
            headers=self.stack.operator(self.product),
            timeout=30,
        )
        assert response.status_code == expect, response.text
        return response.json()

    def get(self, path: str) -> Any:
        response = requests.get(
            f"{self.stack.api}{path}", headers=self.stack.operator(self.product), timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/fleet/jobs/{job_id}")  # type: ignore[no-any-return]

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of the product: the list's pages, following ``next``."""
        jobs: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = self.get(f"/fleet/jobs?limit=1000{f'&cursor={cursor}' if cursor else ''}")
            jobs += page["jobs"]
            if page["next"] is None:
                return jobs
            cursor = page["next"]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self.get(f"/fleet/jobs/{job_id}/events")["events"]  # type: ignore[no-any-return]

    def agent_events(self, job_id: str) -> list[dict[str, Any]]:
        return self.get(f"/fleet/jobs/{job_id}/agent-events?limit=500")["events"]  # type: ignore[no-any-return]

    def stop_all(self) -> None:
        """Stop every factory; print the log of any that ended badly."""
        for factory in self.factories:
            factory.stop()
        for factory in self.factories:
            if factory.proc is not None and factory.proc.returncode not in (0, None, -9, 3):
                print(f"--- {factory.name} ---\n{factory.output()}")


def reap_when_expired(fleet: Fleet, backend: Stores, job_id: str) -> dict[str, Any] | None:
    """Once the job's lease has expired by the server's clock, run the reaper (the host's
    timer would within 15 s); the job once it is back in the queue (or beyond)."""
    job = fleet.job(job_id)
    if job["stage"] not in ("assigned", "building", "testing"):
        return job
    lease = job.get("lease") or {}
    expires = datetime.fromisoformat(str(lease.get("expiresAt")).replace("Z", "+00:00"))
    if datetime.now(UTC) > expires:
        Coordinator(backend).reap(fleet.product)
    return None
