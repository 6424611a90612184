"""The factory's run loop against a fake coordinator (``responses``), a fake clock and fake
engine processes: claims, reports, fencing, backoff, drain, the gate, commands. Nothing
sleeps: the tests move the clock and call ``tick``."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from factory_cli.api import FleetClient
from factory_cli.backoff import backoff_delay
from factory_cli.gate import forced_interval
from factory_cli.jobrun import Outcome
from factory_cli.runner import EXIT_JOB_FAILED, EXIT_OK, EXIT_REFUSED, RunConfig, Runner
from factory_cli.testing import FakeClock, FakeSpawner, InlineExecutor

API = "http://fleet.test/api"
Failure = int | Exception | tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]


def job(job_id: str = "j1", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "title": f"title of {job_id}",
        "body": f"body of {job_id}",
        "capabilities": [],
        "leaseSeconds": 30,
        "verify": None,
        "checkpoint": None,
        **fields,
    }


def grant(j: dict[str, Any], epoch: int = 1) -> dict[str, Any]:
    return {
        "job": j,
        "lease": {"holder": "fa", "epoch": epoch, "expiresAt": "2026-01-01T00:00:30.000000Z"},
        "cadence": {"heartbeatSeconds": 10, "renewSeconds": 10},
        "score": {"total": 1.5},
    }


class FakeCoordinator:
    """Answers the factory's routes; records every call as ``(time, key, path, body)``.
    ``fail[key]`` queues failures (a status, ``(status, body)``, or an exception to raise)."""

    def __init__(self, rsps: responses.RequestsMock, clock: FakeClock) -> None:
        self.clock = clock
        self.version = 1
        self.max_skip = 30
        self.to_claim: list[dict[str, Any]] = []
        self.calls: list[tuple[float, str, str, Any]] = []
        self.fail: dict[str, list[Failure]] = {}
        self.commands: list[dict[str, Any]] = []
        self.heartbeat_status = "live"
        self.in_review: list[dict[str, Any]] = []  # full jobs (the listing drops the body)
        routes: list[tuple[str, str, str]] = [
            ("GET", r"/fleet/queue-state$", "queue-state"),
            ("POST", r"/fleet/claim$", "claim"),
            ("POST", r"/fleet/factories/heartbeat$", "heartbeat"),
            ("POST", r"/fleet/jobs/[^/]+/lease/renew$", "renew"),
            ("POST", r"/fleet/jobs/[^/]+/lease/release$", "release"),
            ("POST", r"/fleet/jobs/[^/]+/events$", "events"),
            ("PATCH", r"/fleet/jobs/[^/]+$", "patch"),
            ("DELETE", r"/fleet/factories/[^/]+$", "deregister"),
            ("GET", r"/fleet/jobs(\?.*)?$", "list"),
            ("GET", r"/fleet/jobs/[^/?]+$", "get"),
            ("POST", r"/fleet/jobs/[^/]+/review$", "review"),
        ]
        for method, pattern, key in routes:
            rsps.add_callback(
                method, re.compile(re.escape(API) + pattern), callback=self._handler(key)
            )

    def _handler(self, key: str) -> Callable[[Any], tuple[int, dict[str, str], str]]:
        def handle(request: Any) -> tuple[int, dict[str, str], str]:
            body = json.loads(request.body) if request.body else None
            path = request.path_url.split("?")[0].removeprefix("/api")
            self.calls.append((self.clock.t, key, path, body))
            queued = self.fail.get(key)
            if queued:
                failure = queued.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                if isinstance(failure, int):
                    failure = (failure, {})
                status, payload, *extra = failure
                headers = {"Content-Type": "application/json", **(extra[0] if extra else {})}
                return status, headers, json.dumps(payload)
            status, payload = getattr(self, "_" + key.replace("-", "_"))(body)
            text = "" if payload is None else json.dumps(payload)
            return status, {"Content-Type": "application/json"}, text

        return handle

    def _queue_state(self, body: Any) -> tuple[int, Any]:
        return 200, {"version": self.version, "maxSkipSeconds": self.max_skip}

    def _claim(self, body: Any) -> tuple[int, Any]:
        if not self.to_claim:
            return 204, None
        return 200, self.to_claim.pop(0)

    def _heartbeat(self, body: Any) -> tuple[int, Any]:
        acked = set(body.get("ack", []))
        self.commands = [c for c in self.commands if c["id"] not in acked]
        return 200, {
            "status": self.heartbeat_status,
            "cadence": {"heartbeatSeconds": 30},
            "commands": list(self.commands),
        }

    def _renew(self, body: Any) -> tuple[int, Any]:
        return 200, {"lease": {}, "cadence": {"heartbeatSeconds": 10, "renewSeconds": 10}}

    def _release(self, body: Any) -> tuple[int, Any]:
        return 200, {"stage": "queued"}

    def _events(self, body: Any) -> tuple[int, Any]:
        return 201, {"stored": len(body["events"]), "received": len(body["events"])}

    def _patch(self, body: Any) -> tuple[int, Any]:
        return 200, {"stage": body.get("stage", "building")}

    def _deregister(self, body: Any) -> tuple[int, Any]:
        return 200, {"deregistered": True}

    def _list(self, body: Any) -> tuple[int, Any]:
        jobs = [{k: v for k, v in j.items() if k != "body"} for j in self.in_review]
        return 200, {"jobs": jobs, "count": len(jobs), "next": None}

    def _get(self, body: Any) -> tuple[int, Any]:
        path = self.calls[-1][2]
        found = [j for j in self.in_review if path.endswith("/" + j["id"])]
        return (200, found[0]) if found else (404, {"error": "not_found"})

    def _review(self, body: Any) -> tuple[int, Any]:
        return 200, {"stage": "shipped" if body["verdict"] == "approve" else "queued"}

    # --- assertions helpers ----------------------------------------------------------

    def called(self) -> list[str]:
        return [key for _, key, _, _ in self.calls]

    def bodies(self, key: str) -> list[Any]:
        return [body for _, k, _, body in self.calls if k == key]

    def about(self, job_id: str) -> list[str]:
        return [key for _, key, path, _ in self.calls if f"/jobs/{job_id}" in path]

    def times(self, key: str) -> list[float]:
        return [t for t, k, _, _ in self.calls if k == key]


FENCED = (409, {"error": "fenced", "message": "lease epoch 1 on job j1 is not current"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def server(rsps: responses.RequestsMock, clock: FakeClock) -> FakeCoordinator:
    return FakeCoordinator(rsps, clock)


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock, spawner: FakeSpawner) -> Callable[..., Runner]:
    def build(**config: Any) -> Runner:
        runner_parts = {k: config.pop(k) for k in ("executor", "sink", "base_env") if k in config}
        cfg = RunConfig(
            factory_id="fa",
            capabilities=tuple(config.pop("capabilities", ("os:linux", "has:git"))),
            template=config.pop("template", "agent --prompt {prompt_file} --job {job_id}"),
            work_root=tmp_path / "work",
            engine_name=config.pop("engine_name", "fake"),
            **config,
        )
        return Runner(
            FleetClient(API, "flf_secret"),
            cfg,
            clock=clock,
            spawner=spawner,
            rand=lambda: 0.5,
            executor=runner_parts.get("executor") or InlineExecutor(),
            sink=runner_parts.get("sink"),
            state_path=tmp_path / "state.json",
            base_env=runner_parts.get("base_env")
            or {"PATH": "/usr/bin", "FLEET_TOKEN": "flf_secret", "HOME": str(tmp_path)},
        )

    return build


def ticks(runner: Runner, clock: FakeClock, count: int, step: float = 0.5) -> None:
    for _ in range(count):
        runner.tick(clock.t)
        clock.advance(step)


def until(
    runner: Runner, clock: FakeClock, done: Callable[[], bool], step: float = 0.5, limit: int = 500
) -> None:
    for _ in range(limit):
        runner.tick(clock.t)
        if done():
            return
        clock.advance(step)
    raise AssertionError("condition never met")


# --- the happy path -------------------------------------------------------------------------


def test_runner_heartbeats_first_then_claims_and_starts_the_engine(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, tmp_path: Path
) -> None:
    server.to_claim.append(grant(job("j1", checkpoint={"branch": "fleet/j1", "commit": "abc"})))
    runner = make()
    runner.tick(runner.clock.monotonic())
    assert server.called() == ["heartbeat", "queue-state", "claim"]
    beat = server.bodies("heartbeat")[0]
    assert beat["capabilities"] == ["os:linux", "has:git"] and beat["seats"] == 1
    assert beat["load"] == 0 and beat["version"].startswith("fleet-factory/")
    proc = spawner.last
    workdir = tmp_path / "work" / "j1"
    assert proc.cwd == workdir
    assert proc.command == f"agent --prompt {workdir}/.fleet/prompt.md --job j1"
    assert proc.env["FLEET_JOB_ID"] == "j1" and proc.env["FLEET_LEASE_EPOCH"] == "1"
    assert proc.env["FLEET_CHECKPOINT_FILE"] == str(workdir / ".fleet" / "checkpoint.json")
    for name in ("FLEET_PROGRESS_FILE", "FLEET_EVENTS_FILE", "FLEET_MANIFEST_FILE"):
        assert Path(proc.env[name]).parent == workdir / ".fleet"
    assert "FLEET_TOKEN" not in proc.env  # the engine runs job code: no factory secrets
    assert proc.env["PATH"] == "/usr/bin"
    prompt = (workdir / ".fleet" / "prompt.md").read_text()
    assert "# title of j1" in prompt and "body of j1" in prompt and "fleet/j1" in prompt
    manifest = json.loads((workdir / ".fleet" / "manifest.json").read_text())
    assert manifest["id"] == "j1" and manifest["leaseEpoch"] == 1
    assert json.loads((workdir / ".fleet" / "checkpoint.json").read_text())["commit"] == "abc"
    runner.tick(runner.clock.monotonic())
    assert server.bodies("patch") == [{"leaseEpoch": 1, "stage": "building"}]


def test_runner_claims_with_start_and_sends_no_building_report_for_a_started_job(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner
) -> None:
    """The claim asks the coordinator to start the job; when it comes back ``building``, the
    factory does not report ``building`` again (one call fewer per job)."""
    server.to_claim.append(grant(job("j1", stage="building")))
    runner = make()
    runner.tick(runner.clock.monotonic())
    assert server.bodies("claim")[0]["start"] is True
    assert spawner.last is not None  # the engine runs
    runner.tick(runner.clock.monotonic())
    assert server.bodies("patch") == []


def test_runner_ships_forwarding_events_and_checkpoint_before_the_final_report(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    proc.write("FLEET_PROGRESS_FILE", json.dumps({"tokens": 1500, "costUsd": 0.12}))
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"branch": "fleet/j1", "commit": "c1"}))
    proc.write("FLEET_EVENTS_FILE", '{"type": "decision", "payload": {"why": "tests"}}\n')
    proc.write("FLEET_EVENTS_FILE", "not json\n", append=True)
    proc.write("FLEET_EVENTS_FILE", '{"type": "tool", "payload": 1}\n{"type": "par', append=True)
    ticks(runner, clock, 1)
    checkpoint = server.bodies("patch")[-1]
    assert checkpoint["checkpoint"] == {"branch": "fleet/j1", "commit": "c1"}
    assert checkpoint["progress"]["costUsd"] == 0.12 and checkpoint["progress"]["tokens"] == 1500
    proc.write("FLEET_EVENTS_FILE", 'tial"}\n', append=True)  # the half line completed
    proc.exit(0)
    until(runner, clock, lambda: not runner.runs)
    keys = [k for k in server.about("j1")]
    assert keys[-2:] == ["events", "patch"]  # every event before the final report
    sent = [e for body in server.bodies("events") for e in body["events"]]
    assert [(e["seq"], e["type"]) for e in sent] == [
        (0, "decision"),
        (1, "engine.invalid"),
        (2, "tool"),
        (3, "partial"),
    ]
    assert sent[1]["payload"] == {"line": "not json"}
    final = server.bodies("patch")[-1]
    assert final["stage"] == "shipped" and final["leaseEpoch"] == 1
    assert final["result"]["exitCode"] == 0 and final["result"]["costUsd"] == 0.12
    assert final["progress"]["costUsd"] == 0.12
    assert runner.outcomes == {"shipped": 1}


def test_runner_runs_verify_and_fails_the_job_when_it_fails(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1", verify="pytest -q")))
    runner = make()
    ticks(runner, clock, 2)
    spawner.last.exit(0)
    ticks(runner, clock, 1)
    verify = spawner.last
    assert verify.command == "pytest -q" and len(spawner.processes) == 2
    assert [b.get("stage") for b in server.bodies("patch")] == ["building", "testing"]
    verify.log.write_text("E   assert 1 == 2\n")
    verify.exit(1)
    until(runner, clock, lambda: not runner.runs)
    final = server.bodies("patch")[-1]
    assert final["stage"] == "failed" and final["result"]["verifyExitCode"] == 1
    assert final["reason"] == "verify failed (exit 1): E   assert 1 == 2"
    assert "retryable" not in final


def test_runner_ships_when_verify_passes(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1", verify="true")))
    runner = make()
    ticks(runner, clock, 2)
    spawner.last.exit(0)
    ticks(runner, clock, 1)
    spawner.last.exit(0)
    until(runner, clock, lambda: not runner.runs)
    assert [b.get("stage") for b in server.bodies("patch")] == ["building", "testing", "shipped"]


@pytest.mark.parametrize(
    ("code", "stage", "retryable"),
    [(1, "failed", None), (75, "failed", True), (0, "shipped", None)],
)
def test_runner_maps_the_engine_exit_code_to_the_report(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    code: int,
    stage: str,
    retryable: bool | None,
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    spawner.last.exit(code)
    until(runner, clock, lambda: not runner.runs)
    final = server.bodies("patch")[-1]
    assert final["stage"] == stage and final.get("retryable") == retryable
    assert final["result"]["exitCode"] == code


def test_runner_renews_at_the_cadence_the_server_dictates(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    start = clock.t
    ticks(runner, clock, 70)  # 35 s
    renews = server.times("renew")
    assert [round(t - start) for t in renews] == [10, 20, 30]
    beats = server.times("heartbeat")
    assert len(beats) >= 4  # every ~10 s while the job is held (its cadence), not every 30 s
    job_entry = server.bodies("heartbeat")[-1]["jobs"][0]
    assert job_entry["jobId"] == "j1" and job_entry["leaseEpoch"] == 1


def test_runner_forwards_checkpoints_at_most_every_five_seconds_newest_first(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    for step in range(1, 13):  # a checkpoint every half second
        proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"step": step}))
        ticks(runner, clock, 1)
    sent = [
        (round(t - 1000, 1), b["checkpoint"]["step"])
        for t, k, _, b in server.calls
        if k == "patch" and "checkpoint" in b
    ]
    assert sent == [(1.0, 1), (6.0, 11)]  # 2..10 were superseded while waiting
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"step": 13}))
    proc.exit(0)
    until(runner, clock, lambda: not runner.runs)
    steps = [b["checkpoint"]["step"] for b in server.bodies("patch") if "checkpoint" in b]
    assert steps == [1, 11, 13]  # the newest goes before the final report, without waiting
    assert server.bodies("patch")[-1]["stage"] == "shipped"


# --- fencing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["renew", "patch", "events"])
def test_runner_fenced_kills_the_engine_and_reports_nothing_more(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    where: str,
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)  # claimed, building reported
    proc = spawner.last
    server.fail[where] = [FENCED]
    if where == "patch":
        proc.write("FLEET_CHECKPOINT_FILE", '{"step": 1}')
    if where == "events":
        proc.write("FLEET_EVENTS_FILE", '{"type": "x", "payload": null}\n')
    until(runner, clock, lambda: proc.killed)
    assert proc.killed  # SIGKILL at once, not a polite terminate
    fenced_at = len(server.calls)
    assert runner.outcomes == {"fenced": 1} and not runner.runs
    # The engine keeps writing: nothing more goes out about that job, ever.
    proc.write("FLEET_CHECKPOINT_FILE", '{"step": 2}')
    proc.write("FLEET_EVENTS_FILE", '{"type": "late", "payload": null}\n', append=True)
    ticks(runner, clock, 80)
    later = server.calls[fenced_at:]
    assert not [c for c in later if "/jobs/j1" in c[2]]
    assert all(b["jobs"] == [] for _, k, _, b in later if k == "heartbeat")


# --- limits, agent output, repositories --------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def test_runner_stops_the_engine_before_its_time_limit_and_reports_timeout(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    claim = grant(job("j1"))
    claim["limits"] = {"timeoutSeconds": 20, "deadlineAt": None, "maxCostUsd": None}
    server.to_claim.append(claim)
    runner = make()
    ticks(runner, clock, 2)
    proc, started = spawner.last, clock.t - 1.0
    until(runner, clock, lambda: proc.terminated)
    # A tenth of the limit is kept to commit, push and report within it.
    assert 18.0 <= clock.t - started < 19.0
    until(runner, clock, lambda: not runner.runs)
    final = server.bodies("patch")[-1]
    assert final["stage"] == "failed" and final["retryable"] is True
    assert final["result"]["outcome"] == "timeout" and "time limit" in final["reason"]
    assert runner.outcomes == {"retry": 1}


def test_runner_stops_a_runaway_cost_at_max_cost(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1", maxCostUsd=1.0)))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    proc.write("FLEET_PROGRESS_FILE", json.dumps({"tokens": 10, "costUsd": 0.5}))
    ticks(runner, clock, 2)
    assert not proc.terminated
    proc.write("FLEET_PROGRESS_FILE", json.dumps({"tokens": 20, "costUsd": 1.25}))
    until(runner, clock, lambda: not runner.runs)
    assert proc.terminated
    final = server.bodies("patch")[-1]
    assert final["result"]["outcome"] == "budget_exceeded" and final["result"]["costUsd"] == 1.25
    assert final["stage"] == "failed" and final["retryable"] is True


@pytest.mark.parametrize("code", ["timeout", "budget_exceeded"])
def test_runner_an_attempt_ended_by_the_coordinator_is_fenced(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    code: str,
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    server.fail["renew"] = [(409, {"error": code, "message": "the attempt ended"})]
    until(runner, clock, lambda: spawner.last.killed)
    assert runner.outcomes == {"fenced": 1}
    assert [b.get("stage") for b in server.bodies("patch")] == ["building"]


def test_runner_reads_claude_code_stream_json_as_it_streams(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1", maxCostUsd=2.5)))
    runner = make(engine_name="claude", template="claude {max_cost_usd:--max-budget-usd}")
    ticks(runner, clock, 2)
    proc = spawner.last
    assert proc.command == "claude --max-budget-usd 2.5"
    lines = (FIXTURES / "claude_success.jsonl").read_text().splitlines(keepends=True)
    with proc.log.open("a") as log:
        log.writelines(lines[:-1])  # everything but the final result
    until(runner, clock, lambda: "usage" in (server.bodies("patch")[-1].get("progress") or {}))
    running = server.bodies("patch")[-1]["progress"]
    assert running["tokens"] > 0 and "costUsd" in running  # priced while it works
    with proc.log.open("a") as log:
        log.write(lines[-1])
    proc.exit(0)
    until(runner, clock, lambda: not runner.runs)
    final_line = json.loads(lines[-1])
    result = server.bodies("patch")[-1]["result"]
    assert result["engine"] == "claude" and result["engineVersion"] == "2.1.332"
    assert result["costUsd"] == final_line["total_cost_usd"]
    assert result["usage"]["output"] == final_line["usage"]["output_tokens"]
    assert result["numTurns"] == final_line["num_turns"]
    events = [e for body in server.bodies("events") for e in body["events"]]
    assert any(e["type"] == "tool_use" and e["payload"]["name"] for e in events)
    assert [e["seq"] for e in events] == list(range(len(events)))


def test_runner_a_claude_that_is_not_logged_in_fails_with_its_own_reason(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(engine_name="claude", template="claude")
    ticks(runner, clock, 2)
    proc = spawner.last
    proc.log.write_text((FIXTURES / "claude_not_logged_in.jsonl").read_text())
    proc.exit(1)
    until(runner, clock, lambda: not runner.runs)
    final = server.bodies("patch")[-1]
    assert final["stage"] == "failed" and "Not logged in" in final["reason"]


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def bare_remote(tmp_path: Path) -> Path:
    """A bare repository with one commit (README.md) on ``main``."""
    remote, seed = tmp_path / "remote.git", tmp_path / "seed"
    _git("init", "-q", "--bare", "-b", "main", str(remote))
    _git("init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("hello\n")
    _git("add", ".", cwd=seed)
    _git("commit", "-q", "-m", "first", cwd=seed)
    _git("push", "-q", str(remote), "main", cwd=seed)
    return remote


def test_runner_works_on_a_repository_branch_and_reports_what_changed(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    remote = bare_remote(tmp_path)
    server.to_claim.append(grant(job("j1", repo=f"file://{remote}", pr=True)))
    runner = make()
    ticks(runner, clock, 2)
    proc = spawner.last
    assert (proc.cwd / ".git").exists() and _git("branch", "--show-current", cwd=proc.cwd) == (
        "fleet/j1"
    )
    (proc.cwd / "feature.txt").write_text("new\n")
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"step": 1}))
    until(runner, clock, lambda: "commit" in (server.bodies("patch")[-1].get("checkpoint") or {}))
    checkpoint = server.bodies("patch")[-1]["checkpoint"]
    assert checkpoint["step"] == 1 and checkpoint["branch"] == "fleet/j1"
    assert _git("rev-parse", "refs/heads/fleet/j1", cwd=remote) == checkpoint["commit"]
    (proc.cwd / "README.md").write_text("hello\nworld\n")
    proc.exit(0)
    until(runner, clock, lambda: not runner.runs)
    final = server.bodies("patch")[-1]
    head = _git("rev-parse", "refs/heads/fleet/j1", cwd=remote)
    assert final["stage"] == "shipped" and final["checkpoint"]["commit"] == head
    result = final["result"]
    assert (result["branch"], result["commit"]) == ("fleet/j1", head)
    assert result["diff"] == {"files": 2, "insertions": 2, "deletions": 0}
    assert result["prNote"] and "gh" in result["prNote"]  # no gh here: said, not silent
    assert ".fleet" not in _git("ls-tree", "-r", "--name-only", head, cwd=remote)
    assert (proc.cwd / ".fleet" / "diff.patch").read_text().count("+++") == 2
    assert not list((tmp_path / "work" / ".repos" / "jobs").iterdir())  # its git dir is gone


# --- an unreachable coordinator ----------------------------------------------------------------


def test_runner_backs_off_exponentially_with_jitter_and_never_crashes(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    refused = requests.ConnectionError("connection refused")
    server.fail["queue-state"] = [503, 503, (503, {}), refused, refused, 502, 500, 503, 503]
    runner = make()
    until(runner, clock, lambda: "claim" in server.called(), step=0.01, limit=100_000)
    polls = server.times("queue-state")
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(polls)]
    expected = [round(backoff_delay(n, 0.5), 2) for n in range(1, 10)]
    assert expected == [0.75, 1.5, 3.0, 6.0, 12.0, 24.0, 45.0, 45.0, 45.0]  # capped at 60
    assert gaps == pytest.approx(expected, abs=0.011)
    assert runner.exit_code is None


def test_runner_honours_retry_after(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make()
    runner.tick(clock.t)  # heartbeat, poll, claim (204)
    server.fail["queue-state"] = [(503, {"error": "store_unavailable"}, {"Retry-After": "7"})]
    clock.advance(10)
    runner.tick(clock.t)
    assert runner.poll_backoff.not_before - clock.t == pytest.approx(7.0)


def test_runner_keeps_the_engine_while_the_lease_allows_then_stops_it(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))  # leaseSeconds 30
    runner = make()
    ticks(runner, clock, 2)
    claimed_at = clock.t - 1.0
    proc = spawner.last
    down = requests.ConnectionError("network unreachable")
    for key in ("renew", "heartbeat", "patch", "events"):
        server.fail[key] = [down] * 1000
    until(runner, clock, lambda: clock.t - claimed_at >= 29)
    assert not proc.killed and "j1" in runner.runs  # still within the lease
    until(runner, clock, lambda: proc.killed)
    assert clock.t - claimed_at == pytest.approx(30, abs=1.0)
    assert runner.outcomes == {"lost": 1} and runner.exit_code is None


def test_runner_survives_an_unexpected_error(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    server.to_claim.append(grant(job("j1")))
    runner = make()
    runner.spawner = broken
    ticks(runner, clock, 3)
    assert runner.exit_code is None and "disk on fire" in (runner.last_error or "")


# --- a claim whose reply was lost ---------------------------------------------------------------


def test_runner_retries_a_claim_whose_reply_was_lost_with_the_same_request_id(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.fail["claim"] = [requests.ReadTimeout("read timed out")]
    server.to_claim += [grant(job("j1")), grant(job("j2"))]
    runner = make(seats=2)
    until(runner, clock, lambda: "j1" in runner.runs, step=0.1, limit=1000)
    lost, again = server.bodies("claim")
    assert "retry" not in lost and lost["requestId"]
    assert again["requestId"] == lost["requestId"] and again["retry"] is True
    after_lost = server.called()[server.called().index("claim") + 1 :]
    assert after_lost[: after_lost.index("claim")].count("queue-state") == 0  # no gate poll
    until(runner, clock, lambda: "j2" in runner.runs, step=0.1, limit=1000)
    fresh = server.bodies("claim")[-1]
    assert "retry" not in fresh and fresh["requestId"] != lost["requestId"]


@pytest.mark.parametrize(
    ("failure", "reused"),
    [
        (requests.ConnectionError("connection reset by peer"), True),
        (502, True),
        (503, True),
        (429, False),
        (400, False),
        ((409, {"error": "conflict"}), False),
    ],
)
def test_runner_reuses_the_request_id_only_when_the_reply_may_be_lost(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    clock: FakeClock,
    failure: Failure,
    reused: bool,
) -> None:
    server.fail["claim"] = [failure]
    runner = make()
    until(runner, clock, lambda: server.called().count("claim") == 2, step=0.1, limit=10_000)
    first, second = server.bodies("claim")
    assert (second["requestId"] == first["requestId"]) is reused
    assert second.get("retry", False) is reused


def test_runner_takes_a_fresh_request_id_after_a_204(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make()
    runner.tick(clock.t)  # heartbeat, poll, claim (204)
    server.version = 2  # something claimable appeared
    server.to_claim.append(grant(job("j1")))
    until(runner, clock, lambda: "j1" in runner.runs)
    first, second = server.bodies("claim")
    assert second["requestId"] != first["requestId"] and "retry" not in second


# --- the gate ----------------------------------------------------------------------------------


def test_runner_gate_skips_the_claim_while_the_version_is_unchanged(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(poll_seconds=2.0)
    start = clock.t
    until(runner, clock, lambda: clock.t - start >= 20)
    assert server.called().count("claim") == 1  # the first poll claims; then the gate holds
    assert runner.gate.hits >= 8 and runner.gate.misses == 1
    server.version = 2  # a submit bumped it
    server.to_claim.append(grant(job("j1")))
    until(runner, clock, lambda: server.called().count("claim") == 2)
    assert "j1" in runner.runs


def test_runner_gate_forces_a_claim_after_max_skip_seconds(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(poll_seconds=1.0)
    until(runner, clock, lambda: server.called().count("claim") == 2, step=0.1, limit=10_000)
    first, second = server.times("claim")
    assert forced_interval(30, 0.5) == 26.25  # jittered, never later than maxSkipSeconds
    assert second - first == pytest.approx(26.25, abs=1.3)
    assert server.version == 1


def test_runner_keeps_claiming_while_claims_find_jobs(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.to_claim += [grant(job("j1")), grant(job("j2"))]
    runner = make(seats=3)
    ticks(runner, clock, 4)
    assert set(runner.runs) == {"j1", "j2"}
    assert server.called().count("claim") == 3  # j1, j2, then 204 at the same version
    # One poll: the claims after one that found a job need none (it just saw the queue).
    assert server.called().count("queue-state") == 1
    assert runner.gate.direct == 2
    claim = server.bodies("claim")[-1]
    assert claim["load"] == 2 and claim["seats"] == 3 and claim["cost"] == 0.5


def test_runner_polls_again_after_a_job_longer_than_a_poll_interval(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    """Back from a job that lasted longer than a poll interval, a factory asks the gate
    first, as an idle one does: the queue it saw may be long gone."""
    server.to_claim.append(grant(job("j1")))
    runner = make(seats=1)
    ticks(runner, clock, 2)
    assert set(runner.runs) == {"j1"} and server.called().count("queue-state") == 1
    clock.advance(runner.config.poll_seconds + 1)
    runner.runs.clear()  # its seat is free again (the job ended)
    ticks(runner, clock, 2)
    assert server.called().count("queue-state") == 2 and runner.gate.direct == 0


def test_runner_polls_nothing_while_every_seat_is_busy(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(seats=1)
    ticks(runner, clock, 60)
    assert server.called().count("queue-state") == 1


# --- drain and stopping -------------------------------------------------------------------------


def test_runner_stop_lets_the_job_finish_within_the_grace(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(grace_seconds=30)
    ticks(runner, clock, 2)
    runner.request_stop()
    polls = server.called().count("queue-state")
    ticks(runner, clock, 10)
    spawner.last.exit(0)
    until(runner, clock, lambda: runner.exit_code is not None)
    assert runner.exit_code == EXIT_OK
    assert server.called().count("queue-state") == polls  # claimed nothing more
    assert server.bodies("patch")[-1]["stage"] == "shipped"
    assert "release" not in server.called() and "deregister" not in server.called()


def test_runner_stop_releases_with_the_checkpoint_after_the_grace(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(grace_seconds=5, deregister_on_exit=True)
    ticks(runner, clock, 2)
    proc = spawner.last
    proc.exit_on_terminate = None  # it takes its time to checkpoint
    runner.request_stop()
    stopped_at = clock.t
    until(runner, clock, lambda: proc.terminated)
    assert clock.t - stopped_at == pytest.approx(5, abs=0.6)
    assert not proc.killed
    proc.write("FLEET_CHECKPOINT_FILE", json.dumps({"branch": "fleet/j1", "commit": "wip"}))
    proc.exit(143)
    until(runner, clock, lambda: runner.exit_code is not None)
    release = server.bodies("release")
    assert release == [
        {
            "leaseEpoch": 1,
            "checkpoint": {"branch": "fleet/j1", "commit": "wip"},
            "reason": "factory shutting down",
        }
    ]
    assert server.called()[-1] == "deregister" and runner.exit_code == EXIT_OK
    assert runner.outcomes == {"released": 1}


def test_runner_stop_kills_an_engine_that_ignores_sigterm(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(grace_seconds=1)
    ticks(runner, clock, 2)
    spawner.last.exit_on_terminate = None
    runner.request_stop()
    until(runner, clock, lambda: runner.exit_code is not None)
    assert spawner.last.terminated and spawner.last.killed
    assert server.bodies("release")[0]["reason"] == "factory shutting down"


def test_runner_second_stop_aborts_at_once(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    runner.request_stop()
    runner.request_stop()
    runner.tick(clock.t)
    assert runner.exit_code == 130 and spawner.last.killed
    assert server.bodies("release")[0]["reason"] == "factory aborted"


def test_runner_release_is_retried_until_the_coordinator_answers(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(grace_seconds=1)
    ticks(runner, clock, 2)
    server.fail["release"] = [503, requests.ConnectionError("down")]
    runner.request_stop()
    until(runner, clock, lambda: runner.exit_code is not None)
    assert server.called().count("release") == 3 and runner.outcomes == {"released": 1}


# --- commands --------------------------------------------------------------------------------


def command(cid: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "kind": kind, "issuedBy": "operator:o", **extra}


def test_runner_pause_and_resume_are_acknowledged(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.commands.append(command("c1", "pause"))
    runner = make()
    runner.tick(clock.t)
    assert runner.paused and "queue-state" not in server.called()
    ticks(runner, clock, 2)
    assert server.bodies("heartbeat")[1]["ack"] == ["c1"] and server.commands == []
    ticks(runner, clock, 40)
    assert "claim" not in server.called()
    server.commands.append(command("c2", "resume"))
    until(runner, clock, lambda: "claim" in server.called())
    assert not runner.paused


def test_runner_executes_a_command_once_even_if_delivered_again(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    first = spawner.last
    server.commands.append(command("c1", "restart-engine"))
    until(runner, clock, lambda: len(spawner.processes) == 2)
    assert first.terminated and not first.killed
    assert spawner.last.env["FLEET_JOB_ID"] == "j1"  # same job, same work dir
    # The ack is lost once: the command comes back, and is not executed twice.
    server.commands.append(command("c1", "restart-engine"))
    ticks(runner, clock, 80)
    assert len(spawner.processes) == 2 and not server.commands


def test_runner_cancel_job_kills_the_engine_and_reports_nothing(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    before = len(server.about("j1"))
    server.commands.append(command("c9", "cancel-job", jobId="j1"))
    until(runner, clock, lambda: spawner.last.killed)
    ticks(runner, clock, 40)
    assert len(server.about("j1")) == before and runner.outcomes == {"cancelled": 1}
    assert "c9" in [a for b in server.bodies("heartbeat") for a in b["ack"]]


def test_runner_drain_finishes_then_leaves(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    server.commands.append(command("c3", "drain"))
    server.to_claim.append(grant(job("j2")))
    until(runner, clock, lambda: runner.draining)
    ticks(runner, clock, 20)
    assert runner.exit_code is None and set(runner.runs) == {"j1"}
    spawner.last.exit(0)
    until(runner, clock, lambda: runner.exit_code is not None)
    assert runner.exit_code == EXIT_OK and server.to_claim  # j2 never claimed


# --- refusal ----------------------------------------------------------------------------------


def test_runner_exits_when_its_token_is_refused(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make()
    ticks(runner, clock, 2)
    server.fail["renew"] = [(401, {"error": "unauthorized", "message": "token revoked"})]
    until(runner, clock, lambda: runner.exit_code is not None)
    assert runner.exit_code == EXIT_REFUSED and spawner.last.killed
    assert runner.outcomes == {"abandoned": 1}


def test_runner_exits_when_the_heartbeat_says_revoked(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.heartbeat_status = "revoked"
    runner = make()
    runner.tick(clock.t)
    assert runner.exit_code == EXIT_REFUSED and "claim" not in server.called()


def test_runner_stops_advertising_capabilities_the_allowlist_refuses(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    refusal = (403, {"error": "forbidden", "details": {"disallowed": ["has:git"]}})
    server.fail["heartbeat"] = [refusal]
    runner = make()
    ticks(runner, clock, 3)
    assert runner.capabilities == ["os:linux"]
    assert server.bodies("claim")[-1]["capabilities"] == ["os:linux"]


# --- once, state ---------------------------------------------------------------------------


def test_runner_once_runs_one_job_and_exits(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim += [grant(job("j1")), grant(job("j2"))]
    runner = make(once=True)
    runner.tick(clock.t)
    assert "queue-state" not in server.called()  # --once claims straight away
    spawner.last.exit(1)
    assert runner.run() == EXIT_JOB_FAILED
    assert server.called().count("claim") == 1 and len(server.to_claim) == 1


def test_runner_once_with_nothing_to_do_exits_zero(
    make: Callable[..., Runner], server: FakeCoordinator
) -> None:
    assert make(once=True).run() == EXIT_OK


def test_runner_writes_the_state_file_for_status(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock, tmp_path: Path
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(seats=2)
    ticks(runner, clock, 6)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["factoryId"] == "fa" and state["seats"] == 2 and state["status"] == "running"
    assert [j["jobId"] for j in state["jobs"]] == ["j1"] and state["jobs"][0]["stage"] == "building"
    assert state["lastHeartbeat"]["status"] == "live"
    assert state["gate"]["claims"] == 2 and state["gate"]["found"] == 1
    assert "flf_secret" not in json.dumps(state)


def test_runner_outcome_values_are_stable() -> None:
    assert [o.value for o in Outcome] == [
        "shipped",
        "failed",
        "retry",
        "released",
        "fenced",
        "cancelled",
        "lost",
        "abandoned",
    ]


# --- reviewer mode (run --review) ----------------------------------------------------------


def in_review(
    job_id: str = "r1",
    *,
    author: str = "fb",
    round_: int = 1,
    votes: tuple[str, ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A job built by ``author`` and waiting in review (as ``GET /fleet/jobs/{id}`` has it)."""
    fields.setdefault("review", {"approvals": 1, "distinctKind": False, "maxRounds": 3})
    return job(
        job_id,
        stage="review",
        checkpoint={"branch": f"fleet/{job_id}", "commit": "c0ffee1234567"},
        result={"exitCode": 0, "factory": author},
        reviewState={
            "round": round_,
            "outcome": "open",
            "author": author,
            "authorKind": "claude",
            "votes": [
                {"reviewer": who, "kind": "x", "verdict": "approve", "comments": "ok"}
                for who in votes
            ],
            "history": [
                {
                    "round": 1,
                    "outcome": "rejected",
                    "votes": [
                        {
                            "reviewer": "operator:ann",
                            "kind": "human",
                            "verdict": "reject",
                            "comments": "add tests for the empty case",
                        }
                    ],
                }
            ]
            if round_ > 1
            else [],
        },
        **fields,
    )


