"""Engines: the agent a job runs, as a command line run through the shell.

A preset names a template; ``--engine-cmd`` gives one directly. Placeholders are replaced by
shell-quoted values:

- ``{prompt_file}`` — the prompt (profile preamble, title, body, notes), markdown;
- ``{workdir}`` — the job's work directory (the engine's current directory too);
- ``{job_id}`` — the job's id; ``{manifest_file}``, ``{checkpoint_file}`` — the files;
- ``{python}`` — this Python interpreter (for engines written in Python);
- ``{max_cost_usd}`` — the attempt's cost cap in USD, empty when it has none.

``{NAME:--flag}`` gives ``--flag VALUE`` when the value is set and nothing at all when it is
not (the claude preset passes ``{max_cost_usd:--max-budget-usd}``). Write ``{{`` and ``}}``
for literal braces. The command runs through the shell (``/bin/sh``
on POSIX, ``cmd`` on Windows) so redirections such as ``< {prompt_file}`` work, in its own
process group so that stopping it stops everything it started.

The presets are starting points: check them against the version of each agent installed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from factory_cli.capabilities import ENGINES, on_path
from factory_cli.workdir import open_append

if TYPE_CHECKING:
    from factory_cli.engine_user import EngineUser


def quote(value: str, *, windows: bool = os.name == "nt") -> str:
    return subprocess.list2cmdline([value]) if windows else shlex.quote(value)


def _demo_command() -> str:
    """The demo engine by its file path (it needs only the standard library), so it runs
    whether or not this package is importable from the job's work dir."""
    script = str(Path(__file__).resolve().with_name("demo_engine.py"))
    return "{python} " + quote(script).replace("{", "{{").replace("}", "}}")


# Each agent in its machine-readable mode (factory_cli/adapters.py reads the output), prompt
# from the file, edits allowed without asking. Checked against claude 2.1.332, codex 0.171.0
# and aider's --help.
PRESETS: dict[str, str] = {
    "claude": (
        "claude -p --output-format stream-json --verbose --permission-mode acceptEdits"
        " {max_cost_usd:--max-budget-usd} < {prompt_file}"
    ),
    "codex": "codex exec --json --sandbox workspace-write --skip-git-repo-check - < {prompt_file}",
    "aider": "aider --yes-always --no-pretty --no-stream --message-file {prompt_file}",
    # `python -m factory_cli.demo_engine` does the same where the package is importable.
    "demo": _demo_command(),
}
PLACEHOLDERS = (
    "prompt_file",
    "workdir",
    "job_id",
    "manifest_file",
    "checkpoint_file",
    "python",
    "max_cost_usd",
)
# Placeholders an attempt may leave unset: they render as nothing.
OPTIONAL_PLACEHOLDERS = frozenset({"max_cost_usd"})


class EngineError(Exception):
    """The engine cannot be chosen or started."""


# Stands for an unset optional placeholder until render drops it with one space before it.
_ABSENT = "\x00"


