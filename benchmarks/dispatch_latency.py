"""Dispatch latency: how long a submitted job waits until a factory has claimed it, with the
queue-state gate on and off, factories polling at the CLI's default interval.

    make bench                                        # every part, one table
    .venv/bin/python -m benchmarks.dispatch_latency --help

The factories are a faithful reimplementation of ``fleet-factory run``'s poll loop
(``factory_cli.runner.Runner._poll_and_claim``), one thread each, not the CLI itself: the real
runner would also run an engine, heartbeat and report on every job, which adds load that is
not dispatch. What is the CLI's own:

- the HTTP client (``factory_cli.api.FleetClient``: one ``requests.Session``);
- the poll interval: ``RunConfig.poll_seconds`` (5 s) jittered the runner's way,
  ``poll_seconds * (0.8 + 0.4 u)``;
- with the gate **on**: ``GET /api/fleet/queue-state`` at every poll, and a claim only when
  ``factory_cli.gate.Gate`` says so (the version moved since the last empty claim, or a
  forced claim fell due at 75-100 % of ``maxSkipSeconds``);
- with the gate **off**: no gate read; ``POST /api/fleet/claim`` at every poll;
- after a claim that found a job, the next poll follows at once (the runner's "a seat may
  still be free"), and is a claim without a gate read (``Gate.claim_directly``: within a
  poll interval of a claim that found a job); the benchmark factories have a free seat at
  all times (a claimed job is set aside, not run), so a factory is never busy when a job
  arrives.

Jobs are submitted over HTTP one at a time (``POST /api/fleet/jobs``, which bumps the gate's
version), at random gaps. Latency: from just before the submit request is sent to the moment
the claiming factory has the claim's answer, on one clock (one process). The host's store
calls over the whole run (submits included) are counted too.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.common import (
    CAPABILITIES,
    RESULTS,
    BenchError,
    HttpApi,
    Latency,
    Target,
    add_common_arguments,
    enroll,
    fmt_calls,
    fmt_ratio,
    host_measure,
    machine_line,
    part_payload,
    per,
    ratio,
    run_standalone,
    submit,
    table,
)
from factory_cli.api import FleetClient
from factory_cli.gate import Gate
from factory_cli.runner import RunConfig

DEFAULT_OUT = RESULTS / "dispatch_latency.json"
QUICK = ["--jobs", "8", "--factories", "2"]
POLL_SECONDS = RunConfig.poll_seconds  # the CLI's default (``--poll-seconds`` overrides)


def poll_interval(poll_seconds: float, u: float) -> float:
    """``factory_cli.runner.Runner._poll_interval``: the poll interval, jittered +-20 %."""
    return poll_seconds * (0.8 + 0.4 * u)


@dataclass
class FactoryStats:
    gate_polls: int = 0
    claims: int = 0
    empty_claims: int = 0


class PollingFactory:
    """One factory's poll loop (see the module docstring), on its own thread."""

    def __init__(
        self,
        api: str,
        token: str,
        *,
        gate_on: bool,
        poll_seconds: float,
        seed: int,
        claimed: Callable[[str, float], None],
        stop: threading.Event,
    ) -> None:
        self.client = FleetClient(api, token, timeout=(5.0, 60.0))
        self.gate_on = gate_on
        self.poll_seconds = poll_seconds
        self.rand = random.Random(seed)
        self.claimed = claimed
        self.stop = stop
        self.stats = FactoryStats()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        gate = Gate()
        max_skip = 30.0
        # Factories started at different moments: a random phase within one interval.
        next_poll = time.monotonic() + self.poll_seconds * self.rand.random()
        try:
            while not self.stop.wait(max(0.0, next_poll - time.monotonic())):
                now = time.monotonic()
                version: int | None = None
                if self.gate_on and not gate.claim_directly(now, self.poll_seconds):
                    state = self.client.queue_state()
                    self.stats.gate_polls += 1
                    version = int(state.get("version", 0))
                    max_skip = float(state.get("maxSkipSeconds", max_skip))
                    if not gate.should_claim(version, now):
                        next_poll = now + poll_interval(self.poll_seconds, self.rand.random())
                        continue
                claim = self.client.claim(
                    capabilities=list(CAPABILITIES), seats=1, load=0, cost=0.5, version="bench"
                )
                answered = time.perf_counter()
                self.stats.claims += 1
                gate.claimed(
                    found=claim is not None,
                    version=version,
                    now=now,
                    max_skip=max_skip,
                    u=self.rand.random(),
                )
                if claim is None:
                    self.stats.empty_claims += 1
                    next_poll = now + poll_interval(self.poll_seconds, self.rand.random())
                    continue
                self.claimed(str(claim["job"]["id"]), answered)
                next_poll = now  # a seat is still free: claim again at once
        except Exception as exc:  # reported by the run, never swallowed
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.client.close()


