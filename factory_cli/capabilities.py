"""What this machine can do, as capability strings the scheduler matches against jobs.

- ``os:linux`` / ``os:macos`` / ``os:windows`` (others: the lower-cased system name);
- ``arch:x86_64`` / ``arch:arm64`` (aliases folded: amd64, aarch64, ...);
- ``engine:NAME`` for each agent engine found on ``PATH`` (claude, codex, aider);
- ``has:NAME`` for each tool found on ``PATH`` (git, docker, node, python, ...);
- plus whatever the operator adds (``--cap``, ``FLEET_CAPS``).

Detection is a pure function of ``PATH``, the system name and the machine name, so tests
pass a fake ``PATH``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from collections.abc import Iterable, Sequence

ENGINES = ("claude", "codex", "aider")
# Tool -> the executables that prove it (any one of them).
TOOLS: dict[str, tuple[str, ...]] = {
    "git": ("git",),
    "docker": ("docker",),
    "podman": ("podman",),
    "node": ("node",),
    "npm": ("npm",),
    "python": ("python3", "python"),
    "uv": ("uv",),
    "go": ("go",),
    "cargo": ("cargo",),
    "java": ("java",),
    "dotnet": ("dotnet",),
    "make": ("make",),
    "gcc": ("gcc", "cc", "clang"),
    "gh": ("gh",),
}

# The server's capability grammar (fleet/http/parsing.py CAPABILITY).
CAPABILITY = re.compile(r"^[a-z0-9][a-z0-9._/+-]*(:[a-z0-9][a-z0-9._/+-]*)?$")

_OS = {"linux": "linux", "darwin": "macos", "windows": "windows"}
_ARCH = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8": "arm64",
    "i386": "x86",
    "i686": "x86",
    "x86": "x86",
}


def _slug(value: str) -> str:
    slug = re.sub(r"[^a-z0-9._+-]+", "-", value.strip().lower()).strip("-.")
    return slug or "unknown"


def os_capability(system: str) -> str:
    name = system.strip().lower()
    return "os:" + _OS.get(name, _slug(name))


def arch_capability(machine: str) -> str:
    name = machine.strip().lower()
    return "arch:" + _ARCH.get(name, _slug(name))


def on_path(names: Iterable[str], path: str | None) -> bool:
    return any(shutil.which(name, path=path) for name in names)


def detect(
    *,
    path: str | None = None,
    system: str | None = None,
    machine: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """This machine's capabilities, sorted. ``path`` defaults to ``$PATH``."""
    path = os.environ.get("PATH", "") if path is None else path
    caps = {
        os_capability(system if system is not None else platform.system()),
        arch_capability(machine if machine is not None else platform.machine()),
    }
    caps.update(f"engine:{name}" for name in ENGINES if on_path((name,), path))
    caps.update(f"has:{tool}" for tool, exes in TOOLS.items() if on_path(exes, path))
    caps.update(extra)
    return sorted(caps)


def invalid(capabilities: Iterable[str]) -> list[str]:
    """Those the coordinator would refuse (lower case, ``name`` or ``kind:name``)."""
    return [c for c in capabilities if len(c) > 100 or not CAPABILITY.match(c)]
