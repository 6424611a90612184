"""Git workspaces with real git: a local bare repository is the remote (file:// URL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from factory_cli.workspace import (
    GH_MISSING,
    Checkout,
    GitError,
    PushRefused,
    Workspaces,
    lease_lost,
    parse_epochs,
    parse_ls_remote,
    parse_numstat,
    scrub,
)

GIT = shutil.which("git") or "git"
SEED = ["-c", "user.name=Seed", "-c", "user.email=seed@example.com"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The machine's environment without its git configuration or identity."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIT_", "GH_")) and k not in ("EMAIL",)
    }
    (tmp_path / "gitconfig").write_text("")
    out.update(GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1")
    return out


def git(env: Mapping[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [GIT, *SEED, *args], cwd=cwd, env=dict(env), capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path, env: dict[str, str]) -> Path:
    """A bare repository: ``main`` (default) with README and app.py, ``dev`` one commit on."""
    bare = tmp_path / "remote.git"
    git(env, tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(env, tmp_path, "clone", "-q", str(bare), str(seed))
    git(env, seed, "checkout", "-q", "-b", "main")
    (seed / "README.md").write_text("hello\n")
    (seed / "app.py").write_text("one\ntwo\nthree\n")
    git(env, seed, "add", "-A")
    git(env, seed, "commit", "-q", "-m", "initial")
    git(env, seed, "push", "-q", "origin", "main")
    git(env, seed, "checkout", "-q", "-b", "dev")
    (seed / "dev.txt").write_text("dev\n")
    git(env, seed, "add", "-A")
    git(env, seed, "commit", "-q", "-m", "dev work")
    git(env, seed, "push", "-q", "origin", "dev")
    return bare


def url(bare: Path) -> str:
    return f"file://{bare}"


def tip(env: Mapping[str, str], bare: Path, branch: str) -> str:
    return git(env, bare, "rev-parse", f"refs/heads/{branch}")


def start(
    ws: Workspaces,
    bare: Path,
    workdir: Path,
    *,
    job: str = "j1",
    epoch: int = 1,
    factory: str = "f1",
    base: str | None = None,
    checkpoint: Mapping[str, str] | None = None,
) -> Checkout:
    return ws.checkout(
        job_id=job,
        repo=url(bare),
        base=base,
        checkpoint=checkpoint,
        epoch=epoch,
        factory_id=factory,
        workdir=workdir,
    )


def work(checkout: Checkout, name: str, text: str) -> str:
    (checkout.path / name).write_text(text)
    commit = checkout.commit_all(f"fleet: {name}")
    assert commit is not None
    return checkout.push()


# --- pure helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("fatal: unable to access 'https://bob:s3cret@example.com/x.git/'", "s3cret"),
        ("ssh://git:pw123@host/x", "pw123"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123 refused", "ghp_abcdefghij"),
    ],
)
def test_workspace_scrub_removes_credentials(text: str, leaked: str) -> None:
    assert leaked not in scrub(text)
    assert "***" in scrub(text)


def test_workspace_parsers() -> None:
    listed = "ref: refs/heads/main\tHEAD\nabc\tHEAD\nabc\trefs/heads/main\ndef\trefs/heads/fleet/j"
    refs = parse_ls_remote(listed)
    assert refs.default == "main"
    assert refs.heads == {"main": "abc", "fleet/j": "def"}
    assert parse_numstat("3\t1\ta.py\n-\t-\tlogo.png\n0\t4\tb.py\n") == {
        "files": 3,
        "insertions": 3,
        "deletions": 5,
    }
    log = (
        "\x1e\n\x1eFleet-Epoch: 2\nFleet-Job: j\n\x1eFleet-Job: other\nFleet-Epoch: 9\n"
        "\x1eFleet-Job: j\nFleet-Epoch: 1\n"
    )
    assert parse_epochs(log, "j") == [2, 1]
    assert lease_lost("To x\n!\tabc:refs/heads/b\t[rejected] (stale info)\nDone\n")
    assert not lease_lost("To x\n!\tabc:refs/heads/b\t[remote rejected] (hook declined)\n")


# --- checkouts --------------------------------------------------------------------------


def test_workspace_fresh_job_starts_from_default_branch(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    co = start(ws, remote, tmp_path / "jobs" / "j1")
    assert (co.path / "README.md").read_text() == "hello\n"
    assert not (co.path / "dev.txt").exists()
    assert (co.branch, co.base, co.base_commit) == ("fleet/j1", "main", tip(env, remote, "main"))
    assert (tmp_path / "m1" / "repos").is_dir()
    # the marker is pushed at once, on the start point, carrying the fencing trailers
    assert co.lease == tip(env, remote, "fleet/j1") == co.checkpoint()["commit"]
    message = git(env, remote, "log", "-1", "--format=%B", "fleet/j1")
    assert message.startswith("fleet: job j1 attempt at epoch 1 on f1")
    assert "Fleet-Epoch: 1" in message and "Fleet-Job: j1" in message
    assert git(env, remote, "rev-parse", "fleet/j1~1") == co.base_commit
    assert co.diff_stat() == {"files": 0, "insertions": 0, "deletions": 0}


def test_workspace_explicit_base(tmp_path: Path, env: dict[str, str], remote: Path) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w", base="dev")
    assert (co.path / "dev.txt").is_file()
    assert (co.base, co.base_commit) == ("dev", tip(env, remote, "dev"))


def test_workspace_commit_all_and_push_land_on_remote_with_trailers(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w", epoch=3)
    (co.path / "new.txt").write_text("new\n")
    (co.path / ".fleet").mkdir()
    (co.path / ".fleet" / "engine.log").write_text("never committed\n")
    commit = co.commit_all("fleet: checkpoint")
    assert commit is not None
    assert co.push() == commit == tip(env, remote, "fleet/j1") == co.lease
    assert co.checkpoint() == {"branch": "fleet/j1", "commit": commit}
    trailers = git(env, remote, "log", "-1", "--format=%(trailers)", "fleet/j1")
    assert trailers.splitlines() == ["Fleet-Epoch: 3", "Fleet-Job: j1", "Fleet-Factory: f1"]
    files = git(env, remote, "ls-tree", "-r", "--name-only", "fleet/j1").splitlines()
    assert "new.txt" in files and not any(f.startswith(".fleet") for f in files)
    # no identity configured on this machine: the factory names itself
    assert git(env, remote, "log", "-1", "--format=%an <%ae>", "fleet/j1") == (
        "fleet-factory <factory@f1>"
    )
    assert co.commit_all("nothing") is None
    assert co.push() == commit


def test_workspace_keeps_the_machine_identity(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    (tmp_path / "gitconfig").write_text("[user]\n\tname = Machine\n\temail = m@example.com\n")
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    work(co, "a.txt", "a\n")
    assert git(env, remote, "log", "-1", "--format=%an <%ae>", "fleet/j1") == (
        "Machine <m@example.com>"
    )


def test_workspace_diff_stat_and_patch_against_base(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    (co.path / "app.py").write_text("one\n2\nthree\nfour\n")
    (co.path / "logo.bin").write_bytes(bytes(range(256)) * 4)
    co.commit_all("fleet: work")
    co.push()
    assert co.diff_stat() == {"files": 2, "insertions": 2, "deletions": 1}

    patch = tmp_path / "diff.patch"
    size = co.write_patch(patch)
    text = patch.read_bytes()
    assert size == len(text)
    assert b"diff --git a/app.py b/app.py" in text and b"GIT binary patch" in text
    # the patch applies to base
    check = tmp_path / "check"
    git(env, tmp_path, "clone", "-q", "-b", "main", str(remote), str(check))
    git(env, check, "apply", "--check", str(patch))

    short = tmp_path / "short.patch"
    size = co.write_patch(short, limit_bytes=400)
    cut = short.read_bytes()
    assert size == len(cut) <= 400
    assert cut.startswith(b"diff --git") and b"# fleet: diff truncated" in cut


def test_workspace_replaces_an_earlier_workdir(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    workdir = tmp_path / "w"
    (workdir / ".fleet").mkdir(parents=True)
    (workdir / "stale.txt").write_text("from an earlier attempt\n")
    co = start(Workspaces(tmp_path / "m1", env=env), remote, workdir)
    assert not (co.path / "stale.txt").exists()
    assert not (co.path / ".fleet").exists()


def test_workspace_resume_on_another_machine_continues_the_branch(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    first = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "m1w", epoch=1)
    work(first, "step1.txt", "one\n")
    saved = first.checkpoint()

    second = start(
        Workspaces(tmp_path / "m2", env=env),
        remote,
        tmp_path / "m2w",
        epoch=2,
        factory="f2",
        checkpoint=saved,
    )
    assert (second.path / "step1.txt").read_text() == "one\n"
    assert git(env, second.path, "rev-parse", "HEAD~1") == saved["commit"]
    pushed = work(second, "step2.txt", "two\n")
    assert tip(env, remote, "fleet/j1") == pushed
    assert second.diff_stat()["files"] == 2
    epochs = git(env, remote, "log", "--format=%(trailers:key=Fleet-Epoch,valueonly)", "fleet/j1")
    assert epochs.split() == ["2", "2", "1", "1"]


def test_workspace_zombie_is_refused_and_nothing_it_pushed_survives(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    zombie = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "m1w", epoch=1)
    work(zombie, "checkpointed.txt", "kept\n")
    saved = zombie.checkpoint()
    # pushed after the last checkpoint the coordinator saw: must not survive
    late = work(zombie, "late.txt", "zombie\n")

    fresh = start(
        Workspaces(tmp_path / "m2", env=env),
        remote,
        tmp_path / "m2w",
        epoch=2,
        factory="f2",
        checkpoint=saved,
    )
    assert not (fresh.path / "late.txt").exists()
    (zombie.path / "later.txt").write_text("zombie again\n")
    zombie.commit_all("fleet: zombie")
    with pytest.raises(PushRefused) as refused:
        zombie.push()
    assert refused.value.code == "push_refused"

    final = work(fresh, "fresh.txt", "epoch 2\n")
    assert tip(env, remote, "fleet/j1") == final
    files = git(env, remote, "ls-tree", "-r", "--name-only", "fleet/j1").splitlines()
    assert "checkpointed.txt" in files and "fresh.txt" in files
    assert "late.txt" not in files and "later.txt" not in files
    reachable = subprocess.run(
        [GIT, "merge-base", "--is-ancestor", late, final], cwd=remote, env=env, check=False
    )
    assert reachable.returncode == 1


def test_workspace_older_attempt_starting_after_a_newer_one_is_refused(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    newer = start(Workspaces(tmp_path / "m2", env=env), remote, tmp_path / "m2w", epoch=2)
    with pytest.raises(PushRefused, match="epoch 2"):
        start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "m1w", epoch=1)
    assert tip(env, remote, "fleet/j1") == newer.lease


def test_workspace_engine_commits_without_trailers_still_fence(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    newer = start(Workspaces(tmp_path / "m2", env=env), remote, tmp_path / "m2w", epoch=2)
    for n in range(3):
        (newer.path / f"e{n}.txt").write_text("engine\n")
        git(env, newer.path, "add", "-A")
        git(env, newer.path, "commit", "-q", "-m", f"engine commit {n}")
    newer.push()
    with pytest.raises(PushRefused):
        start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "m1w", epoch=1)


def test_workspace_other_jobs_epochs_in_the_base_do_not_fence(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    other = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "ow", job="x", epoch=7)
    merged = work(other, "x.txt", "shipped\n")
    git(env, remote, "update-ref", "refs/heads/main", merged)  # job x merged fast-forward
    first = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w1", epoch=1)
    work(first, "a.txt", "a\n")
    resumed = start(
        Workspaces(tmp_path / "m2", env=env),
        remote,
        tmp_path / "w2",
        epoch=2,
        checkpoint=first.checkpoint(),
    )
    assert tip(env, remote, "fleet/j1") == resumed.lease


@pytest.mark.parametrize(("holder_epoch", "refused"), [(1, False), (3, True)])
def test_workspace_tip_moving_after_it_was_observed_is_re_checked(
    tmp_path: Path,
    env: dict[str, str],
    remote: Path,
    monkeypatch: pytest.MonkeyPatch,
    holder_epoch: int,
    refused: bool,
) -> None:
    holder = start(
        Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "m1w", epoch=holder_epoch
    )
    real_refresh = Workspaces._refresh

    def stale(
        self: Workspaces, cache: Path, repo: str, base: str | None, branch: str
    ) -> tuple[str | None, dict[str, str]]:
        # as if the holder pushed its marker just after this checkout listed the remote
        base_name, tips = real_refresh(self, cache, repo, base, branch)
        tips.pop(branch, None)
        return base_name, tips

    monkeypatch.setattr(Workspaces, "_refresh", stale)
    ws = Workspaces(tmp_path / "m2", env=env)
    if refused:
        with pytest.raises(PushRefused, match="epoch 3"):
            start(ws, remote, tmp_path / "m2w", epoch=2)
        assert tip(env, remote, "fleet/j1") == holder.lease
    else:
        taken = start(ws, remote, tmp_path / "m2w", epoch=2)
        assert tip(env, remote, "fleet/j1") == taken.lease != holder.lease


@pytest.mark.parametrize(
    ("base", "checkpoint", "code"),
    [
        ("nope", None, "base_missing"),
        (None, {"branch": "fleet/j1", "commit": "ab" * 20}, "checkpoint_missing"),
        (None, {"branch": "fleet/j1", "commit": "not a commit"}, "checkpoint_missing"),
    ],
)
def test_workspace_missing_start_point(
    tmp_path: Path,
    env: dict[str, str],
    remote: Path,
    base: str | None,
    checkpoint: dict[str, str] | None,
    code: str,
) -> None:
    with pytest.raises(GitError) as failed:
        start(
            Workspaces(tmp_path / "m1", env=env),
            remote,
            tmp_path / "w",
            base=base,
            checkpoint=checkpoint,
        )
    assert failed.value.code == code


def test_workspace_checkpoint_commit_not_on_the_branch(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    start(ws, remote, tmp_path / "w")
    elsewhere = {"branch": "fleet/j1", "commit": tip(env, remote, "dev")}
    with pytest.raises(GitError) as failed:
        start(ws, remote, tmp_path / "w", epoch=2, checkpoint=elsewhere)
    assert failed.value.code == "checkpoint_missing"


def test_workspace_empty_remote_has_no_base(tmp_path: Path, env: dict[str, str]) -> None:
    empty = tmp_path / "empty.git"
    git(env, tmp_path, "init", "-q", "--bare", str(empty))
    with pytest.raises(GitError) as failed:
        start(Workspaces(tmp_path / "m1", env=env), empty, tmp_path / "w")
    assert failed.value.code == "base_missing"


def test_workspace_error_message_scrubs_credentials(tmp_path: Path, env: dict[str, str]) -> None:
    # port 1 on loopback: refused at once, no network needed
    with pytest.raises(GitError) as failed:
        Workspaces(tmp_path / "m1", env=env, timeout=30).checkout(
            job_id="j1",
            repo="https://bob:s3cret-token@127.0.0.1:1/x.git",
            base=None,
            checkpoint=None,
            epoch=1,
            factory_id="f1",
            workdir=tmp_path / "w",
        )
    assert failed.value.code == "fetch_failed"
    assert "s3cret" not in str(failed.value)


def test_workspace_factory_ignores_the_checkouts_own_config(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    witness = tmp_path / "ran"
    # what an engine owning the checkout could plant to run a command as the factory
    with (co.path / ".git" / "config").open("a") as config:
        config.write(f'[filter "evil"]\n\tclean = touch {witness}; cat\n')
    hook = co.path / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(f"#!/bin/sh\ntouch {witness}\n")
    hook.chmod(0o755)
    (co.path / ".gitattributes").write_text("* filter=evil\n")
    (co.path / "x.txt").write_text("x\n")
    assert co.commit_all("fleet: work") is not None
    assert not witness.exists()
    # the engine's own repository is the engine's: the factory neither reads nor repairs it
    assert "evil" in (co.path / ".git" / "config").read_text()


# --- pull requests ----------------------------------------------------------------------


def stand_in_gh(bin_dir: Path, calls: Path, *, existing: bool) -> None:
    bin_dir.mkdir(exist_ok=True)
    create = (
        'echo "a pull request for branch already exists:" >&2; exit 1'
        if existing
        else 'echo "Creating pull request"; echo "https://github.example/o/r/pull/7"; exit 0'
    )
    gh = bin_dir / "gh"
    gh.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {calls}\n'
        f'if [ "$2" = create ]; then {create}; fi\n'
        'if [ "$2" = view ]; then echo "https://github.example/o/r/pull/3"; exit 0; fi\n'
        "exit 2\n"
    )
    gh.chmod(0o755)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [(False, "https://github.example/o/r/pull/7"), (True, "https://github.example/o/r/pull/3")],
)
def test_workspace_open_pr_with_gh(
    tmp_path: Path, env: dict[str, str], remote: Path, existing: bool, expected: str
) -> None:
    calls = tmp_path / "gh-calls"
    stand_in_gh(tmp_path / "bin", calls, existing=existing)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    work(co, "a.txt", "a\n")
    assert co.open_pr(title="Add a", body="Body") == (expected, None)
    first = calls.read_text().splitlines()[0]
    assert first == "pr create --head fleet/j1 --base main --title Add a --body Body"
    if existing:
        assert calls.read_text().splitlines()[1] == "pr view fleet/j1 --json url -q .url"


def test_workspace_open_pr_without_gh(tmp_path: Path, env: dict[str, str], remote: Path) -> None:
    (tmp_path / "nobin").mkdir()
    bare_path = dict(env, PATH=str(tmp_path / "nobin"))
    co = start(Workspaces(tmp_path / "m1", git=GIT, env=bare_path), remote, tmp_path / "w")
    assert co.open_pr(title="t", body="b") == (None, GH_MISSING)
    no_gh = start(Workspaces(tmp_path / "m2", gh=None, env=env), remote, tmp_path / "w2", epoch=2)
    assert no_gh.open_pr(title="t", body="b") == (None, GH_MISSING)


def test_workspace_open_pr_failure_says_why(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text("#!/bin/sh\necho 'gh auth login required' >&2\nexit 4\n")
    (bin_dir / "gh").chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    assert co.open_pr(title="t", body="b") == (None, "gh failed: gh auth login required")


# --- concurrency ------------------------------------------------------------------------


def test_workspace_two_seats_check_out_one_repo_at_once(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    results: dict[str, Checkout | BaseException] = {}

    def seat(job: str) -> None:
        try:
            ws = Workspaces(tmp_path / "m1", env=env)
            co = start(ws, remote, tmp_path / "jobs" / job, job=job)
            work(co, f"{job}.txt", f"{job}\n")
            results[job] = co
        except BaseException as exc:
            results[job] = exc

    threads = [threading.Thread(target=seat, args=(job,)) for job in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for job in ("a", "b"):
        co = results[job]
        assert isinstance(co, Checkout), co
        assert tip(env, remote, f"fleet/{job}") == co.lease
    assert len(list((tmp_path / "m1" / "repos").glob("*.git"))) == 1


# --- the engine's repository is the engine's; the factory's git is its own ----------------


def evil_script(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A command that leaves a witness file when it runs (and fails)."""
    witness = tmp_path / f"ran-{name}"
    script = tmp_path / f"evil-{name}.sh"
    script.write_text(f"#!/bin/sh\ntouch {witness}\nexit 1\n")
    script.chmod(0o755)
    return script, witness


