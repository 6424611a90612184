"""Git workspaces: a job's own checkout of its repository, on the branch ``fleet/{jobId}``.

One cached bare clone per repository URL lives under ``{root}/repos/{sha256(url)[:16]}.git``.
Each checkout fetches the refs it needs into it (under a file lock: several seats may check
out the same repository at once). The cache never collects garbage (``gc.auto=0``): a
repository that borrows its objects may still need any object it ever held.

Two repositories per job. The work dir (handed to the engine's OS user, who may rewrite
anything in it at any moment) holds the engine's OWN repository, ``{workdir}/.git``: created
at checkout on ``fleet/{jobId}`` at the marker commit with a clean status, for agents that
run git (status, diff, commit). The factory never runs git on it, nor writes into it, after
the checkout: its config, hooks, refs and objects are the engine's and re-checking them
before each command could not close the race with an engine rewriting them. The factory's
git runs on a PRIVATE git dir, ``{root}/jobs/{sha256(jobId)[:16]}.{epoch}.git``, owned by the
factory and outside the work dir, as ``git --git-dir=<private> --work-tree=<workdir>``: its
config is the factory's (hooks and fsmonitor off, ``.git`` and ``/.fleet/`` excluded), its
objects borrow the cache's (``objects/info/alternates``). A commit of the factory snapshots
the work TREE into the private repository (``add -A``, which honours the tree's .gitignore
files; a ``.gitattributes`` can only name a filter or diff driver, whose command would come
from the factory's config). What the engine committed in its own repository is captured as
content by the next snapshot; its commits and their messages are not carried. A directory
holding its own ``.git`` (a nested repository) is left out of the factory's commits. The
engine's repository is not moved by the factory's commits (its HEAD stays where it was).

Fencing reaches git. Every commit the factory makes carries the trailers ``Fleet-Epoch``,
``Fleet-Job`` and ``Fleet-Factory``. A checkout first pushes an empty marker commit on its
start point, leased on the remote tip it observed, after checking that no commit near that
tip carries a newer epoch than its own; every later push is leased on the last commit it
pushed. So a fenced attempt (a zombie) is refused by the remote as soon as a newer attempt
has pushed its marker, and anything the zombie pushed after its last checkpoint is replaced
by that marker. ``Checkout.stop()`` makes a fenced or cancelled attempt's later commits,
pushes and pull requests fail before they touch git or the remote.

Every git command runs with the machine's own credentials (nothing is passed by us), no
terminal prompt, a timeout, and hooks and fsmonitor disabled. Messages never carry
credentials: ``scheme://user:secret@`` and token-like strings are scrubbed from everything
shown.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
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
# What the factory's commits never hold: its control files and any repository's own dir.
PRIVATE_EXCLUDE = f"{CONTROL_EXCLUDE}\n.git\n"
GITLINK_MODE = "160000"
STOPPED = "stopped: the attempt was fenced or cancelled"
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
# Settings of every git command (the private git dir's config says the same): no hook, no
# fsmonitor, and the work tree may belong to another user (the engine's).
_SETTINGS = (
    ("safe.directory", "*"),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
)
# Written into each private git dir's config.
_PRIVATE_CONFIG = (
    ("core.bare", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.untrackedCache", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("submodule.recurse", "false"),
)


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


def private_stem(job_id: str) -> str:
    """The start of the names of a job's private git dirs (one per epoch)."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:16]


def parse_gitlinks(raw: str) -> list[str]:
    """Paths that ``git diff-index -z --raw`` shows becoming a gitlink (a nested repository)."""
    paths: list[str] = []
    fields = raw.split("\0")
    i = 0
    while i + 1 < len(fields):
        meta, path = fields[i], fields[i + 1]
        i += 2
        parts = meta.lstrip(":").split()
        if len(parts) >= 2 and parts[1] == GITLINK_MODE:
            paths.append(path)
    return paths


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

    def stream(
        self,
        args: Sequence[str],
        cwd: Path,
        sink: IO[bytes],
        limit: int,
        options: Sequence[str] = (),
    ) -> bool:
        """Run git, copying its stdout into ``sink`` up to ``limit`` bytes; True when the
        output was longer (git is stopped then)."""
        with tempfile.TemporaryFile() as errors:
            proc = self._spawn(self.git_argv([*options, *args]), cwd, errors)
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


