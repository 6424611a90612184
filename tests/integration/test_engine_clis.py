"""The contract with the real agent CLIs, installed from npm by the test install path
(``package.json``): each preset, rendered as the factory renders it, runs against the real
``claude`` and ``codex`` with no credentials and no network. The flags must be accepted, and the
attempt must fail with the engine's own reason parsed from its stream (not logged in / cannot
reach its API), not with an exit code alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory_cli.adapters import ClaudeAdapter, CodexAdapter, adapter_for, probe_version
from factory_cli.engines import PRESETS, render, usd_arg

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="runs the presets through /bin/sh"),
]

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "node_modules" / ".bin"
REJECTED = ("unknown option", "unexpected argument", "is invalid", "invalid value", "requires")
# Credentials and settings a developer's shell may carry: the contract is "no credentials".
SCRUBBED_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "AZURE_OPENAI")
CODEX_WAIT = 25.0  # codex retries the network for ever: stop it once it has said why


def _installed(name: str) -> None:
    if not (BIN / name).exists():
        pytest.skip(f"node_modules/.bin/{name} is absent: run `npm ci` (make install) first")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FLEET_PRICES_FILE", None)
    return env


def _run(
    engine: str, tmp_path: Path, adapter: ClaudeAdapter | CodexAdapter, *, stop_when: str
) -> tuple[int | None, str]:
    """Run the preset as the factory would (shell, own process group, stdout and stderr to one
    log), feed its lines to the adapter, and stop it once a line holds ``stop_when`` or the
    time is up. Returns the exit code (None when we stopped it) and the whole output."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    prompt = tmp_path / "prompt.md"
    prompt.write_text("# Add a line\n\nAppend the line `hello` to NOTES.md.\n", encoding="utf-8")
    command = render(PRESETS[engine], {"prompt_file": str(prompt), "max_cost_usd": usd_arg(0.5)})
    log_path = tmp_path / "engine.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=work,
            env=_env(home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + CODEX_WAIT
    fed = 0
    code: int | None = None
    try:
        while True:
            code = proc.poll()
            lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            complete = lines if code is not None else lines[:-1]
            for line in complete[fed:]:
                adapter.feed(line)
            fed = max(fed, len(complete))
            if code is not None:
                break
            if any(stop_when in line for line in complete) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    for line in output.splitlines()[fed:]:
        adapter.feed(line)
    return code, output


def _flags_accepted(output: str) -> None:
    for line in output.splitlines():
        lowered = line.lower()
        assert not (
            lowered.startswith(("error:", "error ")) and any(word in lowered for word in REJECTED)
        ), f"a preset flag was refused: {line}"


def test_claude_preset_is_accepted_and_fails_not_logged_in(tmp_path: Path) -> None:
    _installed("claude")
    adapter = adapter_for("claude", env={})
    assert isinstance(adapter, ClaudeAdapter)
    code, output = _run("claude", tmp_path, adapter, stop_when='"type":"result"')
    _flags_accepted(output)
    assert code not in (0, None), output
    result = adapter.finish(code)
    assert result.is_error, output
    assert result.reason is not None and "not logged in" in result.reason.lower(), output
    assert adapter.version is not None and adapter.version.startswith("2.")
    assert adapter.model  # claude names its model in its init line
    assert probe_version(str(BIN / "claude"), _env(tmp_path / "home")) == adapter.version


def test_codex_preset_is_accepted_and_fails_cannot_reach_its_api(tmp_path: Path) -> None:
    _installed("codex")
    adapter = adapter_for("codex", env={"HOME": str(tmp_path / "home")})
    assert isinstance(adapter, CodexAdapter)
    code, output = _run("codex", tmp_path, adapter, stop_when="waiting for network")
    _flags_accepted(output)
    assert '"type":"thread.started"' in output, output  # exec --json parsed its arguments
    result = adapter.finish(code)
    assert result.is_error, output
    reason = (result.reason or "").lower()
    assert any(
        words in reason
        for words in ("network", "stream disconnected", "lookup address", "error sending request")
    ), output
    assert adapter.model is None and adapter.cost_usd is None  # unknown, never $0
    version = probe_version(str(BIN / "codex"), _env(tmp_path / "home"))
    assert version is not None and version.startswith("0.")
