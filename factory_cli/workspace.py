"""Git workspaces: a job's own checkout of its repository, on the branch ``fleet/{jobId}``.

One cached bare clone per repository URL lives under ``{root}/repos/{sha256(url)[:16]}.git``.
Each checkout fetches the refs it needs into it (under a file lock: several seats may check
out the same repository at once), then creates the job's checkout as a separate repository
that borrows the cache's objects (``objects/info/alternates``), so a checkout costs no copy
of the history and can be handed to another OS user without giving it the cache. The cache
never collects garbage (``gc.auto=0``): a checkout may still borrow any object it ever held.

Fencing reaches git. Every commit the factory makes carries the trailers ``Fleet-Epoch``,
``Fleet-Job`` and ``Fleet-Factory``. A checkout first pushes an empty marker commit on its
start point, leased on the remote tip it observed, after checking that no commit near that
tip carries a newer epoch than its own; every later push is leased on the last commit it
pushed. So a fenced attempt (a zombie) is refused by the remote as soon as a newer attempt
has pushed its marker, and anything the zombie pushed after its last checkpoint is replaced
by that marker.

Every git command runs with the machine's own credentials (nothing is passed by us), no
terminal prompt, a timeout, and the repository's hooks and fsmonitor disabled: the checkout
may belong to the engine's user, who must not be able to make the factory run a command.
Messages never carry credentials: ``scheme://user:secret@`` and token-like strings are
scrubbed from everything shown.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BRANCH_PREFIX = "fleet/"
EPOCH_TRAILER = "Fleet-Epoch"
JOB_TRAILER = "Fleet-Job"
FACTORY_TRAILER = "Fleet-Factory"
CONTROL_EXCLUDE = "/.fleet/"
# How far back along the remote branch's first parents a newer attempt's epoch is looked
# for: engines commit without trailers, so the newest trailer may sit below their commits.
HISTORY_WINDOW = 200
# A lease lost because the tip moved between observing and pushing is re-observed this often.
LEASE_TRIES = 5
PATCH_LIMIT = 20 * 1024 * 1024
MESSAGE_LIMIT = 400
PR_TITLE_LIMIT = 256
PR_BODY_LIMIT = 60_000
FALLBACK_NAME = "fleet-factory"
GH_MISSING = "pr: true but gh is not on PATH: no pull request opened"

_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_TOKENS = re.compile(r"\b(?:gh[pousr]_|github_pat_|glpat-)[A-Za-z0-9_-]{8,}")
_COMMIT_ID = re.compile(r"^[0-9a-fA-F]{7,64}$")
_URL = re.compile(r"https?://\S+")
_HOST_SAFE = re.compile(r"[^A-Za-z0-9.-]+")
# Variables that would point our git commands at another repository than the one named.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)
# Settings of every git command: the checkout may belong to another user (the engine's), who
# must not be able to make the factory run a command through its hooks or fsmonitor.
_SETTINGS = (
    ("safe.directory", "*"),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
)
# Files of a checkout's .git that decide what our git commands run or read; restored to the
# factory's own content before each of them (the engine's user may own the checkout).
_PROTECTED = ("config", "objects/info/alternates", "info/exclude")


class GitError(Exception):
    """A git operation of the workspace failed."""

    def __init__(self, message: str, code: str = "git_failed") -> None:
        super().__init__(shorten(scrub(message), MESSAGE_LIMIT * 2))
        self.code = code


class PushRefused(GitError):
    """The remote refused the lease: another (newer) attempt owns the branch."""

    def __init__(self, message: str, code: str = "push_refused") -> None:
        super().__init__(message, code)


# --- pure helpers -----------------------------------------------------------------------


def scrub(text: str) -> str:
    """``text`` without the credentials a URL or a token could carry."""
    return _TOKENS.sub("***", _CREDENTIALS.sub(r"\1***@", text))


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def branch_for(job_id: str) -> str:
    return f"{BRANCH_PREFIX}{job_id}"


def cache_name(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16] + ".git"


def trailers(*, epoch: int, job_id: str, factory_id: str) -> str:
    return f"{EPOCH_TRAILER}: {epoch}\n{JOB_TRAILER}: {job_id}\n{FACTORY_TRAILER}: {factory_id}"


def marker_message(*, job_id: str, epoch: int, factory_id: str) -> str:
    return f"fleet: job {job_id} attempt at epoch {epoch} on {factory_id}"


def parse_epochs(log: str, job_id: str) -> list[int]:
    """The job's ``Fleet-Epoch`` values in ``git log --format=%x1e%(trailers:...)`` output:
    commits of other jobs (merged into the base) say nothing about this job's attempts."""
    epochs: list[int] = []
    for record in log.split("\x1e"):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        epoch = fields.get(EPOCH_TRAILER.lower(), "")
        if fields.get(JOB_TRAILER.lower()) == job_id and epoch.isdigit():
            epochs.append(int(epoch))
    return epochs