def test_reviewer_idle_factory_reviews_a_job_and_votes_with_the_engines_comments(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1", round_=2))
    runner = make(review=True)
    runner.tick(clock.t)
    assert server.called() == ["heartbeat", "queue-state", "claim", "list", "get"]
    assert runner.review is not None and not runner.runs  # a review takes no seat
    proc = spawner.last
    workdir = runner.config.work_root / "_reviews" / "r1"
    assert proc.cwd == workdir
    verdict_file = Path(proc.env["FLEET_REVIEW_VERDICT_FILE"])
    assert verdict_file == workdir / ".fleet" / "review-verdict.md"
    assert proc.env["FLEET_REVIEW_ROUND"] == "2" and proc.env["FLEET_JOB_ID"] == "r1"
    assert "FLEET_TOKEN" not in proc.env and "FLEET_LEASE_EPOCH" not in proc.env
    prompt = Path(proc.env["FLEET_PROMPT_FILE"]).read_text()
    for text in ("# Review: title of r1", "body of r1", "fleet/r1", "add tests for the empty case"):
        assert text in prompt
    assert str(verdict_file) in prompt and "exit with code 0 to approve" in prompt
    verdict_file.write_text("Looks right; the branch has the fix.\n")
    proc.exit(0)
    ticks(runner, clock, 1)
    assert server.bodies("review") == [
        {"verdict": "approve", "comments": "Looks right; the branch has the fix."}
    ]
    assert server.about("r1")[-1] == "review" and runner.review is None
    assert runner.reviews == {"approved": 1}
    assert runner.snapshot(clock.t)["reviews"] == {"approved": 1}


@pytest.mark.parametrize(
    ("code", "verdict"), [(0, "approve"), (1, "reject"), (2, "reject"), (75, None), (-9, None)]
)
def test_reviewer_maps_the_exit_code_to_the_verdict_comments_from_the_output(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    code: int,
    verdict: str | None,
) -> None:
    server.in_review.append(in_review("r1"))
    runner = make(review=True)
    runner.tick(clock.t)
    proc = spawner.last
    proc.log.write_text(
        "".join(f"line {n}\n" for n in range(100)) + "\x1b[31mverdict: meh\x1b[0m\n"
    )
    proc.exit(code)
    ticks(runner, clock, 2)
    assert runner.review is None
    if verdict is None:
        assert server.bodies("review") == [] and runner.reviews == {"abstained": 1}
        return
    [vote] = server.bodies("review")
    assert vote["verdict"] == verdict
    # No verdict file: the tail of the engine's output, colours stripped.
    assert vote["comments"].endswith("line 99\nverdict: meh")
    assert "line 60" not in vote["comments"]


def test_reviewer_skips_its_own_attempt_and_jobs_it_voted_on(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review += [
        in_review("mine", author="fa"),
        in_review("voted", votes=("factory:fa",)),
        in_review("kind", review={"approvals": 1, "distinctKind": True, "maxRounds": 3}),
    ]
    runner = make(review=True, capabilities=("os:linux", "engine:claude"))
    runner.tick(clock.t)
    assert server.called() == ["heartbeat", "queue-state", "claim", "list"]
    assert spawner.processes == [] and runner.review is None


def test_reviewer_does_not_review_when_a_claim_found_a_job(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1"))
    server.to_claim.append(grant(job("j1")))
    runner = make(review=True)
    ticks(runner, clock, 20)
    assert "list" not in server.called()  # the seat is busy: no poll, no listing
    assert [p.env["FLEET_JOB_ID"] for p in spawner.processes] == ["j1"]
    assert runner.review is None and list(runner.runs) == ["j1"]


def test_reviewer_claims_come_first_while_a_review_runs(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1"))
    runner = make(review=True)
    runner.tick(clock.t)
    assert runner.review is not None
    server.to_claim.append(grant(job("j1")))
    server.version += 1
    ticks(runner, clock, 20)
    assert list(runner.runs) == ["j1"] and runner.review is not None  # both run
    assert server.called().count("list") == 1


@pytest.mark.parametrize(
    "refusal",
    [
        (409, {"error": "already_voted"}),
        (409, {"error": "not_in_review"}),
        (403, {"error": "self_review"}),
        (403, {"error": "same_kind"}),
    ],
)
def test_reviewer_refusals_are_normal_and_the_job_is_not_retried_that_round(
    make: Callable[..., Runner],
    server: FakeCoordinator,
    spawner: FakeSpawner,
    clock: FakeClock,
    refusal: tuple[int, dict[str, Any]],
) -> None:
    server.in_review.append(in_review("r1"))
    server.fail["review"] = [refusal]
    runner = make(review=True)
    runner.tick(clock.t)
    spawner.last.exit(0)
    ticks(runner, clock, 2)
    assert runner.reviews == {"refused": 1} and runner.exit_code is None
    assert runner.last_error is None
    server.version += 1  # the gate moves: the claim finds nothing, the listing is repeated
    ticks(runner, clock, 20)
    assert server.called().count("list") >= 2 and server.called().count("get") == 1
    assert len(spawner.processes) == 1  # not reviewed again in round 1
    server.in_review[0] = in_review("r1", round_=2)  # rebuilt: a new round
    server.version += 1
    ticks(runner, clock, 20)
    assert len(spawner.processes) == 2 and runner.review is not None


def test_reviewer_lists_only_when_the_gate_moved_or_max_skip_passed(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(review=True, poll_seconds=1.0)
    ticks(runner, clock, 20)  # 10 s of idle polls at one version
    assert server.called().count("queue-state") >= 8
    assert server.called().count("list") == 1
    server.version += 1
    ticks(runner, clock, 4)
    assert server.called().count("claim") == 2 and server.called().count("list") == 2
    ticks(runner, clock, 2 * int(server.max_skip))  # past maxSkipSeconds
    assert server.called().count("list") == 3


def test_reviewer_mode_is_off_by_default(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1"))
    runner = make()
    server.version += 1
    ticks(runner, clock, 20)
    assert "list" not in server.called() and spawner.processes == []


def test_reviewer_stop_ends_a_review_without_a_vote(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1"))
    runner = make(review=True)
    runner.tick(clock.t)
    proc = spawner.last
    runner.request_stop()
    runner.tick(clock.t)
    assert proc.killed and runner.exit_code == EXIT_OK
    assert server.bodies("review") == [] and runner.reviews == {"stopped": 1}


def test_reviewer_vote_is_retried_while_the_coordinator_is_unreachable(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.in_review.append(in_review("r1"))
    server.fail["review"] = [503, requests.ConnectionError("down")]
    runner = make(review=True)
    runner.tick(clock.t)
    spawner.last.exit(1)
    until(runner, clock, lambda: runner.review is None)
    assert [b["verdict"] for b in server.bodies("review")] == ["reject"] * 3
    assert runner.reviews == {"rejected": 1}
