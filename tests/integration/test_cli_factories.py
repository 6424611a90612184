"""``fleet-factory`` processes on the real local stack, with the demo engine.

Each factory is a real ``python -m factory_cli run`` subprocess with its own config dir
(``FLEET_CONFIG_DIR``), enrolled through ``fleet-factory enroll``. Nothing sleeps a fixed
time: every wait polls for the state it needs. Where a lease must expire, the test waits
until the job's own ``lease.expiresAt`` has passed and then runs the reaper in-process
(``Coordinator(azure_backend).reap``) instead of waiting for the host's timer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.store.ports import Stores
from tests.conftest import REPO, RunningStack

pytestmark = pytest.mark.integration

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


class Factory:
    """One `fleet-factory` factory: its config dir, its `run` process and its log."""

    def __init__(self, stack: RunningStack, product: str, name: str, root: Path) -> None:
        self.stack = stack
        self.name = name
        self.home = root / name
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
            "FLEET_CONFIG_DIR": str(self.home),
            "FLEET_DEMO_STEPS": "2",
            "FLEET_DEMO_STEP_SECONDS": "0.3",
            "PYTHONUNBUFFERED": "1",
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
                    "--engine",
                    "demo",
                    "--poll",
                    "0.5",
                    *args,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.home / "state.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
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
    def __init__(self, stack: RunningStack, product: str, root: Path) -> None:
        self.stack = stack
        self.product = product
        self.root = root
        self.factories: list[Factory] = []

    def factory(self, name: str) -> Factory:
        factory = Factory(self.stack, self.product, name, self.root)
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

    def get(self, path: str) -> Any:
        response = requests.get(
            f"{self.stack.api}{path}", headers=self.stack.operator(self.product), timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/fleet/jobs/{job_id}")  # type: ignore[no-any-return]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self.get(f"/fleet/jobs/{job_id}/events")["events"]  # type: ignore[no-any-return]

    def agent_events(self, job_id: str) -> list[dict[str, Any]]:
        return self.get(f"/fleet/jobs/{job_id}/agent-events?limit=500")["events"]  # type: ignore[no-any-return]


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"cli{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        for factory in fleet.factories:
            factory.stop()
        for factory in fleet.factories:
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


def test_cli_two_factories_run_every_job_exactly_once(fleet: Fleet) -> None:
    fa, fb = fleet.factory("fa"), fleet.factory("fb")
    fa.start()
    fb.start()
    jobs = [fleet.submit(title=f"job {n}", body=f"Write note {n}.\nAnd more.") for n in range(6)]
    manifest = fleet.root / "job.md"
    manifest.write_text("---\ntitle: from the CLI\nleaseSeconds: 30\n---\nA note.\n")
    operator_env = {
        "FLEET_OPERATOR_TOKEN": fleet.stack.operator_token,
        "FLEET_PRODUCT": fleet.product,
    }
    fa.env.update(operator_env)
    out = fa.cli("submit", str(manifest), "--json")
    jobs.append(json.loads(out)["job"]["id"])

    def all_shipped() -> bool:
        listed = json.loads(fa.cli("jobs", "--json"))["jobs"]
        stages = Counter(j["stage"] for j in listed)
        assert not stages.keys() & {"failed", "dead_letter", "cancelled"}, stages
        return stages["shipped"] == len(jobs)

    wait_for("every job shipped", all_shipped, timeout=90)
    ran_on = Counter()
    for job_id in jobs:
        history = fleet.events(job_id)
        kinds = [e["type"] for e in history]
        assert kinds.count("assign") == 1, (job_id, kinds)
        assert kinds.count("complete") == 1 and kinds[-1] == "complete", (job_id, kinds)
        assigned = next(e for e in history if e["type"] == "assign")
        completed = history[-1]
        assert completed["epoch"] == assigned["epoch"] == 1
        job = fleet.job(job_id)
        assert job["result"]["factory"] == assigned["holder"] and job["checkpoint"]["step"] == 2
        ran_on[assigned["holder"]] += 1
        agent = [e["eventType"] for e in fleet.agent_events(job_id)]
        assert agent == ["plan", "commit", "commit", "done"], agent
    assert sum(ran_on.values()) == len(jobs) and set(ran_on) <= {"fa", "fb"}
    assert fa.stop() == 0 and fb.stop() == 0
    states = [f.state() for f in (fa, fb)]
    assert all(s["status"] == "stopped" for s in states)
    assert sum(s["outcomes"].get("shipped", 0) for s in states) == len(jobs)
    status = fa.cli("status")
    assert "stopped (exit 0)" in status and "hits" in status


def test_cli_killed_factory_job_resumes_elsewhere_from_its_checkpoint(
    fleet: Fleet, azure_backend: Stores
) -> None:
    origin = fleet.root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    fa = fleet.factory("fa")
    fa.start()
    job_id = fleet.submit(
        title="resumable", body=f"Do a resumable thing.\nrepo: {origin}\ndemo: hang-once\n"
    )
    job = wait_for(
        "fa to forward the checkpoint",
        lambda: (j := fleet.job(job_id)).get("checkpoint") and j["holder"] == "fa" and j,
        timeout=30,
    )
    checkpoint = job["checkpoint"]
    engine_pid = wait_for("fa's engine pid", lambda: (fa.state().get("jobs") or [{}])[0].get("pid"))
    fb = fleet.factory("fb")
    fb.start()
    assert fa.proc is not None
    fa.proc.kill()  # kill -9: no drain, no release
    fa.proc.wait()
    # The demo engine notices its factory is gone and stops by itself.
    wait_for("the orphaned engine to stop", lambda: not _alive(engine_pid), timeout=15)
    requeued = wait_for(
        "the lease to expire and the reaper to requeue",
        lambda: reap_when_expired(fleet, azure_backend, job_id),
        timeout=60,
    )
    assert requeued["stage"] in ("queued", "assigned", "building", "testing", "shipped")
    done = wait_for(
        "fb to ship it", lambda: (j := fleet.job(job_id))["stage"] == "shipped" and j, timeout=60
    )
    history = fleet.events(job_id)
    kinds = [(e["type"], e["actor"], e["epoch"]) for e in history]
    assert [k for k in kinds if k[0] in ("assign", "expire", "complete")] == [
        ("assign", "factory:fa", 1),
        ("expire", "reaper", 2),
        ("assign", "factory:fb", 3),
        ("complete", "factory:fb", 3),
    ], kinds
    resume = [e for e in fleet.agent_events(job_id) if e["eventType"] == "resume"]
    assert [(e["epoch"], e["payload"]) for e in resume] == [
        (3, {"branch": checkpoint["branch"], "commit": checkpoint["commit"], "found": True})
    ]
    head = subprocess.run(
        ["git", "rev-parse", f"refs/heads/{checkpoint['branch']}"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert done["checkpoint"]["commit"] == head != checkpoint["commit"]
    subprocess.run(
        ["git", "merge-base", "--is-ancestor", checkpoint["commit"], head], cwd=origin, check=True
    )
    notes = subprocess.run(
        ["git", "show", f"{head}:work/{job_id}.md"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "by fa at epoch 1" in notes and "by fb at epoch 3" in notes


def test_cli_revoked_factory_stops_and_its_job_returns_to_the_queue(
    fleet: Fleet, azure_backend: Stores
) -> None:
    fa = fleet.factory("fa")
    fa.start()
    job_id = fleet.submit(title="hangs", body="Hang here.\ndemo: hang\n")
    wait_for("fa to build it", lambda: fleet.job(job_id)["stage"] == "building", timeout=30)
    engine_pid = wait_for("fa's engine pid", lambda: (fa.state().get("jobs") or [{}])[0].get("pid"))
    revoked = requests.post(
        f"{fleet.stack.api}/fleet/factories/fa/token/revoke",
        headers=fleet.stack.operator(fleet.product),
        timeout=30,
    )
    assert revoked.status_code == 200, revoked.text
    assert fa.proc is not None
    code = wait_for("fa to exit", lambda: fa.proc.poll() if fa.proc else None, timeout=30)
    assert code == 3, fa.output()
    assert "refused" in fa.output()
    assert not _alive(engine_pid)  # its engine was stopped with it

    def back_in_queue() -> bool:
        Coordinator(azure_backend).reap(fleet.product)  # takes jobs back from revoked holders
        return fleet.job(job_id)["stage"] == "queued"

    wait_for("the job back in the queue", back_in_queue, timeout=30)
    assert fleet.job(job_id)["epoch"] == 2


def test_cli_sigterm_drains_and_releases_with_the_checkpoint(fleet: Fleet) -> None:
    fa = fleet.factory("fa")
    fa.start("--grace", "1")
    job_id = fleet.submit(title="long", body="Hang until stopped.\ndemo: hang\n")
    wait_for("the checkpoint", lambda: fleet.job(job_id).get("checkpoint"), timeout=30)
    assert fa.stop() == 0, fa.output()
    job = fleet.job(job_id)
    assert job["stage"] == "queued" and job["checkpoint"]["step"] == 1
    release = fleet.events(job_id)[-1]
    assert release["type"] == "release" and release["reason"] == "factory shutting down"
    assert job["attempts"] == 0  # given back cleanly: not a failed attempt


def test_cli_pip_install_gives_a_working_command(tmp_path: Path) -> None:
    """`pip install .` into a fresh virtualenv: only the CLI and its small dependencies."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    package = source / "factory_cli"
    package.mkdir()
    for path in (REPO / "factory_cli").glob("*.py"):
        (package / path.name).write_bytes(path.read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = subprocess.run(
        [
            str(bindir / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    version = subprocess.run(
        [str(bindir / "fleet-factory"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("fleet-factory ")
    help_text = subprocess.run(
        [str(bindir / "fleet-factory"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "enroll" in help_text and "FLEET_API" in help_text
    module = subprocess.run(
        [str(bindir / "python"), "-m", "factory_cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert module.stdout == version.stdout
    packages = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {p["name"].lower() for p in json.loads(packages)}
    assert "fleet-factory" in names and "requests" in names
    assert not {n for n in names if n.startswith("azure") or n in ("pydantic", "pyyaml")}
    no_fleet = subprocess.run(
        [str(bindir / "python"), "-c", "import fleet"],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert no_fleet.returncode != 0  # the coordinator is not part of the package


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")
