"""Engines: the agent a job runs, as a command line run through the shell.

A preset names a template; ``--engine-cmd`` gives one directly. Placeholders are replaced by
shell-quoted values:

- ``{prompt_file}`` — the prompt (profile preamble, title, body, notes), markdown;
- ``{workdir}`` — the job's work directory (the engine's current directory too);
- ``{job_id}`` — the job's id; ``{manifest_file}``, ``{checkpoint_file}`` — the files;
- ``{python}`` — this Python interpreter (for engines written in Python).

Write ``{{`` and ``}}`` for literal braces. The command runs through the shell (``/bin/sh``
on POSIX, ``cmd`` on Windows) so redirections such as ``< {prompt_file}`` work, in its own
process group so that stopping it stops everything it started.

The presets are starting points: check them against the version of each agent installed.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, Protocol

from factory_cli.capabilities import ENGINES, on_path


def quote(value: str, *, windows: bool = os.name == "nt") -> str:
    return subprocess.list2cmdline([value]) if windows else shlex.quote(value)


def _demo_command() -> str:
    """The demo engine by its file path (it needs only the standard library), so it runs
    whether or not this package is importable from the job's work dir."""
    script = str(Path(__file__).resolve().with_name("demo_engine.py"))
    return "{python} " + quote(script).replace("{", "{{").replace("}", "}}")


PRESETS: dict[str, str] = {
    "claude": "claude -p --permission-mode acceptEdits < {prompt_file}",
    "codex": "codex exec --full-auto - < {prompt_file}",
    "aider": "aider --yes-always --no-pretty --message-file {prompt_file}",
    # `python -m factory_cli.demo_engine` does the same where the package is importable.
    "demo": _demo_command(),
}
PLACEHOLDERS = ("prompt_file", "workdir", "job_id", "manifest_file", "checkpoint_file", "python")


class EngineError(Exception):
    """The engine cannot be chosen or started."""


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise EngineError(
            f"unknown placeholder {{{key}}} in the engine command; known: "
            + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        )


def render(template: str, values: Mapping[str, str], *, windows: bool = os.name == "nt") -> str:
    """The template with each placeholder replaced by its shell-quoted value."""
    quoted = _Values({k: quote(v, windows=windows) for k, v in values.items()})
    try:
        return template.format_map(quoted)
    except (ValueError, IndexError) as exc:
        raise EngineError(f"bad engine command template {template!r}: {exc}") from None


def choose(engine: str | None, engine_cmd: str | None, path: str | None = None) -> tuple[str, str]:
    """``(name, template)`` of the engine to run: ``--engine-cmd`` wins, then a preset by
    name, then the first of claude, codex, aider found on ``PATH``."""
    if engine_cmd:
        return (engine or "custom"), engine_cmd
    if engine:
        if engine not in PRESETS:
            raise EngineError(
                f"unknown engine {engine!r}: one of {', '.join(PRESETS)}, or --engine-cmd"
            )
        return engine, PRESETS[engine]
    for name in ENGINES:
        if on_path((name,), path if path is not None else os.environ.get("PATH", "")):
            return name, PRESETS[name]
    raise EngineError(
        "no engine: none of " + ", ".join(ENGINES) + " is on PATH; "
        "pass --engine NAME or --engine-cmd 'TEMPLATE' (try --engine demo)"
    )


def python_executable() -> str:
    return sys.executable or "python3"


# --- processes -------------------------------------------------------------------------


class EngineProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code once it has exited (reaping it), else None."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group): it may write a checkpoint."""
        ...

    def kill(self) -> None:
        """Stop it at once (SIGKILL to its process group)."""
        ...


class Spawner(Protocol):
    def __call__(
        self, command: str, *, cwd: Path, env: Mapping[str, str], log: Path
    ) -> EngineProcess: ...


class ShellProcess:
    """A command run through the shell in a process group of its own, output to a log."""

    def __init__(self, command: str, *, cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self._log: IO[bytes] = log.open("ab")
        kwargs: dict[str, object] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            self._proc: subprocess.Popen[bytes] = (
                subprocess.Popen(  # a shell on purpose: templates may redirect
                    command,
                    shell=True,
                    cwd=str(cwd),
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    **kwargs,  # type: ignore[call-overload]
                )
            )
        except OSError as exc:
            self._log.close()
            raise EngineError(f"cannot start {command!r}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        code = self._proc.poll()
        if code is not None and not self._log.closed:
            self._log.close()
        return code

    def _signal(self, posix_signal: int) -> None:
        if self._proc.poll() is not None:
            return
        if os.name == "posix":
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, posix_signal)
        elif posix_signal == signal.SIGTERM:
            with suppress(OSError):
                self._proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
        else:
            with suppress(OSError):
                self._proc.kill()

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
        # SIGKILL cannot be ignored: reap it now so no zombie is left behind.
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        self.poll()


def spawn_shell(command: str, *, cwd: Path, env: Mapping[str, str], log: Path) -> EngineProcess:
    return ShellProcess(command, cwd=cwd, env=env, log=log)


def engine_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: ours, minus the factory's own secrets, plus the job's."""
    env = {k: v for k, v in base.items() if k not in SECRET_VARS}
    env.update(extra)
    return env


# The engine runs code from a job: it never sees the factory's credentials.
SECRET_VARS = frozenset({"FLEET_TOKEN", "FLEET_OPERATOR_TOKEN", "FLEET_ENROLLMENT_TOKEN"})
