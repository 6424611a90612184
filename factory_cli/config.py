"""Settings: the per-user config file, ``FLEET_*`` environment variables, and flags.

Each setting is resolved in one order, highest first: a command-line flag, its ``FLEET_*``
environment variable, the config file, the default. The table ``SETTINGS`` is the single
description of them all; ``--help`` lists its environment variables.

The config file (``config.json``) holds the factory token, so it is written with mode 0600
in a directory of mode 0700 (POSIX; on Windows the per-user profile directory protects it).
Its location follows each platform's convention without depending on ``platformdirs``:

- ``$FLEET_CONFIG_DIR`` when set (the config, the run state and the work directories all
  live there: one directory per factory, handy for several factories on one machine);
- Linux and other Unix: ``$XDG_CONFIG_HOME/fleet-factory`` (``~/.config/fleet-factory``),
  data (run state, work directories) in ``$XDG_DATA_HOME/fleet-factory``
  (``~/.local/share/fleet-factory``);
- macOS: ``~/Library/Application Support/fleet-factory`` for both;
- Windows: ``%APPDATA%\\fleet-factory`` (config), ``%LOCALAPPDATA%\\fleet-factory`` (data).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP = "fleet-factory"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


class ConfigError(Exception):
    """The configuration is missing something or holds an invalid value."""


# --- locations -------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())


def config_dir(env: Mapping[str, str], platform: str = sys.platform) -> Path:
    """Where ``config.json`` lives (see the module docstring)."""
    if env.get("FLEET_CONFIG_DIR"):
        return Path(env["FLEET_CONFIG_DIR"]).expanduser()
    home = _home(env)
    if platform == "win32":
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / APP
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / APP


def data_dir(env: Mapping[str, str], platform: str = sys.platform) -> Path:
    """Where the run state and the work directories live."""
    if env.get("FLEET_CONFIG_DIR"):
        return Path(env["FLEET_CONFIG_DIR"]).expanduser()
    home = _home(env)
    if platform == "win32":
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / APP
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / APP


def config_path(env: Mapping[str, str], platform: str = sys.platform) -> Path:
    if env.get("FLEET_CONFIG"):
        return Path(env["FLEET_CONFIG"]).expanduser()
    return config_dir(env, platform) / CONFIG_FILE


# --- the file ---------------------------------------------------------------------------


def load_file(path: Path) -> dict[str, Any]:
    """The config file's settings; an absent file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} must hold a JSON object")
    return data


