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
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.store.ports import Stores
from tests.conftest import REPO, RunningStack
from tests.support.factories import Fleet, alive, reap_when_expired, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"cli{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


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
    wait_for("the orphaned engine to stop", lambda: not alive(engine_pid), timeout=15)
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
    assert not alive(engine_pid)  # its engine was stopped with it

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
    (source / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    package = source / "factory_cli"
    package.mkdir()
    for path in [*(REPO / "factory_cli").glob("*.py"), REPO / "factory_cli" / "README.md"]:
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