class _Value(str):
    """A shell-quoted value; ``{name:--flag}`` renders ``--flag VALUE``, or nothing when the
    value is unset."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        if self == _ABSENT:
            return _ABSENT
        return f"{spec} {self}" if spec else str(self)


class _Values(dict[str, _Value]):
    def __missing__(self, key: str) -> _Value:
        if key in OPTIONAL_PLACEHOLDERS:
            return _Value(_ABSENT)
        raise EngineError(
            f"unknown placeholder {{{key}}} in the engine command; known: "
            + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        )


def render(template: str, values: Mapping[str, str], *, windows: bool = os.name == "nt") -> str:
    """The template with each placeholder replaced by its shell-quoted value. An optional
    placeholder left unset (absent or empty) renders as nothing."""
    quoted = _Values(
        {
            k: _Value(quote(v, windows=windows))
            for k, v in values.items()
            if v or k not in OPTIONAL_PLACEHOLDERS
        }
    )
    try:
        rendered = template.format_map(quoted)
    except (ValueError, IndexError) as exc:
        raise EngineError(f"bad engine command template {template!r}: {exc}") from None
    return re.sub(" ?" + _ABSENT, "", rendered)


def usd_arg(value: float) -> str:
    """A cost cap as a command-line number: plain decimal, no exponent (``0.5``, ``100000``)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


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
    """A command run through the shell in a process group of its own, output to a log.

    With ``user`` (an ``EngineUser``) the command runs as that user: a root factory switches
    user in the child (uid, primary gid, no supplementary groups); any other factory goes
    through ``sudo -n -E -u USER``. Stopping it still reaches everything it started: as root
    the signal goes to the process group; through sudo it is sent as USER (``sudo ... kill``)
    to each process group below sudo, and to sudo itself."""

    def __init__(
        self,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        user: EngineUser | None = None,
    ) -> None:
        self._log: IO[bytes] = open_append(log)  # never through an engine's link
        self._user = user
        kwargs: dict[str, object] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        args: str | list[str] = command
        shell = True  # a shell on purpose: templates may redirect
        if user is not None and user.via_sudo:
            from factory_cli.engine_user import sudo_argv

            args, shell = sudo_argv(user, "/bin/sh", "-c", command), False
        elif user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        try:
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                args,
                shell=shell,
                cwd=str(cwd),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                **kwargs,  # type: ignore[call-overload]
            )
        except (OSError, subprocess.SubprocessError) as exc:
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
            if self._user is not None and self._user.via_sudo:
                _signal_as(self._user, _groups_below(self._proc.pid), posix_signal)
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


def _groups_below(pid: int) -> set[int]:
    """The process groups of ``pid`` and of every process below it (read from ``/proc``; just
    ``pid``'s own group where there is none)."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    with suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents[int(entry.name)] = int(fields[1])
            groups[int(entry.name)] = int(fields[2])
    found = {groups.get(pid, pid)}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.add(groups[child])
                frontier.append(child)
    return found


def _signal_as(user: EngineUser, groups: set[int], posix_signal: int) -> None:
    """Send ``posix_signal`` to ``groups`` as ``user`` (the factory may not signal its
    processes itself). Best effort: a group already gone is fine."""
    from factory_cli.engine_user import plain_env, sudo_argv

    name = signal.Signals(posix_signal).name.removeprefix("SIG")
    targets = " ".join(f"-{g}" for g in sorted(groups) if g > 1)
    if not targets:
        return
    with suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            sudo_argv(user, "/bin/sh", "-c", f"kill -s {name} -- {targets} 2>/dev/null"),
            env=plain_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def spawn_shell(command: str, *, cwd: Path, env: Mapping[str, str], log: Path) -> EngineProcess:
    return ShellProcess(command, cwd=cwd, env=env, log=log)


def spawn_shell_as(user: EngineUser | None, *, prepare: bool = True) -> Spawner:
    """A ``Spawner`` running each command as ``user`` (``None``: as the factory, the same as
    ``spawn_shell``). Before each spawn the work dir (``cwd``) is handed to ``user``
    (``engine_user.prepare_for_user``; ``prepare=False`` when the caller does it) and the
    environment gets its HOME, USER, LOGNAME."""
    if user is None:
        return spawn_shell
    from factory_cli.engine_user import prepare_for_user

    def spawn(command: str, *, cwd: Path, env: Mapping[str, str], log: Path) -> EngineProcess:
        if prepare:
            prepare_for_user(cwd, user)
        return ShellProcess(command, cwd=cwd, env=user.environ(env, cwd), log=log, user=user)

    return spawn


def engine_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: ours, minus the factory's own secrets (``SECRET_VARS``),
    plus the job's. Only the factory's own variables are removed: an agent's credentials
    (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ...) pass through on purpose."""
    env = {k: v for k, v in base.items() if k not in SECRET_VARS}
    env.update(extra)
    return env


# The engine runs code from a job: it never sees the factory's credentials.
SECRET_VARS = frozenset({"FLEET_TOKEN", "FLEET_OPERATOR_TOKEN", "FLEET_ENROLLMENT_TOKEN"})
