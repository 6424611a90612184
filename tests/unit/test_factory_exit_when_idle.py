# ruff: noqa: F811
# (the pytest fixtures imported from test_cli_runner are parameters here)
"""``fleet-factory run --exit-when-idle SECONDS``: an ephemeral factory leaves the fleet once
it has held nothing and every poll and claim found nothing for SECONDS in a row. The run
loop against the fake coordinator and a fake clock (nothing sleeps), then the command itself
with the same clock in place of the system's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

import factory_cli.cli
from factory_cli.cli import main
from factory_cli.config import load, positive_seconds
from factory_cli.idle import IdleClock
from factory_cli.runner import EXIT_NOT_DEREGISTERED, EXIT_OK, EXIT_REFUSED, Runner
from factory_cli.testing import FakeClock, FakeSpawner
from tests.support.cli import enrolled
from tests.unit.test_cli_runner import (  # noqa: F401  (fixtures)
    API,
    FakeCoordinator,
    clock,
    grant,
    job,
    make,
    rsps,  # the fake coordinator's: unlike the unit conftest's, it lets routes go unused
    server,
    spawner,
    ticks,
    until,
)

UNAVAILABLE = (503, {"error": "unavailable", "message": "the store is down"})


def run_loop(runner: Runner, clock: FakeClock, *, until_t: float) -> None:
    """What ``Runner.run`` does, stopped at ``until_t`` if the runner has not exited."""
    while runner.exit_code is None and clock.t < until_t:
        runner.tick(clock.t)
        if runner.exit_code is None:
            clock.wait(runner.sleep_for(clock.t))


def finished(runner: Runner, clock: FakeClock, job_id: str) -> float:
    """Tick until ``job_id`` is no longer held; the time it was let go."""
    until(runner, clock, lambda: job_id not in runner.runs)
    return clock.t


def left_at(server: FakeCoordinator) -> float:
    """When the one deregistration was made (the loop wakes for the idle deadline)."""
    times = server.times("deregister")
    assert len(times) == 1, times
    return times[0]


def assert_left(server: FakeCoordinator, deadline: float) -> None:
    left = left_at(server)
    assert deadline <= left < deadline + 0.1, (left, deadline)


# --- the idle clock ---------------------------------------------------------------------


def test_idle_clock_a_stretch_starts_at_the_first_empty_answer_and_resets_on_work() -> None:
    idle = IdleClock(10.0)
    assert idle.deadline() is None and not idle.expired(1e9)
    idle.found_nothing(100.0)
    idle.found_nothing(105.0)  # later empty answers do not move the start
    assert idle.deadline() == 110.0 and not idle.expired(109.9) and idle.expired(110.0)
    assert idle.view(104.0) == {"exitAfterSeconds": 10.0, "idleSeconds": 4.0}
    idle.reset()
    assert idle.deadline() is None and idle.view(120.0)["idleSeconds"] is None
    idle.found_nothing(120.0)
    assert idle.deadline() == 130.0


# --- the run loop -------------------------------------------------------------------------


def test_exit_when_idle_no_work_for_seconds_deregisters_once_and_exits_zero(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=2.0)
    assert runner.run() == EXIT_OK
    assert_left(server, server.times("claim")[0] + 2.0)  # from the first empty answer
    assert server.called()[-1] == "deregister"
    assert runner.left_idle and runner.deregister_error is None
    assert runner.snapshot(clock.t)["status"] == "stopped"


def test_exit_when_idle_gate_skips_count_as_finding_nothing(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=12.0, poll_seconds=1.0)
    assert runner.run() == EXIT_OK
    assert server.called().count("claim") == 1  # every later poll: the gate said skip
    assert server.called().count("queue-state") >= 10
    assert_left(server, server.times("claim")[0] + 12.0)


def test_exit_when_idle_work_before_the_deadline_resets_the_clock(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=10.0)
    runner.tick(clock.t)
    start = clock.t
    assert runner.idle is not None and runner.idle.since == start
    clock.advance(4.0)
    server.to_claim.append(grant(job("j1")))
    server.version += 1
    until(runner, clock, lambda: "j1" in runner.runs)
    assert clock.t < start + 10.0 and runner.idle.since is None
    ticks(runner, clock, 2)
    spawner.last.exit(0)
    done = finished(runner, clock, "j1")
    assert done < start + 10.0  # a short job: the first deadline has not even come
    run_loop(runner, clock, until_t=done + 60.0)
    assert runner.exit_code == EXIT_OK and runner.outcomes == {"shipped": 1}
    assert_left(server, done + 10.0)  # counted again from when it finished


def test_exit_when_idle_a_job_running_at_the_deadline_keeps_the_factory(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=8.0)
    runner.tick(clock.t)
    deadline = clock.t + 8.0
    server.to_claim.append(grant(job("j1")))
    server.version += 1
    until(runner, clock, lambda: "j1" in runner.runs)
    assert clock.t < deadline
    ticks(runner, clock, 120)  # a minute: far past that deadline
    assert runner.exit_code is None and "deregister" not in server.called()
    spawner.last.exit(0)
    done = finished(runner, clock, "j1")
    run_loop(runner, clock, until_t=done + 60.0)
    assert runner.exit_code == EXIT_OK
    assert_left(server, done + 8.0)


def test_exit_when_idle_a_busy_seat_among_free_ones_keeps_the_clock_stopped(
    make: Callable[..., Runner], server: FakeCoordinator, spawner: FakeSpawner, clock: FakeClock
) -> None:
    server.to_claim.append(grant(job("j1")))
    runner = make(exit_when_idle=3.0, seats=2, poll_seconds=1.0)
    until(runner, clock, lambda: "j1" in runner.runs)
    ticks(runner, clock, 40)  # the free seat's claims and polls find nothing meanwhile
    assert runner.exit_code is None and runner.idle is not None and runner.idle.since is None
    spawner.last.exit(0)
    done = finished(runner, clock, "j1")
    run_loop(runner, clock, until_t=done + 60.0)
    assert_left(server, done + 3.0)


def test_exit_when_idle_an_unreachable_coordinator_is_not_an_empty_queue(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=3.0, poll_seconds=1.0)
    runner.tick(clock.t)
    assert runner.idle is not None and runner.idle.since == clock.t
    server.fail["queue-state"] = [UNAVAILABLE] * 3
    clock.advance(1.0)
    runner.tick(clock.t)
    assert runner.idle.since is None  # the streak is broken
    run_loop(runner, clock, until_t=clock.t + 120.0)
    assert runner.exit_code == EXIT_OK
    polls = server.times("queue-state")  # one answered, three failed, then answered again
    assert_left(server, polls[4] + 3.0)


def test_exit_when_idle_a_pause_stops_the_clock_until_resumed(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=60.0)
    runner.tick(clock.t)
    assert runner.idle is not None and runner.idle.since == clock.t
    server.commands.append({"id": "c1", "kind": "pause"})  # with the next heartbeat
    ticks(runner, clock, 400)  # 200 s: far past the first deadline
    assert runner.paused and runner.exit_code is None and runner.idle.since is None
    asked = clock.t
    server.commands.append({"id": "c2", "kind": "resume"})
    run_loop(runner, clock, until_t=clock.t + 300.0)
    resumed = next(t for t in server.times("heartbeat") if t >= asked)
    assert runner.exit_code == EXIT_OK
    assert_left(server, resumed + 60.0)  # the poll right after the resume found nothing


def test_exit_when_idle_without_the_flag_never_exits_on_idleness(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make()
    assert runner.idle is None
    run_loop(runner, clock, until_t=clock.t + 3600.0)
    assert runner.exit_code is None and "deregister" not in server.called()
    assert server.called().count("queue-state") > 600  # an hour of polls, every 5 s
    assert runner.snapshot(clock.t)["idle"] is None


def test_exit_when_idle_is_ignored_with_once(
    make: Callable[..., Runner], server: FakeCoordinator
) -> None:
    runner = make(once=True, exit_when_idle=1.0)
    assert runner.idle is None and runner.run() == EXIT_OK
    assert "deregister" not in server.called() and not runner.left_idle


def test_exit_when_idle_a_signal_keeps_todays_behaviour(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    runner = make(exit_when_idle=30.0)
    runner.tick(clock.t)
    clock.advance(5.0)
    runner.request_stop()
    assert runner.run() == EXIT_OK
    assert "deregister" not in server.called() and not runner.left_idle


def test_exit_when_idle_retries_an_unreachable_coordinator_then_deregisters(
    make: Callable[..., Runner], server: FakeCoordinator, clock: FakeClock
) -> None:
    server.fail["deregister"] = [UNAVAILABLE]
    runner = make(exit_when_idle=2.0)
    assert runner.run() == EXIT_OK
    first, second = server.times("deregister")
    assert second > first and runner.deregister_error is None
    assert server.called().count("claim") == 1  # leaving: nothing more claimed meanwhile


def test_exit_when_idle_a_401_after_a_lost_reply_means_the_first_try_went_through(
    make: Callable[..., Runner], server: FakeCoordinator
) -> None:
    server.fail["deregister"] = [
        requests.ReadTimeout("read timed out"),
        (401, {"error": "unauthorized", "message": "token revoked"}),
    ]
    runner = make(exit_when_idle=2.0)
    assert runner.run() == EXIT_OK and runner.deregister_error is None
    assert server.called().count("deregister") == 2


def test_exit_when_idle_a_401_at_the_first_try_is_a_refusal(
    make: Callable[..., Runner], server: FakeCoordinator
) -> None:
    server.fail["deregister"] = [(401, {"error": "unauthorized", "message": "token revoked"})]
    runner = make(exit_when_idle=2.0)
    assert runner.run() == EXIT_REFUSED and not runner.left_idle


@pytest.mark.parametrize(
    ("failures", "tries"),
    [
        ([requests.ConnectionError("connection refused")] * 3, 3),
        ([UNAVAILABLE] * 3, 3),
        ([(403, {"error": "forbidden", "message": "a factory may deregister only itself"})], 1),
    ],
)
def test_exit_when_idle_a_failing_deregister_exits_non_zero(
    make: Callable[..., Runner], server: FakeCoordinator, failures: list[Any], tries: int
) -> None:
    server.fail["deregister"] = list(failures)
    runner = make(exit_when_idle=2.0)
    assert runner.run() == EXIT_NOT_DEREGISTERED != EXIT_OK
    assert server.called().count("deregister") == tries
    assert runner.left_idle and runner.deregister_error
    assert "DELETE /fleet/factories/fa" in runner.deregister_error


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """`run` on the fake clock: its waits move time instead of sleeping."""
    clock = FakeClock()
    monkeypatch.setattr(factory_cli.cli, "SystemClock", lambda: clock)
    yield clock


def coordinator(rsps: responses.RequestsMock, deregister: dict[str, Any]) -> None:
    beat = {"status": "live", "cadence": {"heartbeatSeconds": 30}, "commands": []}
    rsps.post(f"{API}/fleet/factories/heartbeat", json=beat)
    rsps.get(f"{API}/fleet/queue-state", json={"version": 1, "maxSkipSeconds": 30})
    rsps.post(f"{API}/fleet/claim", status=204)
    rsps.delete(f"{API}/fleet/factories/fa", **deregister)


def test_cli_run_exit_when_idle_prints_one_line_and_exits_zero(
    rsps: responses.RequestsMock,
    env: dict[str, str],
    fake_time: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enrolled(env)
    coordinator(rsps, {"json": {"factory": "fa", "deregistered": True}})
    assert main(["run", "--engine-cmd", "true", "--exit-when-idle", "60"], env=env) == 0
    out, err = capsys.readouterr()
    assert out == "idle for 60 s: deregistered, exiting\n"
    assert "Traceback" not in err
    assert [c.request.method for c in rsps.calls].count("DELETE") == 1
    assert fake_time.t >= 1060.0


def test_cli_run_exit_when_idle_from_the_environment(
    rsps: responses.RequestsMock,
    env: dict[str, str],
    fake_time: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enrolled(env)
    env["FLEET_EXIT_WHEN_IDLE"] = "1.5"
    coordinator(rsps, {"json": {"factory": "fa", "deregistered": True}})
    assert main(["run", "--engine-cmd", "true"], env=env) == 0
    assert capsys.readouterr().out == "idle for 1.5 s: deregistered, exiting\n"


def test_cli_run_exit_when_idle_unreachable_at_the_end_is_a_clear_error(
    rsps: responses.RequestsMock,
    env: dict[str, str],
    fake_time: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enrolled(env)
    coordinator(rsps, {"body": requests.ConnectionError("connection refused")})
    assert main(["run", "--engine-cmd", "true", "--exit-when-idle", "2"], env=env) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "fleet-factory: idle for 2 s, but not deregistered (" in err
    assert "connection refused" in err and "fa still in the fleet" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-5", "0.0", "abc", "", "nan", "inf", "1e400"])
def test_cli_run_exit_when_idle_refuses_what_is_not_a_positive_number_of_seconds(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], value: str
) -> None:
    enrolled(env)
    with pytest.raises(SystemExit) as done:
        main(["run", "--engine-cmd", "true", f"--exit-when-idle={value}"], env=env)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--exit-when-idle" in err and "positive number of seconds" in err


def test_cli_run_exit_when_idle_refuses_a_bad_environment_value(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    env["FLEET_EXIT_WHEN_IDLE"] = "soon"
    assert main(["run", "--engine-cmd", "true"], env=env) == 2
    err = capsys.readouterr().err
    assert "exit_when_idle" in err and "FLEET_EXIT_WHEN_IDLE" in err


def test_cli_run_exit_when_idle_and_once_do_not_mix(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    with pytest.raises(SystemExit) as done:
        main(["run", "--once", "--exit-when-idle", "5"], env=env)
    assert done.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_cli_run_help_documents_exit_when_idle(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--exit-when-idle SECONDS" in out and "FLEET_EXIT_WHEN_IDLE" in out


@pytest.mark.parametrize("raw", ["1", "0.5", 2, "1e3"])
def test_positive_seconds_accepts_finite_positive_numbers(raw: Any) -> None:
    assert positive_seconds(raw) == float(raw)


def test_cli_run_without_the_flag_has_no_idle_setting(env: dict[str, str]) -> None:
    assert load({}, env).exit_when_idle is None