def test_workspace_engine_git_dir_rewritten_runs_nothing_as_the_factory(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    co = start(ws, remote, tmp_path / "w")
    engine_git = co.path / ".git"
    names = [
        "ssh",
        "gpg",
        "fsmonitor",
        "clean",
        "smudge",
        "process",
        "external",
        "textconv",
        "credential",
        "receivepack",
        "askpass",
        "hook",
    ]
    scripts = {name: evil_script(tmp_path, name) for name in names}
    decoy = tmp_path / "decoy.git"
    git(env, tmp_path, "init", "-q", "--bare", str(decoy))
    hooks = tmp_path / "engine-hooks"
    hooks.mkdir()
    for hook in ("pre-commit", "commit-msg", "post-commit", "pre-push", "reference-transaction"):
        shutil.copy(scripts["hook"][0], hooks / hook)
        shutil.copy(scripts["hook"][0], engine_git / "hooks" / hook)
    s = {name: script for name, (script, _) in scripts.items()}
    with (engine_git / "config").open("a") as config:
        config.write(
            f"[core]\n\tsshCommand = {s['ssh']}\n\tfsmonitor = {s['fsmonitor']}\n"
            f"\thooksPath = {hooks}\n\taskPass = {s['askpass']}\n"
            f"[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = {s['gpg']}\n"
            f'[filter "evil"]\n\tclean = {s["clean"]}\n\tsmudge = {s["smudge"]}\n'
            f"\tprocess = {s['process']}\n\trequired = true\n"
            f"[diff]\n\texternal = {s['external']}\n"
            f'[diff "evil"]\n\ttextconv = {s["textconv"]}\n\tcommand = {s["external"]}\n'
            f"[credential]\n\thelper = !{s['credential']}\n"
            f'[remote "origin"]\n\treceivepack = {s["receivepack"]}\n'
            f"\tpushurl = file://{decoy}\n"
        )
    (engine_git / "HEAD").write_text("ref: refs/heads/elsewhere\n")
    (engine_git / "objects" / "info" / "alternates").write_text(f"{decoy}/objects\n")
    (co.path / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (co.path / "app.py").write_text("changed\n")

    commit = co.commit_all("fleet: work")
    assert commit is not None
    assert co.push() == commit == tip(env, remote, "fleet/j1")
    assert co.diff_stat()["files"] == 2
    co.write_patch(tmp_path / "p.patch")
    ran = [name for name, (_, witness) in scripts.items() if witness.exists()]
    assert ran == []
    # the content went to the real remote, unfiltered, and nothing to the engine's decoy
    assert git(env, remote, "show", f"{commit}:app.py") == "changed"
    assert git(env, decoy, "for-each-ref") == ""


def test_workspace_engine_has_its_own_clean_repository_on_the_branch(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    co = start(ws, remote, tmp_path / "w")
    (co.path / ".fleet").mkdir()
    (co.path / ".fleet" / "prompt.md").write_text("control file\n")
    assert git(env, co.path, "symbolic-ref", "--short", "HEAD") == "fleet/j1"
    assert git(env, co.path, "status", "--porcelain") == ""
    assert git(env, co.path, "rev-parse", "HEAD") == co.lease == co.head()
    assert git(env, co.path, "rev-parse", "HEAD~1") == co.base_commit
    assert git(env, co.path, "rev-parse", "origin/main") == co.base_commit
    # the factory's git dir is its own, outside the work dir
    private = ws.private_path("j1", 1)
    assert (private / "HEAD").is_file()
    assert co.path not in private.parents
    assert (co.path / ".git").is_dir() and not (co.path / ".git").is_symlink()


def test_workspace_engine_commits_are_captured_as_content(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    (co.path / "feature.txt").write_text("engine work\n")
    (co.path / "README.md").unlink()
    git(env, co.path, "add", "-A")
    git(env, co.path, "commit", "-q", "-m", "engine's own commit")
    engine_head = git(env, co.path, "rev-parse", "HEAD")

    commit = co.commit_all("fleet: checkpoint")
    assert commit is not None and commit != engine_head
    assert co.push() == commit == co.head()
    files = git(env, remote, "ls-tree", "-r", "--name-only", commit).splitlines()
    assert "feature.txt" in files and "README.md" not in files
    assert "Fleet-Job: j1" in git(env, remote, "log", "-1", "--format=%B", commit)
    # the factory did not move the engine's repository
    assert git(env, co.path, "rev-parse", "HEAD") == engine_head
    assert git(env, co.path, "status", "--porcelain") == ""


def test_workspace_control_files_and_nested_repositories_are_never_committed(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    (co.path / ".fleet").mkdir()
    (co.path / ".fleet" / "engine.log").write_text("log\n")
    nested = co.path / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(env, nested, "init", "-q")
    (nested / "lib.py").write_text("lib\n")
    git(env, nested, "add", "-A")
    git(env, nested, "commit", "-q", "-m", "nested")
    (co.path / "sub").mkdir()
    (co.path / "sub" / ".git").write_text("not a repository\n")
    (co.path / "sub" / "kept.txt").write_text("kept\n")
    (co.path / "top.txt").write_text("top\n")

    commit = co.commit_all("fleet: work")
    assert commit is not None
    co.push()
    listing = git(env, remote, "ls-tree", "-r", commit).splitlines()
    paths = [line.split("\t", 1)[1] for line in listing]
    assert "top.txt" in paths and "sub/kept.txt" in paths
    assert not any(p.startswith(".fleet") or ".git" in p.split("/") for p in paths)
    assert not any(p.startswith("vendor") for p in paths)
    assert not any(line.startswith("160000") for line in listing)
    assert co.commit_all("again") is None


def test_workspace_write_patch_replaces_a_planted_symlink(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    work(co, "a.txt", "a\n")
    outside = tmp_path / "factory-file"
    outside.write_text("the factory's own\n")
    (co.path / ".fleet").mkdir()
    target = co.path / ".fleet" / "diff.patch"
    target.symlink_to(outside)
    size = co.write_patch(target)
    assert not target.is_symlink() and target.stat().st_size == size > 0
    assert b"a.txt" in target.read_bytes()
    assert outside.read_text() == "the factory's own\n"
    # a link planted as the patch's directory is not followed either
    (co.path / "linked").symlink_to(tmp_path)
    with pytest.raises(GitError):
        co.write_patch(co.path / "linked" / "diff.patch")
    assert not (tmp_path / "diff.patch").exists()
    assert [p.name for p in co.path.joinpath(".fleet").iterdir()] == ["diff.patch"]


def test_workspace_stop_refuses_later_commits_and_pushes(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    co = start(ws, remote, tmp_path / "w")
    pushed = work(co, "a.txt", "a\n")
    (co.path / "b.txt").write_text("b\n")
    co.stop()
    for call in (
        lambda: co.commit_all("fleet: late"),
        co.push,
        lambda: co.open_pr(title="t", body="b"),
    ):
        with pytest.raises(PushRefused, match="stopped: the attempt was fenced or cancelled"):
            call()
    assert co.head() == pushed == tip(env, remote, "fleet/j1")
    staged = git(env, tmp_path, f"--git-dir={ws.private_path('j1', 1)}", "ls-files")
    assert "b.txt" not in staged.split()  # not even added: git was not run


def test_workspace_stop_while_a_push_is_on_its_way(
    tmp_path: Path, env: dict[str, str], remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    co = start(Workspaces(tmp_path / "m1", env=env), remote, tmp_path / "w")
    before = tip(env, remote, "fleet/j1")
    (co.path / "a.txt").write_text("a\n")
    assert co.commit_all("fleet: work") is not None
    real_head = co.head

    def head_then_fenced() -> str:
        found = real_head()
        co.stop()  # the attempt is fenced between reading HEAD and starting git push
        return found

    monkeypatch.setattr(co, "head", head_then_fenced)
    with pytest.raises(PushRefused, match="stopped"):
        co.push()
    assert tip(env, remote, "fleet/j1") == before == co.lease


def test_workspace_gh_runs_on_the_private_repository(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "gh-seen"
    (bin_dir / "gh").write_text(
        "#!/bin/sh\n"
        f'echo "dir=$GIT_DIR" >> {seen}\n'
        f'echo "pwd=$(pwd)" >> {seen}\n'
        f'echo "url=$(git remote get-url origin)" >> {seen}\n'
        'echo "https://github.example/o/r/pull/9"\n'
    )
    (bin_dir / "gh").chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    ws = Workspaces(tmp_path / "m1", env=env)
    co = start(ws, remote, tmp_path / "w")
    git(env, co.path, "remote", "set-url", "origin", "file:///engine/decoy.git")
    assert co.open_pr(title="t", body="b") == ("https://github.example/o/r/pull/9", None)
    lines = seen.read_text().splitlines()
    assert lines == [
        f"dir={ws.private_path('j1', 1)}",
        f"pwd={ws.private_path('j1', 1)}",
        f"url={url(remote)}",
    ]


def test_workspace_new_attempt_replaces_older_private_git_dirs(
    tmp_path: Path, env: dict[str, str], remote: Path
) -> None:
    ws = Workspaces(tmp_path / "m1", env=env)
    first = start(ws, remote, tmp_path / "w", epoch=1)
    work(first, "a.txt", "a\n")
    second = start(ws, remote, tmp_path / "w", epoch=2, checkpoint=first.checkpoint())
    assert not ws.private_path("j1", 1).exists()
    assert ws.private_path("j1", 2).is_dir()
    assert (second.path / "a.txt").read_text() == "a\n"
    with pytest.raises(GitError):
        first.commit_all("zombie")  # its git dir is gone: it cannot write anywhere
