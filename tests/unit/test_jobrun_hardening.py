# ruff: noqa: F811
# (the pytest fixtures imported from test_cli_runner are parameters here)
"""The per-job state machine (jobrun.py / runner.py) against an engine that attacks the
factory or races it: links planted in ``.fleet/``, a rewritten ``.git/config``, stops that
arrive while a background task (checkout, push, upload) is still running."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from factory_cli.runner import Runner
from factory_cli.testing import FakeClock, FakeSpawner
from factory_cli.workspace import Workspaces
from tests.unit.test_cli_runner import (  # noqa: F401  (fixtures)
    API,
    FakeCoordinator,
    _git,
    bare_remote,
    clock,
    grant,
    job,
    make,
    rsps,
    server,
    spawner,
    ticks,
    until,
)

T = TypeVar("T")


class DeferredExecutor:
    """Background tasks run only when the test says so (``run_all``): the tick sees them
    still running in between, as it would with slow git or a slow upload."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future[Any], Callable[[], Any]]] = []

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self.pending.append((future, fn))
        return future

    def run_all(self) -> None:
        while self.pending:
            future, fn = self.pending.pop(0)
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)


class RecordingSink:
    def __init__(self) -> None:
        self.uploaded: dict[str, bytes] = {}

    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        self.uploaded[name] = path.read_bytes()

    def upload_all(self, job_id: str, epoch: int, files: Any) -> tuple[list[str], list[str]]:
        for name, path in files:
            self.upload(job_id, epoch, name, path)
        return [n for n, _ in files], []


# --- an engine that commits its own work -------------------------------------------------------


def test_engine_commits_are_pushed_at_its_checkpoint(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """Work the engine committed itself (Claude Code and Codex do) is pushed at its next
    checkpoint like uncommitted work: a crash loses no more than that."""
    remote = bare_remote(tmp_path)
    server.to_claim.append(grant(job("j1", repo=f"file://{remote}")))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    (proc.cwd / "feature.txt").write_text("new\n")
    _git("add", "feature.txt", cwd=proc.cwd)
    _git("commit", "-q", "-m", "engine's own commit", cwd=proc.cwd)
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"step": 1}))
    until(runner, clock, lambda: (server.bodies("patch")[-1].get("checkpoint") or {}).get("step"))
    checkpoint = server.bodies("patch")[-1]["checkpoint"]
    # The factory snapshots the engine's tree into its own repository: the content is pushed.
    tip = _git("rev-parse", "refs/heads/fleet/j1", cwd=remote)
    assert checkpoint["commit"] == tip
    assert _git("show", f"{tip}:feature.txt", cwd=remote) == "new"


# --- a release while the checkout runs ---------------------------------------------------------


