"""A demo that shows jobs flowing through a running local stack, over the real HTTP API.

It enrolls two demo factories the way real ones join (the operator token creates an
enrollment token per factory; each factory exchanges it for its own token), submits a few
sample jobs (one waiting on two others, one nobody can run, one that needs a review) and runs
the factories: register, poll the queue-state gate, claim, report building, renew, and ship —
each with its own token; an idle factory reviews the jobs waiting in review that it did not
build.

    python -m devtools.demo --api http://127.0.0.1:7071/api --token flo_... [--jobs 6]
    python -m devtools.demo ... --elastic     # and a gpu pool that autoscales from zero

With ``--elastic`` (``python -m devtools.stack --demo --elastic``) nobody enrolled can run the
gpu job at first: ``fleet-factory autoscale --max 2 --cap gpu`` (``factory_cli.autoscale``)
sees it in the product's demand, starts an ephemeral gpu factory that ships it, and the
factory leaves once idle: the fleet goes from zero gpu factories to one and back.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

PRODUCT = "demo"

SAMPLE_JOBS: list[dict[str, Any]] = [
    {"title": "Add retries to the HTTP client", "capabilities": ["python"], "priority": 6},
    {"title": "Write the changelog for 1.4", "capabilities": [], "priority": 3},
    {
        "title": "Fix flaky test_upload",
        "capabilities": ["python"],
        "priority": 8,
        "review": {"approvals": 1},
    },
    {"title": "Port the build script to node 20", "capabilities": ["node"], "priority": 5},
    {"title": "Train the ranking model", "capabilities": ["gpu"], "priority": 4},
]


def _headers(token: str) -> dict[str, str]:
    return {"X-Fleet-Product": PRODUCT, "Authorization": f"Bearer {token}"}


def enroll(
    session: requests.Session, api: str, operator_token: str, name: str, caps: list[str]
) -> str:
    """Enroll a demo factory and return its token. Already enrolled (a re-run on the same
    stack): the operator rotates its token instead."""
    operator = _headers(operator_token)
    issued = session.post(
        f"{api}/fleet/enrollment-tokens",
        json={"expiresInSeconds": 600, "capabilities": caps},
        headers=operator,
        timeout=30,
    )
    issued.raise_for_status()
    enrollment = issued.json()
    response = session.post(
        f"{api}/fleet/factories/enroll",
        json={"name": name, "capabilities": caps, "seats": 1, "version": "demo"},
        headers={"Authorization": f"Bearer {enrollment['token']}"},
        timeout=30,
    )
    if response.status_code == 409:
        # Enrolled by an earlier run: drop the unused enrollment token, rotate the factory's.
        session.delete(
            f"{api}/fleet/enrollment-tokens/{enrollment['id']}", headers=operator, timeout=30
        ).raise_for_status()
        response = session.post(
            f"{api}/fleet/factories/{name}/token/rotate", headers=operator, timeout=30
        )
    response.raise_for_status()
    return str(response.json()["token"])


class DemoFactory(threading.Thread):
    def __init__(
        self,
        api: str,
        name: str,
        token: str,
        caps: list[str],
        stop: threading.Event,
        say: Callable[[str], None],
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.api = api
        self.factory = name
        self.token = token
        self.caps = caps
        self.stop_event = stop
        self.say = say
        self.session = requests.Session()

    def _post(self, path: str, body: dict[str, Any], method: str = "POST") -> requests.Response:
        return self.session.request(
            method, f"{self.api}{path}", json=body, headers=_headers(self.token), timeout=30
        )

    def run(self) -> None:
        try:
            self._loop()
        except requests.RequestException as exc:
            if not self.stop_event.is_set():  # stopping: the stack may already be going
                self.say(f"{self.factory} lost the coordinator ({exc}); it stops")

    def _loop(self) -> None:
        self._post("/fleet/factories/register", {"capabilities": self.caps, "seats": 1})
        seen_version = -1
        last_claim = 0.0
        while not self.stop_event.is_set():
            state = self.session.get(
                f"{self.api}/fleet/queue-state", headers=_headers(self.token), timeout=30
            ).json()
            due = time.monotonic() - last_claim >= state["maxSkipSeconds"]
            if state["version"] == seen_version and not due:
                self.stop_event.wait(1.0)  # the gate says nothing new: one point read, done
                continue
            seen_version = state["version"]
            last_claim = time.monotonic()
            claim = self._post("/fleet/claim", {"capabilities": self.caps, "seats": 1})
            if claim.status_code == 204:
                self._review_waiting()
                continue
            claim.raise_for_status()
            self._work(claim.json())

    def _review_waiting(self) -> None:
        """Nothing to build: review what waits for a review and was built elsewhere."""
        listed = self.session.get(
            f"{self.api}/fleet/jobs",
            params={"stage": "review", "limit": "20"},
            headers=_headers(self.token),
            timeout=30,
        )
        listed.raise_for_status()
        for job in listed.json()["jobs"]:
            if (job.get("reviewState") or {}).get("author") == self.factory:
                continue  # its own work: another factory reviews it
            verdict = {"verdict": "approve", "comments": f"Reviewed by {self.factory}: fine."}
            voted = self._post(f"/fleet/jobs/{job['id']}/review", verdict)
            if voted.status_code == 200:
                self.say(f"{self.factory} approved {job['title']!r} -> {voted.json()['stage']}")

    def _work(self, claim: dict[str, Any]) -> None:
        job, epoch = claim["job"], claim["lease"]["epoch"]
        path = f"/fleet/jobs/{job['id']}"
        self.say(
            f"{self.factory} claimed {job['title']!r} (epoch {epoch}, score "
            f"{claim['score']['total']})"
        )
        self._post(path, {"leaseEpoch": epoch, "stage": "building"}, "PATCH").raise_for_status()
        for step in range(3):
            if self.stop_event.wait(random.uniform(0.5, 1.5)):
                self._post(f"{path}/lease/release", {"leaseEpoch": epoch, "reason": "demo stop"})
                return
            self._post(path, {"leaseEpoch": epoch, "checkpoint": {"step": step + 1}}, "PATCH")
            self._post(f"{path}/lease/renew", {"leaseEpoch": epoch}).raise_for_status()
        done = self._post(
            path, {"leaseEpoch": epoch, "stage": "shipped", "result": {"exitCode": 0}}, "PATCH"
        )
        done.raise_for_status()
        if done.json()["stage"] == "review":
            self.say(f"{self.factory} finished {job['title']!r}: waiting for a review")
        else:
            self.say(f"{self.factory} shipped {job['title']!r}")


@dataclass
class DemoRun:
    """The running demo factories."""

    stop_event: threading.Event
    factories: list[DemoFactory]
    autoscaler: subprocess.Popen[bytes] | None = None  # --elastic

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the factories and wait for them (a job in hand is released first), so the
        stack is not stopped under them; the autoscaler stops its children the same way."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        if self.autoscaler is not None and self.autoscaler.poll() is None:
            self.autoscaler.terminate()  # SIGTERM: its children drain and deregister
        for factory in self.factories:
            factory.join(max(0.0, deadline - time.monotonic()))
        if self.autoscaler is not None:
            try:
                self.autoscaler.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.autoscaler.kill()
                self.autoscaler.wait()


def start_autoscaler(api: str, operator_token: str, log_path: str) -> subprocess.Popen[bytes]:
    """``fleet-factory autoscale`` for the demo's gpu work: up to 2 ephemeral factories with
    the demo engine and ``gpu``, each leaving after 10 s with nothing to do. Its output goes to
    ``log_path``; the operator token reaches it by its environment, never its command line."""
    env = {
        **os.environ,
        "FLEET_API": api,
        "FLEET_OPERATOR_TOKEN": operator_token,
        "FLEET_PRODUCT": PRODUCT,
    }
    if os.geteuid() == 0 and not env.get("FLEET_ENGINE_USER"):
        # A factory refuses to run engines as root; the demo engine is a stand-in that runs no
        # agent (factory_cli.demo_engine), so on a root machine (a container, CI) it may.
        env["FLEET_ALLOW_ROOT_ENGINE"] = "1"
    command = [
        sys.executable,
        "-m",
        "factory_cli",
        "autoscale",
        "--max",
        "2",
        "--engine",
        "demo",
        "--cap",
        "gpu",
        "--idle",
        "10",
        "--children-dir",
        tempfile.mkdtemp(prefix="fleet-demo-autoscale-"),
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_demo(
    api: str,
    operator_token: str,
    *,
    jobs: int = 5,
    say: Callable[[str], None] = print,
    elastic: str | None = None,
) -> DemoRun:
    """Enroll two demo factories, submit the sample jobs and start the factories; returns
    what stops them. Idempotent: re-running reuses the same jobs (idempotency keys) and
    rotates the factories' tokens. ``elastic``: a log path, and the gpu pool autoscales (see
    the module docstring)."""
    session = requests.Session()
    stop = threading.Event()
    fleet = [("demo-linux", ["python", "node"]), ("demo-mac", ["python"])]
    tokens = {}
    for name, caps in fleet:
        # Enrolled (and so registered) first, so submit can tell which jobs no factory can
        # ever run.
        tokens[name] = enroll(session, api, operator_token, name, caps)
        say(f"enrolled {name} ({', '.join(caps)})")
    submitted = []
    for n, sample in enumerate(SAMPLE_JOBS[:jobs]):
        body = {**sample, "body": f"Demo job {n}.", "idempotencyKey": f"demo-{n}"}
        response = session.post(
            f"{api}/fleet/jobs", json=body, headers=_headers(operator_token), timeout=30
        )
        response.raise_for_status()
        payload = response.json()
        submitted.append(payload["job"]["id"])
        note = f"  ({payload['warning']})" if "warning" in payload else ""
        say(f"submitted {sample['title']!r} -> {payload['job']['stage']}{note}")
    if len(submitted) >= 2:
        release = {
            "title": "Release 1.4",
            "body": "Tag and publish once the fixes are in.",
            "deps": submitted[:2],
            "idempotencyKey": "demo-release",
        }
        response = session.post(
            f"{api}/fleet/jobs", json=release, headers=_headers(operator_token), timeout=30
        )
        response.raise_for_status()
        say(
            f"submitted 'Release 1.4' (waits for the first two) -> "
            f"{response.json()['job']['stage']}"
        )
    factories = [DemoFactory(api, name, tokens[name], caps, stop, say) for name, caps in fleet]
    for factory in factories:
        factory.start()
    autoscaler = None
    if elastic is not None:
        autoscaler = start_autoscaler(api, operator_token, elastic)
        say(f"autoscaling gpu factories from zero (up to 2; log: {elastic})")
    return DemoRun(stop, factories, autoscaler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api", default="http://127.0.0.1:7071/api")
    parser.add_argument(
        "--token",
        default=os.environ.get("FLEET_OPERATOR_TOKEN"),
        help="an operator token (env FLEET_OPERATOR_TOKEN; the stack command prints one)",
    )
    parser.add_argument("--jobs", type=int, default=len(SAMPLE_JOBS))
    parser.add_argument(
        "--elastic",
        action="store_true",
        help="also autoscale gpu factories from zero for the gpu job (fleet-factory autoscale)",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("an operator token is needed: --token or FLEET_OPERATOR_TOKEN")
    log = os.path.join(tempfile.gettempdir(), "fleet-demo-autoscale.log")
    demo = run_demo(args.api, args.token, jobs=args.jobs, elastic=log if args.elastic else None)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