@dataclass(frozen=True)
class RemoteRefs:
    default: str | None  # the branch HEAD points to, if the remote says
    heads: dict[str, str]  # branch name -> commit


def parse_ls_remote(output: str) -> RemoteRefs:
    """``git ls-remote --symref`` output → the default branch and the branches listed."""
    default: str | None = None
    heads: dict[str, str] = {}
    for line in output.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: ") and name == "HEAD":
            target = left[len("ref: ") :]
            if target.startswith("refs/heads/"):
                default = target[len("refs/heads/") :]
        elif name.startswith("refs/heads/"):
            heads[name[len("refs/heads/") :]] = left
    return RemoteRefs(default, heads)


def lease_lost(porcelain: str) -> bool:
    """Whether ``git push --porcelain`` says the lease did not hold (the tip moved)."""
    return any(line.startswith("!") and "stale info" in line for line in porcelain.splitlines())


def parse_numstat(output: str) -> dict[str, int]:
    """``git diff --numstat`` → files, insertions, deletions (binary files count as files)."""
    files = insertions = deletions = 0
    for line in output.splitlines():
        parts = line.split("\t", 2)
        if len(parts) < 3:
            continue
        files += 1
        if parts[0].isdigit():
            insertions += int(parts[0])
        if parts[1].isdigit():
            deletions += int(parts[1])
    return {"files": files, "insertions": insertions, "deletions": deletions}


def first_url(text: str) -> str | None:
    found = _URL.findall(text)
    return found[-1] if found else None