def _open_dir(path: Path) -> int:
    """A descriptor of the directory ``path``; its last component is never a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A new file (O_EXCL, beside ``path``) that replaces ``path`` once written: a symlink
    planted at ``path`` is replaced, never followed, and so is one planted as its directory's
    last component (the directory is opened once, without following a link)."""
    dir_fd = _open_dir(path.parent)
    try:
        tmp = f".fleet-{secrets.token_hex(8)}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w+b") as handle:
                yield handle
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _write_new(path: Path, data: bytes) -> None:
    with _replacing(path) as handle:
        handle.write(data)


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

    def private_path(self, job_id: str, epoch: int) -> Path:
        """The factory's own git dir for the job's attempt at ``epoch`` (outside any work
        dir; the engine never gets it)."""
        return self.root / "jobs" / f"{private_stem(job_id)}.{epoch}.git"

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

        private = self._create_private(job_id, epoch, branch, cache, repo, tips)
        start = tips[base_name]
        if resume is not None:
            start = self._resume_point(private, resume, branch, tips.get(branch))

        workdir = Path(workdir).absolute()
        _remove(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        workdir.mkdir()
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
            identity=self._identity(private, factory_id),
            git_dir=private,
        )
        work._git(["checkout", "-q", "--no-track", "-B", branch, start])
        marker = work._commit(
            marker_message(job_id=job_id, epoch=epoch, factory_id=factory_id), empty=True
        )
        work.lease = self._claim_branch(work, marker, epoch, tips.get(branch))
        self._create_engine_repo(work, cache, repo, tips, marker)
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

    def _create_private(
        self,
        job_id: str,
        epoch: int,
        branch: str,
        cache: Path,
        repo: str,
        tips: Mapping[str, str],
    ) -> Path:
        """The attempt's private git dir, made afresh; older attempts' dirs of the job on this
        machine are removed (a fenced attempt's git then fails instead of writing here)."""
        private = self.private_path(job_id, epoch)
        private.parent.mkdir(parents=True, exist_ok=True)
        stem = private_stem(job_id)
        for old in private.parent.glob(f"{stem}.*.git"):
            older = old.name[len(stem) + 1 : -len(".git")]
            if older.isdigit() and int(older) < epoch:
                _remove(old)
        _remove(private)
        self._run.check(["init", "-q", "--bare", "-b", branch, str(private)], private.parent)
        for key, value in _PRIVATE_CONFIG:
            self._run.check(["config", key, value], private)
        _write_new(private / "objects" / "info" / "alternates", f"{cache}/objects\n".encode())
        (private / "info").mkdir(exist_ok=True)
        _write_new(private / "info" / "exclude", PRIVATE_EXCLUDE.encode())
        self._run.check(["remote", "add", "origin", repo], private)
        for name, commit in tips.items():
            self._run.check(["update-ref", f"refs/remotes/origin/{name}", commit], private)
        return private

    def _create_engine_repo(
        self, work: Checkout, cache: Path, repo: str, tips: Mapping[str, str], marker: str
    ) -> None:
        """The engine's own repository in the work dir: on the branch at the marker, with a
        clean status. Made before the engine gets the work dir; never read or written by the
        factory afterwards."""
        workdir = work.path
        git_dir = workdir / ".git"
        self._run.check(["init", "-q", "-b", work.branch, str(workdir)], workdir.parent)
        options = [f"--git-dir={git_dir}", f"--work-tree={workdir}"]

        def run(args: Sequence[str]) -> None:
            self._run.check(args, workdir, options=options)

        _write_new(git_dir / "objects" / "info" / "alternates", f"{cache}/objects\n".encode())
        (git_dir / "info").mkdir(exist_ok=True)
        exclude = git_dir / "info" / "exclude"
        kept = exclude.read_bytes() if exclude.is_file() else b""
        _write_new(exclude, kept + f"{CONTROL_EXCLUDE}\n".encode())
        run(["remote", "add", "origin", repo])
        for name, commit in tips.items():
            run(["update-ref", f"refs/remotes/origin/{name}", commit])
        # The marker is the one object the cache lacks: fetched from the private repository.
        run(
            [
                "fetch",
                "-q",
                "--no-tags",
                "--no-write-fetch-head",
                str(work._git_dir),
                f"+refs/heads/{work.branch}:refs/remotes/origin/{work.branch}",
            ]
        )
        run(["update-ref", f"refs/heads/{work.branch}", marker])
        # The private index matches the tree just checked out (the marker's): a clean status.
        _write_new(git_dir / "index", (work._git_dir / "index").read_bytes())

    def _resume_point(self, private: Path, commit: str, branch: str, tip: str | None) -> str:
        if tip is None:
            raise GitError(
                f"checkpoint commit {commit} cannot be found: {branch} is not on the remote",
                "checkpoint_missing",
            )
        found = self._run.git_run(["merge-base", "--is-ancestor", commit, tip], private)
        if not found.ok:
            raise GitError(
                f"checkpoint commit {commit} cannot be found on the remote's {branch}",
                "checkpoint_missing",
            )
        return self._run.check(["rev-parse", "--verify", f"{commit}^{{commit}}"], private).strip()

    def _identity(self, private: Path, factory_id: str) -> list[str]:
        """``-c`` settings naming the factory as author, only where the machine names no one
        (git's environment variables still win over them)."""
        extra: list[str] = []
        env = self._run.env
        name = self._run.git_run(["config", "--get", "user.name"], private)
        if not name.out.strip():
            extra += ["-c", f"user.name={FALLBACK_NAME}"]
        email = self._run.git_run(["config", "--get", "user.email"], private)
        if not email.out.strip() and not env.get("EMAIL"):
            host = _HOST_SAFE.sub("-", factory_id).strip("-.") or "unknown"
            extra += ["-c", f"user.email=factory@{host}"]
        return extra

    def _claim_branch(self, work: Checkout, marker: str, epoch: int, observed: str | None) -> str:
        """Push the marker over whatever an older attempt left on the branch; refuse when a
        newer attempt's epoch is on it. The marker is the lease from then on."""
        for _ in range(LEASE_TRIES):
            if observed is not None:
                newest = self._newest_epoch(work, observed)
                if newest is not None and newest > epoch:
                    raise PushRefused(
                        f"{work.branch} carries epoch {newest}, newer than this attempt's "
                        f"{epoch}: a newer attempt owns it"
                    )
            if work._push_leased(marker, observed or ""):
                return marker
            observed = self._observe(work)
        raise PushRefused(f"{work.branch} kept moving on the remote: another attempt owns it")

    def _newest_epoch(self, work: Checkout, tip: str) -> int | None:
        log = work._git(
            [
                "log",
                "--first-parent",
                f"--max-count={HISTORY_WINDOW}",
                f"--format=%x1e%(trailers:key={EPOCH_TRAILER},key={JOB_TRAILER},unfold)",
                tip,
                "--",
            ]
        )
        epochs = parse_epochs(log, work.job_id)
        return max(epochs) if epochs else None

    def _observe(self, work: Checkout) -> str | None:
        branch = work.branch
        listed = work._git(["ls-remote", "origin", f"refs/heads/{branch}"], "fetch_failed")
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
            work._git_dir,
            work._repo,
        )
        if not fetched.ok:
            if "couldn't find remote ref" in fetched.err:
                return None
            raise GitError(f"git fetch failed: {shorten(fetched.err)}", "fetch_failed")
        return work._git(["rev-parse", f"refs/remotes/origin/{branch}"]).strip()


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
    """One job's checkout. ``lease`` is the remote tip this attempt last knew it owned.

    Every git command of the factory runs on the attempt's private git dir with the work dir
    as its work tree; the engine's own repository in the work dir is never read."""

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
        git_dir: Path,
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
        self._git_dir = git_dir
        self._repo = [f"--git-dir={git_dir}", f"--work-tree={path}"]
        self._stopped = threading.Event()

    # -- what the job run calls

    def stop(self) -> None:
        """The attempt was fenced or cancelled: from now on ``commit_all``, ``push`` and
        ``open_pr`` raise PushRefused without touching git or the remote (a background task
        of the attempt may still be running)."""
        self._stopped.set()

    def close(self) -> None:
        """The attempt is over (nothing of it runs any more): stop, and remove the private git
        dir (what it pushed is on the remote; the work dir stays for whoever looks)."""
        self.stop()
        with contextlib.suppress(OSError):
            _remove(self._git_dir)

    def commit_all(self, message: str) -> str | None:
        """Snapshot the work tree (``.fleet/``, ``.git`` and nested repositories excluded)
        as a commit with the attempt's trailers; the new commit, or None when the tree is the
        one last committed. What the engine committed in its own repository is captured as
        content, not as its commits (their messages are not carried)."""
        self._check_stopped()
        self._git(["add", "-A"])
        self._drop_nested_repos()
        staged = self._run.git_run(
            ["diff", "--cached", "--quiet", "--no-ext-diff"], self._git_dir, self._repo
        )
        if staged.ok:
            return None
        return self._commit(message or "fleet: work in progress", empty=False)

    def push(self) -> str:
        """Push HEAD to the branch, leased on the last commit pushed; the commit pushed.
        PushRefused when the branch moved (a newer attempt took it over) or the attempt was
        stopped."""
        self._check_stopped()
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
        out = self._git(
            ["diff", "--numstat", "-M", "--no-ext-diff", "--no-textconv", self._range(), "--"]
        )
        return parse_numstat(out)

    def write_patch(self, path: Path, limit_bytes: int = PATCH_LIMIT) -> int:
        """Write the branch's diff against ``base`` to ``path``; bytes written. Over the
        limit it is cut at a line end and ends with a note saying so. ``path`` is replaced by
        a new file: a symlink there is replaced, not followed (nor one as its directory);
        GitError when it cannot be written."""
        try:
            return self._write_patch(Path(path), limit_bytes)
        except OSError as exc:
            raise GitError(f"cannot write the patch to {path}: {exc.strerror or exc}") from exc

    def _write_patch(self, path: Path, limit_bytes: int) -> int:
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
        with _replacing(path) as sink:
            over = self._run.stream(args, self._git_dir, sink, limit_bytes, self._repo)
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
        one; without one, the note says why. Raises only PushRefused, once ``stop()`` was
        called. gh runs on the private git dir (``GIT_DIR``, and it is gh's current
        directory too), never on the engine's repository."""
        self._check_stopped()
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
        env.update(GIT_DIR=str(self._git_dir), GIT_WORK_TREE=str(self.path))
        try:
            self._check_stopped()
            made = self._run.run(create, self._git_dir, "gh pr create", env)
            url = first_url(made.out) if made.ok else None
            if url:
                return url, None
            view = self._run.run(
                [gh, "pr", "view", self.branch, "--json", "url", "-q", ".url"],
                self._git_dir,
                "gh pr view",
                env,
            )
            url = first_url(view.out) if view.ok else None
        except PushRefused:
            raise
        except GitError as exc:
            return None, f"gh failed: {shorten(str(exc), 200)}"
        if url:
            return url, None
        reason = made.err or made.out or f"exit status {made.code}"
        return None, f"gh failed: {shorten(scrub(reason), 200)}"

    # -- parts shared with the checkout itself

    def head(self) -> str:
        """The factory's HEAD (its private repository's): what it last committed."""
        return self._git(["rev-parse", "--verify", "HEAD^{commit}"]).strip()

    def _check_stopped(self) -> None:
        if self._stopped.is_set():
            raise PushRefused(STOPPED)

    def _commit(self, message: str, *, empty: bool) -> str:
        args = ["commit", "-q", "--no-verify", "--no-edit"]
        if empty:
            args.append("--allow-empty")
        self._run.check(
            [*args, "-m", message, "-m", self._trailers],
            self._git_dir,
            options=[*self._repo, *self._identity],
        )
        return self.head()

    def _drop_nested_repos(self) -> None:
        """Unstage what ``add -A`` made a gitlink: a directory with its own ``.git``."""
        raw = self._git(["diff-index", "--cached", "-z", "--raw", "--no-renames", "HEAD"])
        nested = parse_gitlinks(raw)
        if nested:
            self._run.check(
                ["reset", "-q", "HEAD", "--", *nested],
                self._git_dir,
                options=["--literal-pathspecs", *self._repo],
            )

    def _push_leased(self, commit: str, expected: str) -> bool:
        """Push ``commit`` as the branch if the remote's tip is ``expected`` ("" = absent);
        False when it is not."""
        ref = f"refs/heads/{self.branch}"
        self._check_stopped()
        result = self._run.git_run(
            [
                "push",
                "--porcelain",
                f"--force-with-lease={ref}:{expected}",
                "origin",
                f"{commit}:{ref}",
            ],
            self._git_dir,
            self._repo,
        )
        if result.ok:
            return True
        if lease_lost(result.out):
            return False
        raise GitError(f"git push failed: {shorten(result.err or result.out)}", "push_failed")

    def _range(self) -> str:
        # Three dots: from where the branch left base, so base's own later commits stay out.
        return f"{self.base_commit}...HEAD"

    def _git(self, args: Sequence[str], code: str = "git_failed") -> str:
        return self._run.check(args, self._git_dir, code, options=self._repo)