def test_release_during_checkout_does_not_start_the_engine(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """A stop (release) that arrives while the repository is checked out in the background:
    no engine is started once the checkout lands; the job is given back."""
    remote = bare_remote(tmp_path)
    executor = DeferredExecutor()
    server.to_claim.append(grant(job("j1", repo=f"file://{remote}")))
    runner = make(executor=executor, grace_seconds=0)
    ticks(runner, clock, 2)
    assert runner.runs["j1"].phase.value == "preparing" and not spawner.processes
    runner.request_stop()
    ticks(runner, clock, 2)  # release() asked while the checkout still runs
    executor.run_all()  # the checkout finishes
    ticks(runner, clock, 1)
    assert spawner.processes == [], "engine started after the job was released"


# --- links the engine plants in .fleet/ --------------------------------------------------------


def test_engine_symlinked_checkpoint_does_not_leak_factory_files(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """The engine (another OS user) owns .fleet/. It replaces checkpoint.json with a link to
    the factory's config.json (private to the factory): the factory does not follow it, so
    the token never becomes the job's checkpoint (which the next engine would read)."""
    secret = tmp_path / "cfg" / "config.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"token": "flf_secret_factory_token"}))
    os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    link = Path(proc.env["FLEET_CHECKPOINT_FILE"])
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    ticks(runner, clock, 20)
    sent = json.dumps(server.bodies("patch"))
    assert "flf_secret_factory_token" not in sent


def test_engine_symlinked_log_is_not_uploaded(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """Same with .fleet/engine.log: a link there is neither uploaded as an artifact nor read
    for the last output line."""
    secret = tmp_path / "cfg" / "config.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"token": "flf_secret_factory_token"}) + "\n")
    sink = RecordingSink()
    server.to_claim.append(grant(job("j1")))
    runner = make(sink=sink)
    ticks(runner, clock, 2)
    proc = spawner.last
    proc.log.unlink()
    proc.log.symlink_to(secret)
    proc.exit(0)
    until(runner, clock, lambda: not runner.runs)
    leaked = [n for n, data in sink.uploaded.items() if b"flf_secret_factory_token" in data]
    assert not leaked
    assert "flf_secret_factory_token" not in json.dumps(server.bodies("patch"))


# --- a cancel during the wrap-up ---------------------------------------------------------------


def test_cancel_during_wrap_up_changes_nothing_on_the_remote(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """An operator's cancel while the wrap-up runs in the background: the task goes no
    further (no push, no pull request), so the remote does not move after the cancel."""
    remote = bare_remote(tmp_path)
    executor = DeferredExecutor()
    server.to_claim.append(grant(job("j1", repo=f"file://{remote}")))
    runner = make(executor=executor)
    ticks(runner, clock, 1)
    executor.run_all()  # checkout
    ticks(runner, clock, 1)
    proc = spawner.last
    before = _git("rev-parse", "refs/heads/fleet/j1", cwd=remote)
    (proc.cwd / "feature.txt").write_text("new\n")
    proc.exit(0)
    ticks(runner, clock, 1)  # the wrap-up is submitted
    run = runner.runs["j1"]
    assert run.phase.value == "wrapping" and executor.pending
    run.cancel(clock.t)  # the operator cancels (the coordinator already fenced it)
    executor.run_all()  # the wrap-up thread carries on
    assert _git("rev-parse", "refs/heads/fleet/j1", cwd=remote) == before


# --- an abort keeps the pushed {branch, commit} ------------------------------------------------


def test_abort_releases_with_the_pushed_branch_and_commit(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """A second Ctrl-C releases with the pushed ``{branch, commit}`` on top of the engine's
    checkpoint: the next attempt resumes from the pushed work instead of starting from base
    (whose marker push would replace that work)."""
    remote = bare_remote(tmp_path)
    server.to_claim.append(grant(job("j1", repo=f"file://{remote}")))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    (proc.cwd / "feature.txt").write_text("new\n")
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"step": 1}))
    until(runner, clock, lambda: "commit" in (server.bodies("patch")[-1].get("checkpoint") or {}))
    pushed = _git("rev-parse", "refs/heads/fleet/j1", cwd=remote)
    runner.request_stop()
    runner.request_stop()
    runner.tick(clock.t)
    released = server.bodies("release")[-1]["checkpoint"]
    assert released.get("commit") == pushed and released.get("branch") == "fleet/j1"


# --- the version probe -------------------------------------------------------------------------


def test_version_probe_does_not_get_the_factory_token(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """Asking the agent's CLI its version runs it without the factory's token in its
    environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen-env"
    codex = bin_dir / "codex"
    codex.write_text(f"#!/bin/sh\nenv > {seen}\necho 'codex-cli 0.171.0'\n")
    codex.chmod(0o755)
    server.to_claim.append(grant(job("j1")))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FLEET_TOKEN": "flf_secret", "HOME": str(tmp_path)}
    runner = make(engine_name="codex", template="codex", base_env=env)
    ticks(runner, clock, 2)
    spawner.last.exit(0)
    until(runner, clock, lambda: not runner.runs)
    assert seen.exists()  # it did run
    assert "flf_secret" not in seen.read_text()


# --- the engine's .git/config rewritten at the worst moment ------------------------------------


def test_git_config_written_after_the_guard_runs_no_engine_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's user owns the checkout's .git and may rewrite its config at any moment
    (here: at the worst one, right before the factory's commit): the factory's git reads a
    repository of its own, so the engine's gpg.program never runs as the factory's user."""
    remote = bare_remote(tmp_path)
    spaces = Workspaces(tmp_path / "cache", gh=None)
    work = spaces.checkout(
        job_id="j1",
        repo=f"file://{remote}",
        base=None,
        checkpoint=None,
        epoch=1,
        factory_id="fa",
        workdir=tmp_path / "wd",
    )
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    evil.chmod(0o755)
    config = work.path / ".git" / "config"
    original = work._run.check

    def racing_check(args: Any, cwd: Path, *rest: Any, **kw: Any) -> str:
        if args and args[0] == "commit":  # the engine's loop lands between guard and git
            config.write_text(
                config.read_text() + f"[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = {evil}\n"
            )
        return original(args, cwd, *rest, **kw)

    monkeypatch.setattr(work._run, "check", racing_check)
    (work.path / "f.txt").write_text("x\n")
    with contextlib.suppress(Exception):  # the commit fails; what matters is what ran
        work.commit_all("checkpoint")
    assert not marker.exists(), "git ran the engine's gpg.program as the factory's user"