@dataclass
class ModeRun:
    gate_on: bool
    factories: int
    jobs: int
    poll_seconds: float
    latencies: list[float]
    submit_latencies: list[float]
    stats: FactoryStats
    calls: dict[str, int]
    seconds: float
    unclaimed: int
    claimed_twice: list[str]

    @property
    def label(self) -> str:
        return "gate on" if self.gate_on else "gate off"

    def calls_per_job(self) -> dict[str, float]:
        return per(self.calls, self.jobs)

    def requests_per_job(self) -> float:
        return (self.stats.gate_polls + self.stats.claims) / self.jobs

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate_on": self.gate_on,
            "factories": self.factories,
            "jobs": self.jobs,
            "poll_seconds": self.poll_seconds,
            "dispatch_latency_ms": asdict(Latency.of(self.latencies)),
            "submit_latency_ms": asdict(Latency.of(self.submit_latencies)),
            "factory_requests": asdict(self.stats),
            "factory_requests_per_job": self.requests_per_job(),
            "store_calls": self.calls,
            "store_calls_per_job": self.calls_per_job(),
            "seconds": round(self.seconds, 1),
            "unclaimed": self.unclaimed,
            "claimed_twice": self.claimed_twice,
        }


def run_mode(
    target: Target,
    *,
    gate_on: bool,
    factories: int,
    jobs: int,
    poll_seconds: float,
    gaps: tuple[float, float],
    seed: int,
    say: Callable[[str], None],
) -> ModeRun:
    product = f"dispatch-{uuid.uuid4().hex[:6]}-{'gate' if gate_on else 'nogate'}"
    label = "gate on" if gate_on else "gate off"
    say(
        f"  dispatch, {label}: {factories} factories polling every ~{poll_seconds:g} s, {jobs} jobs"
    )
    with HttpApi(target.api) as api:
        tokens = [
            enroll(api, target.operator_token, product, f"d-{i:02d}") for i in range(factories)
        ]
    submitted: dict[str, float] = {}
    claimed: dict[str, float] = {}
    lock = threading.Lock()
    all_claimed = threading.Event()

    twice: list[str] = []

    def on_claim(job_id: str, at: float) -> None:
        with lock:
            if job_id in claimed:
                twice.append(job_id)
                return
            claimed[job_id] = at
            if len(claimed) >= jobs:
                all_claimed.set()

    stop = threading.Event()
    fleet = [
        PollingFactory(
            target.api,
            token,
            gate_on=gate_on,
            poll_seconds=poll_seconds,
            seed=seed * 1000 + i,
            claimed=on_claim,
            stop=stop,
        )
        for i, token in enumerate(tokens)
    ]
    arrivals = random.Random(seed)
    submit_seconds: list[float] = []
    began = time.perf_counter()
    with host_measure(target.api) as measured, HttpApi(target.api) as operator:
        for factory in fleet:
            factory.thread.start()
        try:
            time.sleep(poll_seconds)  # every factory has polled once: the fleet is idle
            for n in range(jobs):
                time.sleep(arrivals.uniform(*gaps))
                sent = time.perf_counter()
                job = submit(operator, target.operator_token, product, f"dispatch {n}")
                submit_seconds.append(time.perf_counter() - sent)
                with lock:
                    submitted[job["id"]] = sent
            # Every job is claimed within one poll interval, or one forced claim at worst.
            all_claimed.wait(poll_seconds * 1.2 + 30.0)
        finally:
            stop.set()
            for factory in fleet:
                factory.thread.join(60)
    errors = [e for f in fleet for e in f.errors]
    if errors:
        raise BenchError(f"dispatch ({label}): a factory failed: {errors[:3]}")
    latencies = [claimed[j] - sent for j, sent in submitted.items() if j in claimed]
    stats = FactoryStats()
    for factory in fleet:
        stats.gate_polls += factory.stats.gate_polls
        stats.claims += factory.stats.claims
        stats.empty_claims += factory.stats.empty_claims
    return ModeRun(
        gate_on=gate_on,
        factories=factories,
        jobs=jobs,
        poll_seconds=poll_seconds,
        latencies=latencies,
        submit_latencies=submit_seconds,
        stats=stats,
        calls=measured[0].calls,
        seconds=time.perf_counter() - began,
        unclaimed=len(set(submitted) - set(claimed)),
        claimed_twice=twice,
    )