def loose_permissions(path: Path) -> bool:
    """True when others than the owner may read the file (POSIX only)."""
    if os.name != "posix":
        return False
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically: a temporary
    file created 0600 in the same directory, then renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if os.name == "posix":
            os.chmod(tmp, 0o600)  # whatever the umask said
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_file(path: Path, data: Mapping[str, Any]) -> None:
    clean = {k: v for k, v in data.items() if v is not None}
    write_private(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")


# --- the settings ----------------------------------------------------------------------


def _positive_int(raw: Any) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(raw: Any) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def positive_seconds(raw: Any) -> float:
    """A number of seconds above zero: finite (``nan`` and ``inf`` are no duration)."""
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _unit(raw: Any) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def _caps(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        items = [str(x) for x in raw]
    else:
        items = str(raw).replace(" ", ",").split(",")
    return tuple(dict.fromkeys(x.strip() for x in items if x.strip()))


def _text(raw: Any) -> str:
    return str(raw)


@dataclass(frozen=True)
class Setting:
    name: str  # attribute of Settings
    env: str  # its FLEET_* variable
    key: str | None  # its key in config.json (None: never stored)
    parse: Callable[[Any], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("api", "FLEET_API", "api", _text, None, "coordinator base URL, e.g. https://x/api"),
    Setting("product", "FLEET_PRODUCT", "product", _text, None, "product (operators; enroll)"),
    Setting("token", "FLEET_TOKEN", "token", _text, None, "this factory's token (flf_...)"),
    Setting(
        "operator_token",
        "FLEET_OPERATOR_TOKEN",
        "operatorToken",
        _text,
        None,
        "operator token for submit/jobs/top",
    ),
    Setting("factory_id", "FLEET_FACTORY_ID", "factoryId", _text, None, "this factory's name"),
    Setting("seats", "FLEET_SEATS", "seats", _positive_int, 1, "jobs run at once"),
    Setting("engine", "FLEET_ENGINE", "engine", _text, None, "engine preset"),
    Setting("engine_cmd", "FLEET_ENGINE_CMD", "engineCmd", _text, None, "engine template"),
    Setting("caps", "FLEET_CAPS", "caps", _caps, (), "extra capabilities, comma-separated"),
    Setting("cost", "FLEET_COST", "cost", _unit, 0.5, "relative cost of this machine, 0..1"),
    Setting("work_dir", "FLEET_WORK_DIR", "workDir", _text, None, "where job work dirs go"),
    Setting("poll_seconds", "FLEET_POLL_SECONDS", "pollSeconds", _positive_float, 5.0, "gate poll"),
    Setting(
        "grace_seconds",
        "FLEET_GRACE_SECONDS",
        "graceSeconds",
        _positive_float,
        30.0,
        "drain grace on SIGINT/SIGTERM",
    ),
    Setting(
        "checkpoint_seconds",
        "FLEET_CHECKPOINT_SECONDS",
        "checkpointSeconds",
        _positive_float,
        300.0,
        "commit and push a repository job's work this often",
    ),
    Setting(
        "deregister_on_exit",
        "FLEET_DEREGISTER_ON_EXIT",
        "deregisterOnExit",
        _bool,
        False,
        "leave the fleet on a clean exit",
    ),
    # Not read from the config file: an ephemeral run is the invocation's choice (an
    # autoscaler's), not the machine's, so a plain `run` there never leaves on its own.
    Setting(
        "exit_when_idle",
        "FLEET_EXIT_WHEN_IDLE",
        None,
        positive_seconds,
        None,
        "run: deregister and exit 0 after this many seconds idle",
    ),
    Setting(
        "review",
        "FLEET_REVIEW",
        "review",
        _bool,
        False,
        "when idle, review other factories' jobs in review (run --review)",
    ),
    Setting(
        "enrollment_token",
        "FLEET_ENROLLMENT_TOKEN",
        None,
        _text,
        None,
        "enrollment token (fle_...) for enroll",
    ),
    Setting("state_file", "FLEET_STATE_FILE", None, _text, None, "the run state file"),
    Setting(
        "engine_user",
        "FLEET_ENGINE_USER",
        "engineUser",
        _text,
        None,
        "OS user engines run as (root factory, or passwordless sudo)",
    ),
    Setting(
        "allow_root_engine",
        "FLEET_ALLOW_ROOT_ENGINE",
        "allowRootEngine",
        _bool,
        False,
        "let a root factory run engines as root",
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}
# Variables read for locations rather than settings.
LOCATION_VARS = (
    ("FLEET_CONFIG_DIR", "one directory for config, run state and work dirs"),
    ("FLEET_CONFIG", "the config file itself"),
)


@dataclass(frozen=True)
class Settings:
    api: str | None = None
    product: str | None = None
    token: str | None = None
    operator_token: str | None = None
    factory_id: str | None = None
    seats: int = 1
    engine: str | None = None
    engine_cmd: str | None = None
    caps: tuple[str, ...] = ()
    cost: float = 0.5
    work_dir: str | None = None
    poll_seconds: float = 5.0
    grace_seconds: float = 30.0
    checkpoint_seconds: float = 300.0
    deregister_on_exit: bool = False
    exit_when_idle: float | None = None
    review: bool = False
    enrollment_token: str | None = None
    state_file: str | None = None
    engine_user: str | None = None
    allow_root_engine: bool = False
    config_path: Path = Path(CONFIG_FILE)
    data_dir: Path = Path(".")
    sources: dict[str, str] = field(default_factory=dict)  # name -> flag|env|file|default

    @property
    def work_root(self) -> Path:
        return Path(self.work_dir).expanduser() if self.work_dir else self.data_dir / "work"

    @property
    def state_path(self) -> Path:
        return Path(self.state_file).expanduser() if self.state_file else self.data_dir / STATE_FILE

    def require(self, *names: str) -> None:
        """Fail with a message naming the flag and the variable of each missing setting."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            described = ", ".join(
                f"{n.replace('_', '-')} (--{n.replace('_', '-')} or {BY_NAME[n].env})"
                for n in missing
            )
            raise ConfigError(f"missing: {described}; run `fleet-factory enroll` first?")


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
    *,
    config_file: Path,
    data: Path,
) -> Settings:
    """Every setting from the first of: flag (not None), env variable, config file, default."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        raw: Any = None
        source = "default"
        if flags.get(setting.name) is not None:
            raw, source = flags[setting.name], "flag"
        elif env.get(setting.env, "") != "":
            raw, source = env[setting.env], f"env {setting.env}"
        elif setting.key is not None and file.get(setting.key) is not None:
            raw, source = file[setting.key], f"file {config_file}"
        if source == "default":
            values[setting.name] = setting.default
        else:
            try:
                values[setting.name] = setting.parse(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{setting.name} from {source}: {raw!r}: {exc}") from None
        sources[setting.name] = source
    return Settings(**values, config_path=config_file, data_dir=data, sources=sources)


def load(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> Settings:
    env = os.environ if env is None else env
    path = config_path(env, platform)
    return resolve(flags, env, load_file(path), config_file=path, data=data_dir(env, platform))


def env_help() -> str:
    """The environment variables, for ``--help``."""
    lines = ["environment (overrides the config file; a flag overrides both):"]
    for setting in SETTINGS:
        lines.append(f"  {setting.env:<26} {setting.help}")
    for name, what in LOCATION_VARS:
        lines.append(f"  {name:<26} {what}")
    return "\n".join(lines)


def mask(token: str | None) -> str | None:
    """A token as shown to people: its kind and a few characters, never the secret."""
    if not token:
        return token
    return token[:8] + "…" if len(token) > 12 else "…"
