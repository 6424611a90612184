"""The engine user: who engines run as, the checks at start, and an honest run as ``nobody``."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config import save_file
from factory_cli.engine_user import (
    EngineUser,
    EngineUserError,
    check_engine_user,
    lookup,
    prepare_for_user,
    root_policy,
)
from factory_cli.engines import engine_env, spawn_shell_as

IS_ROOT = os.name == "posix" and os.geteuid() == 0


def nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def test_engine_user_root_without_one_refused_unless_allowed() -> None:
    with pytest.raises(EngineUserError) as refused:
        root_policy(None, allow_root=False, euid=0)
    assert refused.value.code == "root_engine_refused"
    assert "--engine-user" in str(refused.value) and "--allow-root-engine" in str(refused.value)
    assert "as root" in (root_policy(None, allow_root=True, euid=0) or "")
    assert root_policy("nobody", allow_root=False, euid=0) is None


def test_engine_user_not_root_without_one_warns_in_one_line(tmp_path: Path) -> None:
    user, warning = check_engine_user(
        None,
        allow_root=False,
        config_path=tmp_path / "config.json",
        work_root=tmp_path / "work",
        euid=lambda: 1000,
    )
    assert user is None and warning is not None and "\n" not in warning
    assert "own user" in warning and "token" in warning


def test_engine_user_run_refused_as_root_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    save_file(
        tmp_path / "config.json",
        {"api": "http://127.0.0.1:9/api", "token": "flf_x", "factoryId": "f1"},
    )
    env = {"FLEET_CONFIG_DIR": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    code = main(["run", "--once", "--engine", "demo"], env=env)
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to run engines as root" in err and "--allow-root-engine" in err


def _help(capsys: pytest.CaptureFixture[str]) -> str:
    from factory_cli.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    return capsys.readouterr().out


def test_engine_user_flags_and_env_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    for needle in ("--engine-user", "--allow-root-engine", "FLEET_ENGINE_USER", "sudo"):
        assert needle in text
    assert "FLEET_ALLOW_ROOT_ENGINE" in text


def test_engine_user_unknown_user_is_a_clear_error(tmp_path: Path) -> None:
    def missing(name: str) -> Any:
        raise KeyError(name)

    with pytest.raises(EngineUserError) as raised:
        check_engine_user(
            "no-such-user-x",
            allow_root=False,
            config_path=tmp_path / "config.json",
            work_root=tmp_path,
            euid=lambda: 0,
            getpwnam=missing,
        )
    assert raised.value.code == "unknown_user" and "no-such-user-x" in str(raised.value)


def test_engine_user_env_carries_no_factory_token_but_the_agents_keys() -> None:
    base = {
        "FLEET_TOKEN": "flf_secret",
        "FLEET_OPERATOR_TOKEN": "flo_secret",
        "FLEET_ENROLLMENT_TOKEN": "fle_secret",
        "ANTHROPIC_API_KEY": "sk-ant",
        "PATH": "/usr/bin",
    }
    env = engine_env(base, {"FLEET_JOB_ID": "j1"})
    assert "flf_secret" not in env.values() and "flo_secret" not in env.values()
    assert "fle_secret" not in env.values()
    assert env["ANTHROPIC_API_KEY"] == "sk-ant" and env["FLEET_JOB_ID"] == "j1"
    user = EngineUser("eng", 4242, 4242, home=None)
    seen = user.environ(env, Path("/w/j1"))
    assert (seen["HOME"], seen["USER"], seen["LOGNAME"]) == ("/w/j1", "eng", "eng")


def test_engine_user_not_root_needs_working_sudo(tmp_path: Path) -> None:
    def sudo(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        assert argv[:6] == ["sudo", "-n", "-E", "-u", "nobody", "--"]
        assert "FLEET_TOKEN" not in kw["env"]
        return subprocess.CompletedProcess(argv, 1, b"", b"sudo: a password is required\n")

    if nobody() is None:
        pytest.skip("no user nobody on this machine")
    with pytest.raises(EngineUserError) as raised:
        check_engine_user(
            "nobody",
            allow_root=False,
            config_path=tmp_path / "config.json",
            work_root=Path(tempfile.gettempdir()),
            euid=lambda: 4321,
            run=sudo,
        )
    assert raised.value.code == "sudo_failed"
    assert "a password is required" in str(raised.value) and "NOPASSWD" in str(raised.value)


def test_engine_user_config_tightened_and_work_root_checked(tmp_path: Path) -> None:
    if nobody() is None or not IS_ROOT:
        pytest.skip("needs root and the user nobody")
    config_dir = tmp_path / "cfg"
    config_dir.mkdir(mode=0o755)
    os.chmod(config_dir, 0o755)
    config = config_dir / "config.json"
    config.write_text("{}")
    os.chmod(config, 0o644)
    work = Path(tempfile.mkdtemp(prefix="fleet-work-"))
    try:
        os.chmod(work, 0o755)
        user, warning = check_engine_user(
            "nobody", allow_root=False, config_path=config, work_root=work
        )
        assert user is not None and user.name == "nobody" and warning is None
        assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        with pytest.raises(EngineUserError) as raised:
            check_engine_user(
                "nobody", allow_root=False, config_path=config, work_root=config_dir / "work"
            )
        assert raised.value.code == "work_dir_unreachable" and raised.value.field == "work_dir"
    finally:
        shutil.rmtree(work)


# --- for real, as root: the engine runs as nobody ----------------------------------------------

# The engine: plain sh (the factory's Python may live where nobody cannot run it).
ENGINE = """
out=.fleet/out; mkdir -p "$out"
id -u > "$out/uid"; id -g > "$out/gid"; id -G > "$out/groups"
printf %s "$HOME" > "$out/home"; printf %s "$USER" > "$out/user"
printf %s "${FLEET_TOKEN:-}" > "$out/token_env"
cat "$1" > "$out/config" 2> "$out/config.err"
cat "$2" > "$out/token" 2> "$out/token.err"
cat "/proc/$3/environ" > "$out/environ" 2> "$out/environ.err"
echo mine > written.txt
sleep 300 & echo $! > "$out/child"
sh -c 'sleep 300 & wait' & echo $! > "$out/grandchild"
echo ready > "$out/ready"
wait
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A work dir the engine user can reach (pytest's own tmp dirs are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="fleet-engine-user-"))
    os.chmod(root, 0o755)
    (root / ".fleet").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0): it is not running
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.skipif(not IS_ROOT, reason="switching user for real needs the factory to be root")
@pytest.mark.skipif(nobody() is None, reason="needs the unprivileged user nobody (`id nobody`)")
def test_engine_user_nobody_reads_nothing_of_the_factory_and_leaves_nothing(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = nobody()
    assert entry is not None
    config_dir = tmp_path / "factory"
    config = config_dir / "config.json"
    save_file(config, {"token": "flf_the_factory_secret", "factoryId": "f1"})
    token_file = config_dir / "token"
    token_file.write_text("flf_the_factory_secret")
    os.chmod(token_file, 0o600)
    monkeypatch.setenv("FLEET_TOKEN", "flf_the_factory_secret")
    user, _ = check_engine_user(
        "nobody", allow_root=False, config_path=config, work_root=workdir.parent
    )
    assert user is not None and not user.via_sudo
    (workdir / "from-factory.txt").write_text("given")
    (workdir / "link-out").symlink_to(config)  # must not be followed by the chown

    spawn = spawn_shell_as(user)
    command = " ".join(
        ["sh", "-c", _quote(ENGINE), "engine", str(config), str(token_file), str(os.getpid())]
    )
    env = engine_env(os.environ, {"FLEET_JOB_ID": "j1"})
    proc = spawn(command, cwd=workdir, env=env, log=workdir / ".fleet" / "engine.log")
    out = workdir / ".fleet" / "out"
    deadline = time.monotonic() + 30
    while not (out / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    log = (workdir / ".fleet" / "engine.log").read_text()
    assert (out / "ready").exists(), log

    def read(name: str) -> str:
        return (out / name).read_text().strip()

    assert read("uid") == str(entry.pw_uid)  # `id -u` inside the engine
    assert read("gid") == str(entry.pw_gid) and read("groups").split() == [str(entry.pw_gid)]
    assert read("user") == "nobody" and read("home") in (entry.pw_dir, str(workdir))
    for name in ("config", "token", "environ"):
        assert read(name) == "", name  # got nothing
        assert "Permission denied" in read(f"{name}.err"), name
    assert read("token_env") == ""
    assert "flf_the_factory_secret" not in log
    assert (workdir / "written.txt").stat().st_uid == entry.pw_uid
    assert (workdir / "from-factory.txt").stat().st_uid == entry.pw_uid
    assert config.stat().st_uid == os.geteuid()  # the link was not followed
    assert os.lstat(workdir / "link-out").st_uid == entry.pw_uid

    pgid = proc.pid
    members = [proc.pid, int(read("child")), int(read("grandchild"))]
    assert all(_alive(pid) for pid in members)
    proc.terminate()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    if any(_alive(pid) for pid in members):
        proc.kill()
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(pgid) == []
    assert not any(_alive(pid) for pid in members)


@pytest.mark.skipif(not IS_ROOT, reason="switching user for real needs the factory to be root")
@pytest.mark.skipif(nobody() is None, reason="needs the unprivileged user nobody (`id nobody`)")
def test_engine_user_kill_reaches_children_that_ignore_sigterm(workdir: Path) -> None:
    user = lookup("nobody")
    spawn = spawn_shell_as(user)
    proc = spawn(
        "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300",
        cwd=workdir,
        env=engine_env(os.environ, {}),
        log=workdir / ".fleet" / "engine.log",
    )
    deadline = time.monotonic() + 10
    while len(_group_members(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = _group_members(proc.pid)
    assert len(members) >= 3
    proc.terminate()
    time.sleep(0.3)
    assert proc.poll() is None  # SIGTERM ignored
    proc.kill()
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(proc.pid) == []


@pytest.mark.skipif(not IS_ROOT, reason="giving files away needs root")
def test_engine_user_prepare_never_follows_links_out(tmp_path: Path, workdir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (workdir / "sub").mkdir()
    (workdir / "sub" / "file").write_text("f")
    (workdir / "dirlink").symlink_to(outside)
    (workdir / "sub" / "filelink").symlink_to(outside / "secret")
    user = EngineUser("someone", 54321, 54322)
    prepare_for_user(workdir, user)
    for path in (workdir, workdir / "sub", workdir / "sub" / "file", workdir / "dirlink"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (54321, 54322), path
    assert os.lstat(workdir / "sub" / "filelink").st_uid == 54321
    assert outside.stat().st_uid == os.geteuid()
    assert (outside / "secret").stat().st_uid == os.geteuid()
    with pytest.raises(EngineUserError):
        prepare_for_user(workdir / "dirlink", user)


def _group_members(pgid: int) -> list[int]:
    """Running (not zombie) processes of the process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _quote(text: str) -> str:
    return shlex.quote(text)
