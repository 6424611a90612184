"""A demo engine: real work on a git repository, no AI. ``python -m factory_cli.demo_engine``
(the ``--engine demo`` preset).

Run by the factory in a job's work directory, it:

1. makes the work directory a git repository (``git init`` if there is none; with a
   ``repo: URL`` line in the job body, that repository is its ``origin``);
2. works on the branch ``fleet/{job id}`` — resuming the branch of the previous attempt's
   checkpoint when one is given (fetched from ``origin`` when there is one), else a new
   branch from ``main``;
3. in each step (``FLEET_DEMO_STEPS``, default 3, ``FLEET_DEMO_STEP_SECONDS`` apart, default
   0.5) appends a line derived from the job body to ``work/{job id}.md``, commits it (and
   pushes the branch to ``origin``), then writes a checkpoint ``{branch, commit, step}``,
   progress (token and cost counts, the last line) and an agent event;
4. exits 0.

Switches, from the environment or a line of the job body:

- ``FLEET_DEMO_FAIL=1`` or ``demo: fail`` — exit 1 after the first step;
- ``FLEET_DEMO_HANG=1`` or ``demo: hang`` — hang after the first step (until stopped);
- ``demo: hang-once`` — hang unless resuming from a checkpoint (the next attempt finishes);
- ``FLEET_DEMO_HANG_SILENT=1`` or ``demo: hang-silent`` — hang at once, before doing or saying
  anything (no output, no progress, no checkpoint, no event; stopped, it exits without a
  word): what the self-healer calls *stalled*. Started again (``restart-engine``), it hangs
  again;
- ``demo: hang-silent-first`` — the same, on the job's first attempt only (lease epoch 1,
  however often that attempt's engine is restarted); a later attempt, on this factory or
  another, does the work.

It stops by itself if the factory that started it (``FLEET_FACTORY_PID``) is gone.

Review mode: when the factory runs it to review a job (``run --review``), it is given
``FLEET_REVIEW_VERDICT_FILE``. It then touches no repository: it writes a short review of
the author's checkpoint (branch, commit) to that file and exits 0 (approve) — or 1 (reject)
when the job body contains ``[demo: reject]``, or ``[demo: reject-once]`` in review round 1
(``FLEET_REVIEW_ROUND``), so the rebuilt attempt is approved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "fleet demo engine",
    "GIT_AUTHOR_EMAIL": "demo-engine@fleet.invalid",
    "GIT_COMMITTER_NAME": "fleet demo engine",
    "GIT_COMMITTER_EMAIL": "demo-engine@fleet.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}
MARKER = re.compile(r"^\s*demo:\s*([a-z-]+)\s*$", re.MULTILINE | re.IGNORECASE)
REJECT = "[demo: reject]"
REJECT_ONCE = "[demo: reject-once]"
REPO = re.compile(r"^\s*repo:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)
TOKENS_PER_STEP = 1200
USD_PER_TOKEN = 3e-6


class DemoError(Exception):
    pass


def markers(body: str) -> set[str]:
    return {m.lower() for m in MARKER.findall(body)}


def remote_of(body: str) -> str | None:
    found = REPO.search(body)
    return found.group(1) if found else None


def write_json(path: Path, data: Any) -> None:
    """Atomically: the factory never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Git:
    def __init__(self, workdir: Path) -> None:
        if shutil.which("git") is None:
            raise DemoError("the demo engine needs git on PATH")
        self.workdir = workdir
        self.env = {**os.environ, **GIT_ENV}

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise DemoError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip() if done.returncode == 0 else ""

    def ok(self, *args: str) -> bool:
        return (
            subprocess.run(
                ["git", *args],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )


class Engine:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.job_id = env.get("FLEET_JOB_ID", "job")
        self.epoch = env.get("FLEET_LEASE_EPOCH", "?")
        self.factory = env.get("FLEET_FACTORY_ID", "?")
        self.workdir = Path(env.get("FLEET_WORKDIR") or os.getcwd())
        self.checkpoint_file = _path(env.get("FLEET_CHECKPOINT_FILE"))
        self.progress_file = _path(env.get("FLEET_PROGRESS_FILE"))
        self.events_file = _path(env.get("FLEET_EVENTS_FILE"))
        manifest = read_json(_path(env.get("FLEET_MANIFEST_FILE"))) or {}
        self.title = str(manifest.get("title") or self.job_id)
        self.body = str(manifest.get("body") or "")
        self.switches = markers(self.body)
        self.remote = remote_of(self.body) or env.get("FLEET_DEMO_REMOTE") or None
        self.steps = max(1, int(env.get("FLEET_DEMO_STEPS") or 3))
        self.step_seconds = max(0.0, float(env.get("FLEET_DEMO_STEP_SECONDS") or 0.5))
        self.factory_pid = int(env.get("FLEET_FACTORY_PID") or 0)
        self.tokens = 0

    # --- outputs the factory forwards ----------------------------------------------------

    def say(self, line: str) -> None:
        print(line, flush=True)

    def event(self, kind: str, payload: Any) -> None:
        if self.events_file is None:
            return
        with self.events_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"type": kind, "payload": payload}) + "\n")

    def progress(self, line: str) -> None:
        if self.progress_file is not None:
            write_json(
                self.progress_file,
                {
                    "tokens": self.tokens,
                    "costUsd": round(self.tokens * USD_PER_TOKEN, 6),
                    "lastOutputLine": line,
                    "outputs": [f"work/{self.job_id}.md"],
                },
            )

    def checkpoint(self, data: dict[str, Any]) -> None:
        if self.checkpoint_file is not None:
            write_json(self.checkpoint_file, data)

    # --- the work -----------------------------------------------------------------------

    def factory_gone(self) -> bool:
        if not self.factory_pid or os.name != "posix":
            return False
        try:
            os.kill(self.factory_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.factory_gone():
                self.say("the factory is gone: stopping")
                raise SystemExit(0)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def hang(self) -> None:
        self.say("hanging as asked (demo: hang)")
        self.event("hang", {"step": "after the first"})
        while True:
            self.pause(3600)

    def hangs_silently(self) -> bool:
        """Whether this start is to hang without a word (``hang-silent``, or
        ``hang-silent-first`` on the first attempt)."""
        if self.env.get("FLEET_DEMO_HANG_SILENT") == "1" or "hang-silent" in self.switches:
            return True
        return "hang-silent-first" in self.switches and self.epoch == "1"

    def hang_silently(self) -> int:
        """Hang, writing nothing anywhere, until stopped (quietly) or the factory is gone."""
        signal.signal(signal.SIGTERM, _quietly_terminated)
        while not self.factory_gone():
            time.sleep(0.2)
        return 0

    def prepare_repo(self, git: Git) -> None:
        if not (self.workdir / ".git").exists():
            git("init", "-q")
        exclude = self.workdir / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        if ".fleet/" not in (exclude.read_text() if exclude.exists() else ""):
            with exclude.open("a", encoding="utf-8") as handle:
                handle.write("\n.fleet/\n")
        if self.remote:
            if git.ok("remote", "get-url", "origin"):
                git("remote", "set-url", "origin", self.remote)
            else:
                git("remote", "add", "origin", self.remote)

    def resume(self, git: Git, checkpoint: dict[str, Any]) -> int | None:
        """Check out the checkpoint's branch; the step to go on from, or None."""
        branch = str(checkpoint["branch"])
        commit = str(checkpoint.get("commit") or "")
        found = False
        if self.remote and git.ok("fetch", "-q", "origin", branch):
            git("checkout", "-q", "-B", branch, "FETCH_HEAD")
            found = True
        elif git.ok("rev-parse", "--verify", "-q", f"refs/heads/{branch}"):
            git("checkout", "-q", branch)
            found = True
        if found and commit and not git.ok("merge-base", "--is-ancestor", commit, "HEAD"):
            found = False
        self.event("resume", {"branch": branch, "commit": commit, "found": found})
        if not found:
            self.say(f"checkpoint branch {branch} at {commit[:12]} not found: starting over")
            return None
        self.say(f"resuming {branch} at {commit[:12] or 'its head'}")
        return int(checkpoint.get("step") or 0)

    def start_branch(self, git: Git, branch: str) -> None:
        if self.remote and git.ok("fetch", "-q", "origin", "main"):
            git("checkout", "-q", "-B", "main", "FETCH_HEAD")
        elif not git.ok("rev-parse", "--verify", "-q", "HEAD"):
            readme = self.workdir / "README.md"
            readme.write_text("# demo workspace\n", encoding="utf-8")
            git("add", "README.md")
            git("commit", "-q", "-m", "initial commit")
            if self.remote:
                git("push", "-q", "origin", "HEAD:refs/heads/main", check=False)
        git("checkout", "-q", "-B", branch)

    def run(self) -> int:
        if self.hangs_silently():
            return self.hang_silently()
        git = Git(self.workdir)
        self.prepare_repo(git)
        branch = f"fleet/{self.job_id}"
        previous = read_json(self.checkpoint_file)
        resumed_at: int | None = None
        if isinstance(previous, dict) and previous.get("branch"):
            resumed_at = self.resume(git, previous)
            branch = str(previous["branch"]) if resumed_at is not None else branch
        if resumed_at is None:
            self.start_branch(git, branch)
        fail = self.env.get("FLEET_DEMO_FAIL") == "1" or "fail" in self.switches
        hang = self.env.get("FLEET_DEMO_HANG") == "1" or "hang" in self.switches
        if "hang-once" in self.switches and resumed_at is None:
            hang = True
        first = resumed_at or 0
        self.tokens = first * TOKENS_PER_STEP
        lines = [ln.strip() for ln in self.body.splitlines() if ln.strip()] or [self.title]
        notes = self.workdir / "work" / f"{self.job_id}.md"
        notes.parent.mkdir(parents=True, exist_ok=True)
        if not notes.exists():
            notes.write_text(f"# {self.title}\n\n", encoding="utf-8")
        self.event("plan", {"steps": self.steps, "from": first, "branch": branch})
        for step in range(first, self.steps):
            line = lines[step % len(lines)]
            with notes.open("a", encoding="utf-8") as handle:
                handle.write(
                    f"- step {step + 1}/{self.steps} by {self.factory} at epoch {self.epoch}: "
                    f"{len(line.split())} words from: {line[:80]}\n"
                )
            git("add", str(notes.relative_to(self.workdir)))
            git("commit", "-q", "-m", f"{self.title[:60]}: step {step + 1}/{self.steps}")
            commit = git("rev-parse", "HEAD")
            if self.remote:
                git("push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
            self.tokens += TOKENS_PER_STEP
            said = f"step {step + 1}/{self.steps} committed {commit[:12]} on {branch}"
            self.checkpoint({"branch": branch, "commit": commit, "step": step + 1})
            self.progress(said)
            self.event("commit", {"step": step + 1, "commit": commit, "branch": branch})
            self.say(said)
            if step == first and hang:
                self.hang()
            if step == first and fail:
                self.say("failing as asked (demo: fail)")
                self.event("fail", {"step": step + 1})
                return 1
            if step + 1 < self.steps:
                self.pause(self.step_seconds)
        self.event("done", {"branch": branch, "commit": git("rev-parse", "HEAD")})
        self.say(f"done: {branch}")
        return 0


def review(env: dict[str, str]) -> int:
    """Review mode: a deterministic verdict, written to ``FLEET_REVIEW_VERDICT_FILE``."""
    verdict_file = Path(env["FLEET_REVIEW_VERDICT_FILE"])
    manifest = read_json(_path(env.get("FLEET_MANIFEST_FILE"))) or {}
    body = str(manifest.get("body") or "")
    job_id = str(manifest.get("id") or env.get("FLEET_JOB_ID") or "job")
    checkpoint = manifest.get("checkpoint")
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    round_ = int(env.get("FLEET_REVIEW_ROUND") or 1)
    where = f"branch {checkpoint.get('branch') or '(none)'}"
    if checkpoint.get("commit"):
        where += f" at {str(checkpoint['commit'])[:12]}"
    reject = REJECT in body or (REJECT_ONCE in body and round_ <= 1)
    if reject:
        text = (
            f"Changes requested on {job_id} ({where}), round {round_}: the demo reviewer "
            "was asked to reject this work. Please address it and try again."
        )
    else:
        text = f"Approved {job_id} ({where}), round {round_}: the demo reviewer found it fine."
    verdict_file.parent.mkdir(parents=True, exist_ok=True)
    verdict_file.write_text(text + "\n", encoding="utf-8")
    print(f"review of {job_id}: {'reject' if reject else 'approve'}", flush=True)
    return 1 if reject else 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _terminated(signum: int, _frame: Any) -> None:
    # The checkpoint is written after every step: nothing more to save.
    print("stopping (signal)", flush=True)
    raise SystemExit(128 + signum)


def _quietly_terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    env = dict(os.environ)
    if env.get("FLEET_REVIEW_VERDICT_FILE"):
        return review(env)
    try:
        return Engine(env).run()
    except DemoError as exc:
        print(f"demo engine: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