@dataclass
class DispatchResult:
    runs: list[ModeRun]
    args: argparse.Namespace
    name: str = "dispatch_latency"
    notes: list[str] = field(default_factory=list)

    def report(self, info: Mapping[str, Any]) -> str:
        rows = []
        for r in self.runs:
            lat = Latency.of(r.latencies)
            rows.append(
                [
                    r.label,
                    str(r.factories),
                    str(len(r.latencies)),
                    f"{lat.p50_ms / 1000:.2f}",
                    f"{lat.p99_ms / 1000:.2f}",
                    f"{lat.max_ms / 1000:.2f}",
                    str(r.stats.gate_polls),
                    f"{r.stats.claims} ({r.stats.empty_claims} empty)",
                    fmt_calls(r.calls_per_job()),
                ]
            )
        lines = [
            "",
            f"Dispatch latency - {machine_line(info)}",
            f"poll every {self.runs[0].poll_seconds:g} s x (0.8..1.2) (factory_cli default), "
            f"jobs submitted one at a time {self.args.gap_min:g}-{self.args.gap_max:g} s apart",
            table(
                [
                    "mode",
                    "factories",
                    "jobs",
                    "p50 s",
                    "p99 s",
                    "max s",
                    "gate polls",
                    "claims",
                    "host store calls per job (submit included)",
                ],
                rows,
            ),
        ]
        on, off = self._modes()
        if on and off:
            lines.append(
                "gate on / off: p50 "
                + fmt_ratio(
                    ratio(Latency.of(on.latencies).p50_ms, Latency.of(off.latencies).p50_ms)
                )
                + ", store calls per job "
                + fmt_ratio(ratio(sum(on.calls.values()), sum(off.calls.values())))
                + ", queries per job "
                + fmt_ratio(ratio(on.calls.get("query", 0), off.calls.get("query", 0)))
            )
        for r in self.runs:
            if r.unclaimed:
                lines.append(f"{r.label}: {r.unclaimed} job(s) NOT claimed in time")
            if r.claimed_twice:
                lines.append(f"{r.label}: {len(r.claimed_twice)} job(s) CLAIMED TWICE")
        lines.append("")
        return "\n".join(lines)

    def _modes(self) -> tuple[ModeRun | None, ModeRun | None]:
        on = next((r for r in self.runs if r.gate_on), None)
        off = next((r for r in self.runs if not r.gate_on), None)
        return on, off

    def summary(self) -> list[tuple[str, str]]:
        rows = []
        for r in self.runs:
            lat = Latency.of(r.latencies)
            rows += [
                (
                    f"dispatch, {r.label} ({r.factories} factories, poll {r.poll_seconds:g} s): "
                    "submit->claimed p50 / p99",
                    f"{lat.p50_ms / 1000:.2f} / {lat.p99_ms / 1000:.2f} s (n={lat.samples})",
                ),
                (
                    f"dispatch, {r.label}: store calls per job (incl. submit)",
                    f"{sum(r.calls_per_job().values()):.1f} ({fmt_calls(r.calls_per_job())})",
                ),
            ]
        return rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "factories": self.args.factories,
            "jobs": self.args.jobs,
            "poll_seconds": self.args.poll_seconds,
            "gap_seconds": [self.args.gap_min, self.args.gap_max],
            "loop": "reimplementation of factory_cli.runner's poll loop "
            "(FleetClient, Gate, the runner's jitter)",
        }
        return part_payload(self.name, info, config, runs=[r.as_dict() for r in self.runs])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.dispatch_latency",
        description="Submit -> claimed latency with the queue-state gate on and off.",
    )
    p.add_argument("--factories", type=int, default=4, help="polling factories (4)")
    p.add_argument("--jobs", type=int, default=40, help="jobs submitted per mode (40)")
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=POLL_SECONDS,
        help=f"the factories' poll interval ({POLL_SECONDS:g}, the CLI's default)",
    )
    p.add_argument("--gap-min", type=float, default=1.0, help="min seconds between submits (1)")
    p.add_argument("--gap-max", type=float, default=4.0, help="max seconds between submits (4)")
    p.add_argument(
        "--modes", choices=["both", "on", "off"], default="both", help="gate on, off or both"
    )
    p.add_argument("--seed", type=int, default=7, help="random seed (arrivals and jitter)")
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> DispatchResult:
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.modes]
    runs = [
        run_mode(
            target,
            gate_on=gate_on,
            factories=args.factories,
            jobs=args.jobs,
            poll_seconds=args.poll_seconds,
            gaps=(args.gap_min, args.gap_max),
            seed=args.seed,  # the same arrivals and jitter in both modes
            say=say,
        )
        for gate_on in modes
    ]
    return DispatchResult(runs, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