# --- running git ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # git starts helpers (ssh, remote-https): end the whole group, not git alone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Runner:
    def __init__(self, git: str, env: Mapping[str, str] | None, timeout: float) -> None:
        base = dict(os.environ if env is None else env)
        for name in _REPO_ENV:
            base.pop(name, None)
        base.update(
            GIT_TERMINAL_PROMPT="0",
            GH_PROMPT_DISABLED="1",
            GH_NO_UPDATE_NOTIFIER="1",
            LC_ALL="C",
            LANGUAGE="C",
        )
        self.env = base
        self.git = git
        self.timeout = timeout

    def git_argv(self, args: Sequence[str]) -> list[str]:
        options = [part for key, value in _SETTINGS for part in ("-c", f"{key}={value}")]
        return [self.git, *options, *args]

    def tool_env(self) -> dict[str, str]:
        """The environment for another tool that runs git itself (gh): the same settings,
        through git's ``GIT_CONFIG_COUNT`` variables."""
        env = dict(self.env)
        count = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
        for key, value in _SETTINGS:
            env[f"GIT_CONFIG_KEY_{count}"] = key
            env[f"GIT_CONFIG_VALUE_{count}"] = value
            count += 1
        env["GIT_CONFIG_COUNT"] = str(count)
        return env

    def _spawn(
        self,
        argv: Sequence[str],
        cwd: Path,
        stderr: IO[bytes] | int = subprocess.PIPE,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(self.env if env is None else env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise GitError(f"{argv[0]} is not installed or not on PATH", "git_missing") from exc

    def run(
        self, argv: Sequence[str], cwd: Path, what: str, env: Mapping[str, str] | None = None
    ) -> _Result:
        proc = self._spawn(argv, cwd, env=env)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            proc.communicate()
            raise GitError(f"{what} timed out after {self.timeout:g}s", "timeout") from exc
        return _Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def git_run(self, args: Sequence[str], cwd: Path, options: Sequence[str] = ()) -> _Result:
        return self.run(self.git_argv([*options, *args]), cwd, f"git {args[0]}")

    def check(
        self,
        args: Sequence[str],
        cwd: Path,
        code: str = "git_failed",
        options: Sequence[str] = (),
    ) -> str:
        result = self.git_run(args, cwd, options)
        if not result.ok:
            raise GitError(f"git {args[0]} failed: {shorten(result.err or result.out)}", code)
        return result.out

    def stream(self, args: Sequence[str], cwd: Path, sink: IO[bytes], limit: int) -> bool:
        """Run git, copying its stdout into ``sink`` up to ``limit`` bytes; True when the
        output was longer (git is stopped then)."""
        with tempfile.TemporaryFile() as errors:
            proc = self._spawn(self.git_argv(args), cwd, errors)
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                _kill(proc)

            timer = threading.Timer(self.timeout, expire)
            timer.start()
            written = 0
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(65536):
                    if written + len(chunk) > limit:
                        sink.write(chunk[: limit - written])
                        _kill(proc)
                        proc.wait()
                        return True
                    sink.write(chunk)
                    written += len(chunk)
                code = proc.wait()
            finally:
                timer.cancel()
                proc.stdout.close()
            errors.seek(0)
            err = errors.read(MESSAGE_LIMIT * 4).decode(errors="replace")
        if expired.is_set():
            raise GitError(f"git {args[0]} timed out after {self.timeout:g}s", "timeout")
        if code != 0:
            raise GitError(f"git {args[0]} failed: {shorten(err)}")
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # flock locks belong to the open file, so two threads of one process exclude each other
    # as two processes do.
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _read_plain(path: Path) -> bytes | None:
    """The file's bytes, or None when it is absent or not a plain file (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _write_atomic(path: Path, data: bytes) -> None:
    # mkstemp creates a fresh file (O_EXCL): a planted symlink cannot redirect the write.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fleet-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- the workspaces ---------------------------------------------------------------------


class Workspaces:
    """The machine's repository cache and the jobs' checkouts. Blocking; thread-safe."""

    def __init__(
        self,
        root: Path,
        *,
        git: str = "git",
        gh: str | None = "gh",
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
    ) -> None:
        self.root = Path(root).absolute()
        self._run = _Runner(git, env, timeout)
        self._gh = gh

    def cache_path(self, repo: str) -> Path:
        return self.root / "repos" / cache_name(repo)

    def checkout(
        self,
        *,
        job_id: str,
        repo: str,
        base: str | None,
        checkpoint: Mapping[str, Any] | None,
        epoch: int,
        factory_id: str,
        workdir: Path,
    ) -> Checkout:
        """The job's checkout at ``workdir`` (replaced if present) on ``fleet/{job_id}``,
        its marker commit pushed. Raises GitError (codes ``base_missing``,
        ``checkpoint_missing``, ...) or PushRefused when a newer attempt owns the branch."""
        if not repo or repo.startswith("-") or any(c.isspace() or ord(c) < 32 for c in repo):
            raise GitError(f"repo {repo!r} is not a git URL", "invalid_repo")
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        branch = branch_for(job_id)
        self._check_ref(branch, "invalid_branch")
        if base is not None:
            self._check_ref(base, "base_missing")
        resume = _resume_commit(checkpoint, branch)

        cache = self.cache_path(repo)
        base_name, tips = self._refresh(cache, repo, base, branch)
        if base_name is None or base_name not in tips:
            if base is None:
                raise GitError(f"{repo} has no default branch", "base_missing")
            raise GitError(f"base branch {base!r} does not exist in {repo}", "base_missing")

        workdir = Path(workdir).absolute()
        _remove(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        self._run.check(["init", "-q", "-b", branch, str(workdir)], workdir.parent)
        git_dir = workdir / ".git"
        (git_dir / "objects" / "info").mkdir(parents=True, exist_ok=True)
        _write_atomic(git_dir / "objects" / "info" / "alternates", f"{cache}/objects\n".encode())
        (git_dir / "info").mkdir(exist_ok=True)
        exclude = _read_plain(git_dir / "info" / "exclude") or b""
        _write_atomic(git_dir / "info" / "exclude", exclude + f"{CONTROL_EXCLUDE}\n".encode())
        self._run.check(["remote", "add", "origin", repo], workdir)
        for name, commit in tips.items():
            self._run.check(["update-ref", f"refs/remotes/origin/{name}", commit], workdir)

        start = tips[base_name]
        if resume is not None:
            start = self._resume_point(workdir, resume, branch, tips.get(branch))

        self._run.check(["checkout", "-q", "--no-track", "-B", branch, start], workdir)
        work = Checkout(
            job_id=job_id,
            path=workdir,
            branch=branch,
            base=base_name,
            base_commit=tips[base_name],
            lease="",
            runner=self._run,
            gh=self._gh,
            trailers=trailers(epoch=epoch, job_id=job_id, factory_id=factory_id),
            identity=self._identity(workdir, factory_id),
        )
        marker = work._commit(
            marker_message(job_id=job_id, epoch=epoch, factory_id=factory_id), empty=True
        )
        work.lease = self._claim_branch(work, marker, epoch, tips.get(branch))
        work._protect()
        return work

    # -- steps of a checkout

    def _check_ref(self, name: str, code: str) -> None:
        result = self._run.git_run(["check-ref-format", f"refs/heads/{name}"], self.root)
        if not result.ok or name.startswith("-"):
            raise GitError(f"{name!r} is not a valid branch name", code)

    def _refresh(
        self, cache: Path, repo: str, base: str | None, branch: str
    ) -> tuple[str | None, dict[str, str]]:
        """Fetch the base and the job's branch into the cache; their commits there."""
        cache.parent.mkdir(parents=True, exist_ok=True)
        with _locked(cache.with_suffix(".lock")):
            if not (cache / "HEAD").is_file():
                self._create_cache(cache)
            patterns = ["HEAD", f"refs/heads/{branch}"]
            if base is not None:
                patterns.append(f"refs/heads/{base}")
            listed = self._run.check(
                ["ls-remote", "--symref", repo, *patterns], cache, "fetch_failed"
            )
            remote = parse_ls_remote(listed)
            base_name = base if base is not None else remote.default
            # Listing by pattern leaves the default branch out of the heads: the symref names it.
            present = {*remote.heads, *([remote.default] if remote.default else [])}
            wanted = [name for name in (base_name, branch) if name and name in present]
            tips: dict[str, str] = {}
            if wanted:
                refspecs = [f"+refs/heads/{name}:refs/heads/{name}" for name in wanted]
                self._run.check(
                    ["fetch", "-q", "--no-tags", "--no-write-fetch-head", repo, *refspecs],
                    cache,
                    "fetch_failed",
                )
                for name in wanted:
                    tips[name] = self._run.check(
                        ["rev-parse", "--verify", f"refs/heads/{name}^{{commit}}"], cache
                    ).strip()
        return base_name, tips

    def _create_cache(self, cache: Path) -> None:
        # Built aside and renamed: an interrupted creation never leaves a half-made cache.
        tmp = cache.with_name(cache.name + ".tmp")
        _remove(tmp)
        self._run.check(["init", "-q", "--bare", str(tmp)], cache.parent)
        for key, value in (("gc.auto", "0"), ("maintenance.auto", "false")):
            self._run.check(["config", key, value], tmp)
        os.replace(tmp, cache)

    def _resume_point(self, workdir: Path, commit: str, branch: str, tip: str | None) -> str:
        if tip is None:
            raise GitError(
                f"checkpoint commit {commit} cannot be found: {branch} is not on the remote",
                "checkpoint_missing",
            )
        found = self._run.git_run(["merge-base", "--is-ancestor", commit, tip], workdir)
        if not found.ok:
            raise GitError(
                f"checkpoint commit {commit} cannot be found on the remote's {branch}",
                "checkpoint_missing",
            )
        return self._run.check(["rev-parse", "--verify", f"{commit}^{{commit}}"], workdir).strip()

    def _identity(self, workdir: Path, factory_id: str) -> list[str]:
        """``-c`` settings naming the factory as author, only where the machine names no one
        (git's environment variables still win over them)."""
        extra: list[str] = []
        env = self._run.env
        name = self._run.git_run(["config", "--get", "user.name"], workdir)
        if not name.out.strip():
            extra += ["-c", f"user.name={FALLBACK_NAME}"]
        email = self._run.git_run(["config", "--get", "user.email"], workdir)
        if not email.out.strip() and not env.get("EMAIL"):
            host = _HOST_SAFE.sub("-", factory_id).strip("-.") or "unknown"
            extra += ["-c", f"user.email=factory@{host}"]
        return extra

    def _claim_branch(self, work: Checkout, marker: str, epoch: int, observed: str | None) -> str:
        """Push the marker over whatever an older attempt left on the branch; refuse when a
        newer attempt's epoch is on it. The marker is the lease from then on."""
        for _ in range(LEASE_TRIES):
            if observed is not None:
                newest = self._newest_epoch(work.path, observed, work.job_id)
                if newest is not None and newest > epoch:
                    raise PushRefused(
                        f"{work.branch} carries epoch {newest}, newer than this attempt's "
                        f"{epoch}: a newer attempt owns it"
                    )
            if work._push_leased(marker, observed or ""):
                return marker
            observed = self._observe(work.path, work.branch)
        raise PushRefused(f"{work.branch} kept moving on the remote: another attempt owns it")

    def _newest_epoch(self, workdir: Path, tip: str, job_id: str) -> int | None:
        log = self._run.check(
            [
                "log",
                "--first-parent",
                f"--max-count={HISTORY_WINDOW}",
                f"--format=%x1e%(trailers:key={EPOCH_TRAILER},key={JOB_TRAILER},unfold)",
                tip,
                "--",
            ],
            workdir,
        )
        epochs = parse_epochs(log, job_id)
        return max(epochs) if epochs else None

    def _observe(self, workdir: Path, branch: str) -> str | None:
        listed = self._run.check(
            ["ls-remote", "origin", f"refs/heads/{branch}"], workdir, "fetch_failed"
        )
        if branch not in parse_ls_remote(listed).heads:
            return None
        fetched = self._run.git_run(
            [
                "fetch",
                "-q",
                "--no-tags",
                "origin",
                f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            ],
            workdir,
        )
        if not fetched.ok:
            if "couldn't find remote ref" in fetched.err:
                return None
            raise GitError(f"git fetch failed: {shorten(fetched.err)}", "fetch_failed")
        return self._run.check(["rev-parse", f"refs/remotes/origin/{branch}"], workdir).strip()


def _resume_commit(checkpoint: Mapping[str, Any] | None, branch: str) -> str | None:
    """The commit to resume from: the checkpoint's, when it names this job's branch."""
    if not checkpoint:
        return None
    commit = checkpoint.get("commit")
    if not isinstance(commit, str) or checkpoint.get("branch") != branch:
        return None
    if not _COMMIT_ID.match(commit):
        raise GitError(f"checkpoint commit {commit!r} is not a commit id", "checkpoint_missing")
    return commit


class Checkout:
    """One job's checkout. ``lease`` is the remote tip this attempt last knew it owned."""

    def __init__(
        self,
        *,
        job_id: str,
        path: Path,
        branch: str,
        base: str,
        base_commit: str,
        lease: str,
        runner: _Runner,
        gh: str | None,
        trailers: str,
        identity: list[str],
    ) -> None:
        self.job_id = job_id
        self.path = path
        self.branch = branch
        self.base = base
        self.base_commit = base_commit
        self.lease = lease
        self._run = runner
        self._gh = gh
        self._trailers = trailers
        self._identity = identity
        self._protected: dict[str, bytes | None] = {}

    # -- what the job run calls

    def commit_all(self, message: str) -> str | None:
        """Commit everything uncommitted (``.fleet/`` excluded) with the attempt's trailers;
        the new commit, or None when there was nothing to commit."""
        self._guard()
        self._git(["add", "-A", "--", "."])
        staged = self._run.git_run(["diff", "--cached", "--quiet", "--no-ext-diff"], self.path)
        if staged.ok:
            return None
        return self._commit(message or "fleet: work in progress", empty=False)

    def push(self) -> str:
        """Push HEAD to the branch, leased on the last commit pushed; the commit pushed.
        PushRefused when the branch moved (a newer attempt took it over)."""
        self._guard()
        head = self.head()
        if head == self.lease:
            return head
        if not self._push_leased(head, self.lease):
            raise PushRefused(
                f"{self.branch} moved on the remote since this attempt last pushed: "
                "a newer attempt owns it"
            )
        self.lease = head
        return head

    def checkpoint(self) -> dict[str, str]:
        """``{branch, commit}`` for the coordinator. The commit is the last one pushed (HEAD
        once ``push`` succeeded): a checkpoint must name a commit another machine can fetch."""
        return {"branch": self.branch, "commit": self.lease}

    def diff_stat(self) -> dict[str, int]:
        """Files, insertions and deletions of the branch's work since it left ``base``."""
        self._guard()
        out = self._git(
            ["diff", "--numstat", "-M", "--no-ext-diff", "--no-textconv", self._range(), "--"]
        )
        return parse_numstat(out)

    def write_patch(self, path: Path, limit_bytes: int = PATCH_LIMIT) -> int:
        """Write the branch's diff against ``base`` to ``path``; bytes written. Over the
        limit it is cut at a line end and ends with a note saying so."""
        self._guard()
        note_room = 200
        args = [
            "diff",
            "--binary",
            "-M",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            self._range(),
            "--",
        ]
        with Path(path).open("w+b") as sink:
            over = self._run.stream(args, self.path, sink, limit_bytes)
            if not over:
                return sink.tell()
            keep = max(0, limit_bytes - note_room)
            sink.seek(max(0, keep - 65536))
            window = sink.read(keep - sink.tell())
            cut = window.rfind(b"\n")
            end = keep - len(window) + cut + 1 if cut >= 0 else keep
            sink.seek(end)
            sink.truncate()
            note = (
                f"\n# fleet: diff truncated at {end} bytes (limit {limit_bytes}); "
                f"the whole change is on {self.branch}\n"
            ).encode()
            sink.write(note[: max(0, limit_bytes - end)])
            return sink.tell()

    def open_pr(self, *, title: str, body: str) -> tuple[str | None, str | None]:
        """``(url, note)``: the branch's pull request into ``base``, opened or the existing
        one; without one, the note says why. Never raises."""
        gh = shutil.which(self._gh, path=self._run.env.get("PATH")) if self._gh else None
        if gh is None:
            return None, GH_MISSING
        create = [
            gh,
            "pr",
            "create",
            "--head",
            self.branch,
            "--base",
            self.base,
            "--title",
            shorten(title, PR_TITLE_LIMIT) or self.branch,
            "--body",
            body[:PR_BODY_LIMIT],
        ]
        env = self._run.tool_env()
        try:
            self._guard()
            made = self._run.run(create, self.path, "gh pr create", env)
            url = first_url(made.out) if made.ok else None
            if url:
                return url, None
            view = self._run.run(
                [gh, "pr", "view", self.branch, "--json", "url", "-q", ".url"],
                self.path,
                "gh pr view",
                env,
            )
            url = first_url(view.out) if view.ok else None
        except GitError as exc:
            return None, f"gh failed: {shorten(str(exc), 200)}"
        if url:
            return url, None
        reason = made.err or made.out or f"exit status {made.code}"
        return None, f"gh failed: {shorten(scrub(reason), 200)}"

    # -- parts shared with the checkout itself

    def head(self) -> str:
        return self._git(["rev-parse", "--verify", "HEAD^{commit}"]).strip()

    def _commit(self, message: str, *, empty: bool) -> str:
        args = ["commit", "-q", "--no-verify", "--no-edit"]
        if empty:
            args.append("--allow-empty")
        self._run.check(
            [*args, "-m", message, "-m", self._trailers], self.path, options=self._identity
        )
        return self.head()

    def _push_leased(self, commit: str, expected: str) -> bool:
        """Push ``commit`` as the branch if the remote's tip is ``expected`` ("" = absent);
        False when it is not."""
        ref = f"refs/heads/{self.branch}"
        result = self._run.git_run(
            [
                "push",
                "--porcelain",
                f"--force-with-lease={ref}:{expected}",
                "origin",
                f"{commit}:{ref}",
            ],
            self.path,
        )
        if result.ok:
            return True
        if lease_lost(result.out):
            return False
        raise GitError(f"git push failed: {shorten(result.err or result.out)}", "push_failed")

    def _protect(self) -> None:
        """Remember the .git files the factory wrote, to restore them before each command."""
        git_dir = self.path / ".git"
        self._protected = {name: _read_plain(git_dir / name) for name in _PROTECTED}

    def _guard(self) -> None:
        git_dir = self.path / ".git"
        if git_dir.is_symlink() or not git_dir.is_dir() or (git_dir / "commondir").exists():
            raise GitError(
                f"{git_dir} is not the repository the factory created", "checkout_tampered"
            )
        for name, data in self._protected.items():
            target = git_dir / name
            if _read_plain(target) == data:
                continue
            if data is None:
                _remove(target)
            else:
                _write_atomic(target, data)

    def _range(self) -> str:
        # Three dots: from where the branch left base, so base's own later commits stay out.
        return f"{self.base_commit}...HEAD"

    def _git(self, args: Sequence[str]) -> str:
        return self._run.check(args, self.path)
