"""Factories doing real work on a real repository, on the real local stack.

The remote is a local bare repository (``file://``); the engines are the stand-ins of
``tests/support/standins`` (replaying Claude Code's and Codex's recorded output formats and
editing files, found on PATH under the real names) or ``tests/support/engines/resumable.py``.
Each factory is a real ``fleet-factory run`` process. Nothing sleeps a fixed time: every wait
polls for the state it needs; where a lease must expire the test runs the reaper in-process
once the job's own ``lease.expiresAt`` has passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.store.ports import Stores
from tests.conftest import REPO, RunningStack
from tests.support.factories import Factory, Fleet, alive, reap_when_expired, wait_for

pytestmark = pytest.mark.integration

STANDINS = REPO / "tests" / "support" / "standins"
FIXTURES = REPO / "tests" / "fixtures" / "engines"
RESUMABLE = REPO / "tests" / "support" / "engines" / "resumable.py"
GIT_ID = ["-c", "user.name=seed", "-c", "user.email=seed@example.invalid"]


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bare_remote(root: Path) -> tuple[str, Path]:
    """A bare repository with one commit on ``main``: ``(file:// URL, its path)``."""
    remote = root / "remote.git"
    git("init", "--bare", "-q", "-b", "main", str(remote))
    seed = root / "seed"
    git("init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("# the project\n")
    git("add", "README.md", cwd=seed)
    git("commit", "-q", "-m", "first", cwd=seed)
    git("push", "-q", str(remote), "main", cwd=seed)
    return f"file://{remote}", remote


def remote_file(remote: Path, ref: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", "--git-dir", str(remote), "show", f"{ref}:{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def remote_head(remote: Path, branch: str) -> str:
    return git("--git-dir", str(remote), "rev-parse", f"refs/heads/{branch}")


def epochs_on(remote: Path, branch: str) -> list[int]:
    """The Fleet-Epoch trailers of the branch's commits, newest first."""
    out = git(
        "--git-dir",
        str(remote),
        "log",
        "--first-parent",
        "--format=%(trailers:key=Fleet-Epoch,valueonly,separator=)",
        f"refs/heads/{branch}",
    )
    return [int(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"repo{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def with_standins(fleet: Fleet, name: str, **env: str) -> Factory:
    return fleet.factory(name, PATH=f"{STANDINS}{os.pathsep}{os.environ.get('PATH', '')}", **env)


def runs_of(fleet: Fleet, job_id: str) -> list[dict[str, Any]]:
    return fleet.get(f"/fleet/jobs/{job_id}/runs")["runs"]  # type: ignore[no-any-return]


def stage_is(fleet: Fleet, job_id: str, *stages: str) -> dict[str, Any] | None:
    job = fleet.job(job_id)
    return job if job["stage"] in stages else None


def kill_engines(factory: Factory) -> None:
    for held in factory.held():
        pid = held.get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


# --- resume across machines, and a fenced zombie ------------------------------------------


RESUMABLE_ENGINE = ("--engine-cmd", f"{{python}} {RESUMABLE}")


def first_step_pushed(
    fleet: Fleet, tmp_path: Path, *run_args: str
) -> tuple[Factory, str, Path, dict[str, Any]]:
    """Factory ``fa`` running the resumable engine on a repository job, once the job's
    checkpoint names the pushed commit of its first step: ``(fa, job id, the remote,
    that checkpoint)``."""
    url, remote = bare_remote(tmp_path)
    fa = fleet.factory("fa")
    fa.start(*RESUMABLE_ENGINE, *run_args)
    job_id = fleet.submit(title="two steps", body="part 1 then part 2", repo=url)

    def checkpointed() -> dict[str, Any] | None:
        checkpoint = fleet.job(job_id).get("checkpoint") or {}
        return checkpoint if checkpoint.get("commit") and checkpoint.get("step") == 1 else None

    return fa, job_id, remote, wait_for("the first step's checkpoint", checkpointed, timeout=60)


def test_repo_job_resumes_on_another_factory_from_the_pushed_checkpoint(
    fleet: Fleet, tmp_path: Path, azure_backend: Stores
) -> None:
    fa, job_id, remote, first = first_step_pushed(fleet, tmp_path)
    branch = f"fleet/{job_id}"
    assert first["branch"] == branch
    assert remote_file(remote, first["commit"], "part1.txt") == "part 1 at epoch 1\n"
    fa_engines = [h["pid"] for h in fa.held()]
    fa.kill()  # kill -9: no release, no last push
    kill_engines(fa)

    wait_for("the job back in the queue", lambda: reap_when_expired(fleet, azure_backend, job_id))
    fb = fleet.factory("fb")
    fb.start(*RESUMABLE_ENGINE)
    shipped = wait_for("shipped by fb", lambda: stage_is(fleet, job_id, "shipped"), timeout=90)
    assert shipped["result"]["factory"] == "fb"
    runs = runs_of(fleet, job_id)
    assert len(runs) == 2 and runs[0]["epoch"] == 1
    second = runs[1]["epoch"]  # the reaper's requeue bumped the epoch too
    assert remote_file(remote, branch, "part1.txt") == "part 1 at epoch 1\n"
    assert remote_file(remote, branch, "part2.txt") == f"part 2 at epoch {second}\n"
    epochs = epochs_on(remote, branch)
    assert epochs[0] == second and 1 in epochs  # the second attempt built on the first's
    assert runs[0]["outcome"] == "taken_back" and runs[0]["factory"] == "fa"
    assert runs[1]["outcome"] == "shipped" and runs[1]["factory"] == "fb"
    assert runs[1]["branch"] == branch and runs[1]["commit"] == remote_head(remote, branch)
    assert all(not alive(int(pid)) for pid in fa_engines if pid)


def test_repo_job_a_paused_zombie_changes_nothing_on_the_branch(
    fleet: Fleet, tmp_path: Path, azure_backend: Stores
) -> None:
    fa, job_id, remote, _first = first_step_pushed(fleet, tmp_path, "--checkpoint-every", "1")
    branch = f"fleet/{job_id}"
    workdir = Path(fa.held()[0]["workdir"])
    assert fa.proc is not None
    os.kill(fa.proc.pid, signal.SIGSTOP)  # paused: it still believes it holds the job
    try:
        wait_for("requeued", lambda: reap_when_expired(fleet, azure_backend, job_id))
        fb = fleet.factory("fb")
        fb.start(*RESUMABLE_ENGINE)
        wait_for("shipped by fb", lambda: stage_is(fleet, job_id, "shipped"), timeout=90)
        shipped_head = remote_head(remote, branch)
        # The zombie's engine keeps writing while its factory sleeps: work it would push.
        (workdir / "zombie.txt").write_text("written by the fenced attempt\n")
    finally:
        os.kill(fa.proc.pid, signal.SIGCONT)
    wait_for(
        "the zombie stopped its job",
        lambda: "nothing more reported" in fa.output() or None,
        timeout=60,
    )
    assert remote_head(remote, branch) == shipped_head  # nothing the zombie pushed landed
    assert remote_file(remote, branch, "zombie.txt") is None
    assert epochs_on(remote, branch)[0] == runs_of(fleet, job_id)[-1]["epoch"]
    assert fa.held() == [] or all(h["jobId"] != job_id for h in fa.held())
    job = fleet.job(job_id)
    assert job["stage"] == "shipped" and job["result"]["factory"] == "fb"


# --- real agent output formats: Claude Code and Codex -----------------------------------


def claude_result() -> dict[str, Any]:
    lines = (FIXTURES / "claude_success.jsonl").read_text().splitlines()
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def test_claude_factory_ships_a_repo_job_with_its_cost_tokens_diff_and_artifacts(
    fleet: Fleet, tmp_path: Path
) -> None:
    url, remote = bare_remote(tmp_path)
    # The product has a budget: the run's cost must reach it.
    budget = requests.put(
        f"{fleet.stack.api}/fleet/budgets/{fleet.product}",
        json={"ceilingUsd": 10},
        headers=fleet.stack.operator(fleet.product),
        timeout=30,
    )
    assert budget.status_code == 200, budget.text
    argv_file = tmp_path / "claude-argv.json"
    fc = with_standins(fleet, "fc", STANDIN_ARGV_FILE=str(argv_file))
    fc.start("--engine", "claude")
    job_id = fleet.submit(
        title="Say hello in the notes",
        body="Append a line to NOTES.md",
        repo=url,
        base="main",
        maxCostUsd=5,
    )
    branch = f"fleet/{job_id}"
    job = wait_for("shipped", lambda: stage_is(fleet, job_id, "shipped", "failed"), timeout=90)
    assert job["stage"] == "shipped", (job.get("result"), fc.output()[-3000:])
    # Claude Code ran in its machine-readable mode, with the attempt's cost cap.
    argv = json.loads(argv_file.read_text())["argv"]
    assert "--output-format" in argv and "stream-json" in argv and "--verbose" in argv
    assert argv[argv.index("--max-budget-usd") + 1] == "5"
    # The branch is on the remote with the agent's change, one commit ahead of main.
    assert "change made by the stand-in agent" in (remote_file(remote, branch, "NOTES.md") or "")
    head = remote_head(remote, branch)
    run = runs_of(fleet, job_id)[-1]
    final = claude_result()
    assert run["outcome"] == "shipped" and run["engine"] == "claude"
    assert run["engineVersion"] == "2.1.332"
    assert run["costUsd"] == pytest.approx(final["total_cost_usd"])
    usage = final["usage"]
    assert run["tokens"] == {
        "input": usage["input_tokens"],
        "output": usage["output_tokens"],
        "cacheRead": usage["cache_read_input_tokens"],
        "cacheWrite": usage["cache_creation_input_tokens"],
    }
    assert run["diff"] == {"files": 1, "insertions": 1, "deletions": 0}
    assert (run["branch"], run["commit"]) == (branch, head)
    assert {"engine.log", "diff.patch"} <= set(run["artifacts"])
    # The agent's decisions are in the audit trail.
    tools = [
        e["payload"]["name"] for e in fleet.agent_events(job_id) if e["eventType"] == "tool_use"
    ]
    assert tools and all(isinstance(t, str) for t in tools)
    listed = fleet.get(f"/fleet/jobs/{job_id}/artifacts")["artifacts"]
    sizes = {a["name"]: a["size"] for a in listed}
    assert sizes["engine.log"] > 0 and sizes["diff.patch"] > 0
    spent = fleet.get(f"/fleet/budgets/{fleet.product}")["spentUsd"]
    assert spent == pytest.approx(final["total_cost_usd"], abs=1e-6)  # kept to the micro-dollar


def test_codex_factory_ships_a_repo_job_with_its_items_and_priced_usage(
    fleet: Fleet, tmp_path: Path
) -> None:
    url, remote = bare_remote(tmp_path)
    fx = with_standins(fleet, "fx", FLEET_CODEX_MODEL="gpt-5-codex")
    fx.start("--engine", "codex")
    job_id = fleet.submit(title="Notes", body="Append a line to NOTES.md", repo=url)
    job = wait_for("shipped", lambda: stage_is(fleet, job_id, "shipped", "failed"), timeout=90)
    assert job["stage"] == "shipped", (job.get("result"), fx.output()[-3000:])
    run = runs_of(fleet, job_id)[-1]
    completed = [
        json.loads(line)
        for line in (FIXTURES / "codex_success.jsonl").read_text().splitlines()
        if '"turn.completed"' in line
    ]
    assert run["tokens"]["output"] == sum(t["usage"]["output_tokens"] for t in completed)
    assert run["tokens"]["cacheRead"] == sum(t["usage"]["cached_input_tokens"] for t in completed)
    assert run["costUsd"] is not None and run["costUsd"] > 0  # priced from the table
    kinds = {e["eventType"] for e in fleet.agent_events(job_id)}
    assert {"command_execution", "file_change", "agent_message"} <= kinds
    assert run["commit"] == remote_head(remote, f"fleet/{job_id}")
    assert run["diff"]["files"] == 1


# --- limits: a hung engine, a runaway cost ----------------------------------------------


def test_hung_engine_is_stopped_at_its_timeout_and_leaves_no_process(
    fleet: Fleet, tmp_path: Path
) -> None:
    url, _remote = bare_remote(tmp_path)
    fh = with_standins(fleet, "fh", STANDIN_HANG="1")
    fh.start("--engine", "claude")
    job_id = fleet.submit(
        title="hangs", body="never ends", repo=url, timeoutSeconds=10, maxAttempts=1
    )
    running = wait_for("the engine running", lambda: [h for h in fh.held() if h.get("pid")])
    pid = int(running[0]["pid"])
    job = wait_for("ended", lambda: stage_is(fleet, job_id, "dead_letter", "failed"), timeout=90)
    run = runs_of(fleet, job_id)[-1]
    assert run["outcome"] == "timeout", (run, job["stage"])
    assert "time limit" in (run["reason"] or "")  # the factory stopped it, just before the deadline
    assert not alive(pid)
    assert "engine.log" in run["artifacts"]


def test_runaway_cost_is_stopped_at_max_cost(fleet: Fleet, tmp_path: Path) -> None:
    url, _remote = bare_remote(tmp_path)
    fr = with_standins(
        fleet, "fr", STANDIN_COST_STEP="0.02", STANDIN_SLEEP="0.2", FLEET_CODEX_MODEL="gpt-5-codex"
    )
    fr.start("--engine", "codex")
    job_id = fleet.submit(title="spends", body="for ever", repo=url, maxCostUsd=0.1, maxAttempts=1)
    running = wait_for("the engine running", lambda: [h for h in fr.held() if h.get("pid")])
    pid = int(running[0]["pid"])
    wait_for("ended", lambda: stage_is(fleet, job_id, "dead_letter", "failed"), timeout=90)
    run = runs_of(fleet, job_id)[-1]
    assert run["outcome"] == "budget_exceeded", run
    # Stopped at the first observation past the cap, and booked at the cap (a factory's
    # figure is believed up to it, never past it).
    assert run["costUsd"] == pytest.approx(0.1)
    assert not alive(pid)


# --- the engine user ------------------------------------------------------------------------

SNOOP = REPO / "tests" / "support" / "engines" / "snoop.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="running engines as another user needs root here")
def test_engine_user_works_on_the_repository_and_reads_nothing_of_the_factory(
    fleet: Fleet, tmp_path: Path
) -> None:
    url, remote = bare_remote(tmp_path)
    # pytest's own temporary dirs are private to root: the work dirs go where nobody can
    # reach them (the factory refuses a work dir its engine user could not enter).
    # So do the engine and its interpreter (this checkout and the project's virtualenv may
    # sit under a private home).
    shared = Path(tempfile.mkdtemp(prefix="fleet-engine-user-", dir="/tmp"))
    shared.chmod(0o755)
    work, snoop = shared / "work", shared / "snoop.py"
    work.mkdir(mode=0o755)
    shutil.copy(SNOOP, snoop)
    snoop.chmod(0o644)
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 for the engine user to run")
    try:
        fe = fleet.factory("fe")
        config = fe.home / "config.json"
        fe.start(
            "--engine-cmd",
            f"{python} {snoop} {config}",
            "--engine-user",
            "nobody",
            "--work-dir",
            str(work),
        )
        job_id = fleet.submit(title="snoop", body="look around", repo=url)
        job = wait_for("ended", lambda: stage_is(fleet, job_id, "shipped", "failed"), timeout=90)
        assert job["stage"] == "shipped", (job.get("result"), fe.output()[-3000:])
        snooped = remote_file(remote, f"fleet/{job_id}", "snooped.txt") or ""
        assert f"uid {pwd.getpwnam('nobody').pw_uid}" in snooped
        assert "config: denied" in snooped and "factory environ: denied" in snooped
        assert "token variable: absent" in snooped
        token = json.loads(config.read_text())["token"]
        assert token not in snooped and "READ" not in snooped
        assert runs_of(fleet, job_id)[-1]["diff"]["files"] == 1
    finally:
        shutil.rmtree(shared, ignore_errors=True)
