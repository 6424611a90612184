"""Settings, the config file, capability detection and engine commands."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from factory_cli.capabilities import arch_capability, detect, invalid, os_capability
from factory_cli.config import (
    SETTINGS,
    ConfigError,
    config_dir,
    config_path,
    data_dir,
    env_help,
    load,
    mask,
    resolve,
    save_file,
)
from factory_cli.engines import PRESETS, EngineError, ShellProcess, choose, engine_env, render

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")
with_proc = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")


@pytest.mark.parametrize(
    ("platform", "env", "config", "data"),
    [
        ("linux", {"HOME": "/h"}, "/h/.config/fleet-factory", "/h/.local/share/fleet-factory"),
        (
            "linux",
            {"HOME": "/h", "XDG_CONFIG_HOME": "/x/c", "XDG_DATA_HOME": "/x/d"},
            "/x/c/fleet-factory",
            "/x/d/fleet-factory",
        ),
        (
            "darwin",
            {"HOME": "/Users/a"},
            "/Users/a/Library/Application Support/fleet-factory",
            "/Users/a/Library/Application Support/fleet-factory",
        ),
        (
            "win32",
            {"USERPROFILE": "C:/U", "APPDATA": "C:/U/R", "LOCALAPPDATA": "C:/U/L"},
            "C:/U/R/fleet-factory",
            "C:/U/L/fleet-factory",
        ),
        ("linux", {"HOME": "/h", "FLEET_CONFIG_DIR": "/f"}, "/f", "/f"),
    ],
)
def test_config_locations_per_platform(
    platform: str, env: dict[str, str], config: str, data: str
) -> None:
    assert config_dir(env, platform) == Path(config)
    assert data_dir(env, platform) == Path(data)
    assert config_path(env, platform) == Path(config) / "config.json"


@posix_only
def test_config_file_is_created_0600_in_a_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "config.json"
    old = os.umask(0)  # even with a permissive umask
    try:
        save_file(path, {"token": "flf_secret", "api": "http://x/api", "cost": None})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert '"token": "flf_secret"' in path.read_text() and "cost" not in path.read_text()
    save_file(path, {"token": "flf_other"})  # rewritten: still 0600, no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_config_env_overrides_the_file_and_flags_override_env(tmp_path: Path) -> None:
    env = {"FLEET_CONFIG_DIR": str(tmp_path)}
    save_file(
        tmp_path / "config.json",
        {"api": "http://file/api", "seats": 2, "token": "flf_file", "caps": ["gpu"]},
    )
    settings = load({}, env)
    assert (settings.api, settings.seats, settings.token, settings.caps) == (
        "http://file/api",
        2,
        "flf_file",
        ("gpu",),
    )
    env |= {"FLEET_API": "http://env/api", "FLEET_SEATS": "4", "FLEET_CAPS": "a, b:c"}
    settings = load({}, env)
    assert (settings.api, settings.seats, settings.caps) == ("http://env/api", 4, ("a", "b:c"))
    assert settings.sources["api"] == "env FLEET_API"
    assert settings.sources["token"].startswith("file ")
    settings = load({"api": "http://flag/api", "seats": None}, env)
    assert settings.api == "http://flag/api" and settings.seats == 4
    assert settings.sources["api"] == "flag"
    assert (
        settings.work_root == tmp_path / "work" and settings.state_path == tmp_path / "state.json"
    )


def test_config_every_setting_has_an_env_var_named_in_help() -> None:
    text = env_help()
    for setting in SETTINGS:
        assert setting.env.startswith("FLEET_") and setting.env in text
        assert setting.name.replace("_", "").upper() in setting.env.replace("_", "")
    assert "FLEET_CONFIG_DIR" in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLEET_SEATS": "0"}, "seats"),
        ({"FLEET_SEATS": "many"}, "seats"),
        ({"FLEET_COST": "2"}, "cost"),
        ({"FLEET_DEREGISTER_ON_EXIT": "perhaps"}, "deregister_on_exit"),
        ({"FLEET_REVIEW": "sometimes"}, "review"),
        ({"FLEET_POLL_SECONDS": "-1"}, "poll_seconds"),
    ],
)
def test_config_invalid_values_name_the_setting_and_source(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        resolve({}, env, {}, config_file=Path("c.json"), data=Path("."))
    assert "env FLEET_" in str(error.value)


def test_config_invalid_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load({}, {"FLEET_CONFIG_DIR": str(tmp_path)})


def test_config_require_names_flag_and_variable(tmp_path: Path) -> None:
    settings = load({}, {"FLEET_CONFIG_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"token \(--token or FLEET_TOKEN\)"):
        settings.require("api", "token")


def test_config_mask_never_shows_the_secret() -> None:
    assert mask("flf_abcdefghijklmnopqrstuvwxyz") == "flf_abcd…"
    assert mask("short") == "…" and mask(None) is None


# --- capabilities ----------------------------------------------------------------------------


def _executable(directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".exe" if os.name == "nt" else ""
    path = directory / (name + suffix)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_capabilities_from_a_fake_path(tmp_path: Path) -> None:
    for name in ("claude", "aider", "git", "python3", "docker"):
        _executable(tmp_path / "bin", name)
    _executable(tmp_path / "other", "node")
    (tmp_path / "bin" / "codex").write_text("not executable")  # not runnable: not found
    path = os.pathsep.join([str(tmp_path / "bin"), str(tmp_path / "other")])
    caps = detect(path=path, system="Linux", machine="aarch64", extra=["gpu", "team:infra"])
    expected = [
        "arch:arm64",
        "engine:aider",
        "engine:claude",
        "gpu",
        "has:docker",
        "has:git",
        "has:node",
        "has:python",
        "os:linux",
        "team:infra",
    ]
    if os.name == "nt":  # no executable bit there
        expected = sorted([*expected, "engine:codex"])
    assert caps == expected


def test_capabilities_with_an_empty_path() -> None:
    assert detect(path="", system="Darwin", machine="x86_64") == ["arch:x86_64", "os:macos"]


@pytest.mark.parametrize(
    ("system", "cap"),
    [
        ("Linux", "os:linux"),
        ("Darwin", "os:macos"),
        ("Windows", "os:windows"),
        ("FreeBSD", "os:freebsd"),
    ],
)
def test_capabilities_os_names(system: str, cap: str) -> None:
    assert os_capability(system) == cap


@pytest.mark.parametrize(
    ("machine", "cap"),
    [
        ("x86_64", "arch:x86_64"),
        ("AMD64", "arch:x86_64"),
        ("aarch64", "arch:arm64"),
        ("arm64", "arch:arm64"),
        ("riscv64", "arch:riscv64"),
        ("", "arch:unknown"),
    ],
)
def test_capabilities_arch_names(machine: str, cap: str) -> None:
    assert arch_capability(machine) == cap


def test_capabilities_invalid_ones_are_named() -> None:
    assert invalid(["ok", "kind:ok", "Upper", "a b", "x:y:z", "x" * 101]) == [
        "Upper",
        "a b",
        "x:y:z",
        "x" * 101,
    ]


# --- engines ------------------------------------------------------------------------------------


def test_engine_template_values_are_shell_quoted() -> None:
    values = {"prompt_file": "/w/my job/prompt.md", "workdir": "/w/it's", "job_id": "j1"}
    command = render(
        "agent -f {prompt_file} -C {workdir} --id {job_id} {{literal}}", values, windows=False
    )
    assert command == "agent -f '/w/my job/prompt.md' -C '/w/it'\"'\"'s' --id j1 {literal}"
    assert render("a {prompt_file}", values, windows=True) == 'a "/w/my job/prompt.md"'


def test_engine_template_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(EngineError, match=r"unknown placeholder \{prompt\}"):
        render("agent {prompt}", {"prompt_file": "p"})
    with pytest.raises(EngineError, match="bad engine command template"):
        render("agent {", {})


def test_engine_choice(tmp_path: Path) -> None:
    assert choose(None, "my-agent {prompt_file}") == ("custom", "my-agent {prompt_file}")
    assert choose("aider", None, path="") == ("aider", PRESETS["aider"])
    with pytest.raises(EngineError, match="unknown engine"):
        choose("gpt", None, path="")
    with pytest.raises(EngineError, match="no engine"):
        choose(None, None, path=str(tmp_path))
    _executable(tmp_path, "codex")
    _executable(tmp_path, "aider")
    assert choose(None, None, path=str(tmp_path))[0] == "codex"  # claude, codex, aider


def test_engine_demo_preset_runs_the_shipped_demo_engine() -> None:
    command = render(PRESETS["demo"], {"python": sys.executable}, windows=False)
    assert command.startswith(sys.executable) and command.endswith("demo_engine.py")
    assert Path(command.split(" ", 1)[1]).is_file()


def test_engine_env_hides_the_factory_secrets() -> None:
    env = engine_env(
        {"PATH": "/bin", "FLEET_TOKEN": "a", "FLEET_OPERATOR_TOKEN": "b", "FLEET_API": "u"},
        {"FLEET_JOB_ID": "j1"},
    )
    assert env == {"PATH": "/bin", "FLEET_API": "u", "FLEET_JOB_ID": "j1"}


@posix_only
@with_proc
def test_engine_shell_process_kill_stops_its_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    proc = ShellProcess(
        f"sleep 60 & echo $! > {marker}; wait",
        cwd=tmp_path,
        env=dict(os.environ),
        log=tmp_path / "log",
    )
    deadline = time.monotonic() + 10
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        os.sched_yield()
    assert proc.poll() is None
    proc.kill()  # waits for the shell itself
    assert proc.poll() == -9
    child = int(marker.read_text())
    assert _dead(child), "the engine's own child survived the kill"


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (a container's init may never reap it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        os.sched_yield()
    return False


@posix_only
def test_engine_shell_process_runs_in_its_dir_and_logs(tmp_path: Path) -> None:
    proc = ShellProcess(
        "echo hello from $FLEET_JOB_ID; pwd; exit 3",
        cwd=tmp_path,
        env={**os.environ, "FLEET_JOB_ID": "j9"},
        log=tmp_path / "engine.log",
    )
    while proc.poll() is None:
        os.sched_yield()
    assert proc.poll() == 3
    assert (tmp_path / "engine.log").read_text().split("\n")[:2] == ["hello from j9", str(tmp_path)]


def test_config_review_mode_from_flag_env_or_file(tmp_path: Path) -> None:
    env = {"FLEET_CONFIG_DIR": str(tmp_path)}
    assert load({}, env).review is False
    save_file(tmp_path / "config.json", {"review": True})
    assert load({}, env).review is True
    assert load({}, {**env, "FLEET_REVIEW": "0"}).review is False
    assert load({"review": True}, {**env, "FLEET_REVIEW": "0"}).review is True
