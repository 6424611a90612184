"""The demo engine, run for real (a subprocess doing git work in a temp dir)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from factory_cli.engines import PRESETS, render
from factory_cli.review import comments_of, prepare_review, verdict_for, verdict_path
from factory_cli.workdir import WorkPaths, prepare

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the demo engine needs git")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run_demo(
    root: Path, job: dict[str, Any], epoch: int = 1, factory: str = "fa", **env: str
) -> tuple[subprocess.CompletedProcess[str], WorkPaths]:
    paths = prepare(root, job, epoch)
    command = render(PRESETS["demo"], paths.placeholders(job["id"], sys.executable))
    full_env = {
        **os.environ,
        **paths.engine_vars(job["id"], epoch, factory),
        "FLEET_DEMO_STEP_SECONDS": "0",
        **env,
    }
    done = subprocess.run(
        command,
        shell=True,
        cwd=paths.workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, paths


def git(workdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=workdir, capture_output=True, text=True, check=True
    ).stdout.strip()


def events(paths: WorkPaths) -> list[dict[str, Any]]:
    return [json.loads(line) for line in paths.events.read_text().splitlines()]


def test_demo_engine_commits_on_the_job_branch_and_reports(tmp_path: Path) -> None:
    job = {"id": "j1", "title": "Write notes", "body": "First line.\nSecond line here."}
    done, paths = run_demo(tmp_path, job, FLEET_DEMO_STEPS="2")
    assert done.returncode == 0, done.stderr
    assert git(paths.workdir, "rev-parse", "--abbrev-ref", "HEAD") == "fleet/j1"
    log = git(paths.workdir, "log", "--format=%s").splitlines()
    assert log == ["Write notes: step 2/2", "Write notes: step 1/2", "initial commit"]
    notes = (paths.workdir / "work" / "j1.md").read_text()
    assert "step 1/2 by fa at epoch 1: 2 words from: First line." in notes
    assert "step 2/2 by fa at epoch 1: 3 words from: Second line here." in notes
    checkpoint = json.loads(paths.checkpoint.read_text())
    assert checkpoint == {
        "branch": "fleet/j1",
        "commit": git(paths.workdir, "rev-parse", "HEAD"),
        "step": 2,
    }
    progress = json.loads(paths.progress.read_text())
    assert progress["tokens"] == 2400 and progress["costUsd"] == pytest.approx(0.0072)
    assert progress["lastOutputLine"].startswith("step 2/2 committed")
    assert [e["type"] for e in events(paths)] == ["plan", "commit", "commit", "done"]
    assert git(paths.workdir, "status", "--porcelain") == ""  # .fleet/ is excluded


@pytest.mark.parametrize(("body", "env"), [("demo: fail", {}), ("x", {"FLEET_DEMO_FAIL": "1"})])
def test_demo_engine_fails_when_told(tmp_path: Path, body: str, env: dict[str, str]) -> None:
    done, paths = run_demo(tmp_path, {"id": "j2", "title": "t", "body": body}, **env)
    assert done.returncode == 1 and "failing as asked" in done.stdout
    assert json.loads(paths.checkpoint.read_text())["step"] == 1  # work kept for a retry
    assert events(paths)[-1]["type"] == "fail"


def test_demo_engine_hangs_and_stops_when_its_factory_is_gone(tmp_path: Path) -> None:
    job = {"id": "j3", "title": "t", "body": "x"}
    done, paths = run_demo(tmp_path, job, FLEET_DEMO_HANG="1", FLEET_FACTORY_PID=str(dead_pid()))
    assert "hanging as asked" in done.stdout and "the factory is gone" in done.stdout
    assert json.loads(paths.checkpoint.read_text())["step"] == 1


def test_demo_engine_resumes_the_checkpoint_branch_from_origin(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    body = f"Do the thing.\nrepo: {origin}\ndemo: hang-once\n"
    job = {"id": "j4", "title": "Resumable", "body": body}
    # Attempt 1 on factory A: one step, pushed, then it hangs (until its factory dies).
    first, paths_a = run_demo(
        tmp_path / "a", job, epoch=1, factory="fa", FLEET_FACTORY_PID=str(dead_pid())
    )
    assert "hanging as asked" in first.stdout, first.stderr
    checkpoint = json.loads(paths_a.checkpoint.read_text())
    assert git(origin, "rev-parse", "refs/heads/fleet/j4") == checkpoint["commit"]
    # Attempt 2 on factory B, in another work dir, given that checkpoint: it resumes.
    second, paths_b = run_demo(
        tmp_path / "b", {**job, "checkpoint": checkpoint}, epoch=2, factory="fb"
    )
    assert second.returncode == 0, second.stderr
    assert f"resuming fleet/j4 at {checkpoint['commit'][:12]}" in second.stdout
    resume = events(paths_b)[0]
    assert resume == {
        "type": "resume",
        "payload": {"branch": "fleet/j4", "commit": checkpoint["commit"], "found": True},
    }
    head = git(origin, "rev-parse", "refs/heads/fleet/j4")
    subprocess.run(
        ["git", "merge-base", "--is-ancestor", checkpoint["commit"], head], cwd=origin, check=True
    )
    notes = (paths_b.workdir / "work" / "j4.md").read_text()
    assert "step 1/3 by fa at epoch 1" in notes and "step 3/3 by fb at epoch 2" in notes
    assert json.loads(paths_b.progress.read_text())["tokens"] == 3600


def test_demo_engine_starts_over_when_the_checkpoint_branch_is_gone(tmp_path: Path) -> None:
    job = {
        "id": "j5",
        "title": "t",
        "body": "x",
        "checkpoint": {"branch": "fleet/j5", "commit": "0" * 40, "step": 2},
    }
    done, paths = run_demo(tmp_path, job, FLEET_DEMO_STEPS="1")
    assert done.returncode == 0 and "not found: starting over" in done.stdout
    assert events(paths)[0]["payload"]["found"] is False


@pytest.mark.parametrize(
    ("body", "round_", "verdict"),
    [
        ("Fix it.", "1", "approve"),
        ("Fix it.\n[demo: reject]", "2", "reject"),
        ("Fix it. [demo: reject-once]", "1", "reject"),
        ("Fix it. [demo: reject-once]", "2", "approve"),
    ],
)
def test_demo_engine_review_mode_writes_a_verdict(
    tmp_path: Path, body: str, round_: str, verdict: str
) -> None:
    job = {
        "id": "j9",
        "title": "t",
        "body": body,
        "stage": "review",
        "checkpoint": {"branch": "fleet/j9", "commit": "0123456789abcdef", "step": 2},
    }
    paths = prepare_review(tmp_path, job)
    command = render(PRESETS["demo"], paths.placeholders("j9", sys.executable))
    env = {
        **os.environ,
        "FLEET_JOB_ID": "j9",
        "FLEET_MANIFEST_FILE": str(paths.manifest),
        "FLEET_REVIEW_VERDICT_FILE": str(verdict_path(paths)),
        "FLEET_REVIEW_ROUND": round_,
    }
    done = subprocess.run(
        command, shell=True, cwd=paths.workdir, env=env, capture_output=True, text=True, check=False
    )
    assert verdict_for(done.returncode) == verdict, done.stderr
    assert not (paths.workdir / ".git").exists()  # a review touches no repository
    comments = comments_of(paths)
    assert "fleet/j9 at 0123456789ab" in comments and f"round {round_}" in comments
    assert comments.startswith("Approved" if verdict == "approve" else "Changes requested")
