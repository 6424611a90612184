"""The engine user: engines run as another OS user, so they cannot read the factory's token.

An engine runs code a job asked for. Run as the factory's own user it could read the
factory's config file (which holds the factory token) or its environment. With
``--engine-user USER`` (``FLEET_ENGINE_USER``) every engine and verify command runs as USER:

- its uid, its primary gid, none of the factory's supplementary groups; ``HOME`` is USER's
  home directory (the work dir when it has none), ``USER``/``LOGNAME`` are set; in a new
  session and process group, as any engine;
- the job's work dir is handed to USER (``prepare_for_user``: chowned recursively, symlinks
  never followed) before each spawn; the factory itself keeps running git there;
- a factory running as root switches user itself; any other factory runs the engine through
  ``sudo -n -E -u USER``, which must be passwordless and allowed to keep the environment
  (a sudoers line such as ``factory ALL=(USER) NOPASSWD:SETENV: ALL``), checked at start;
  such a factory cannot give files away, so it grants USER access to the work dir with
  POSIX ACLs instead (``setfacl``, from the ``acl`` package).

At start (``check_engine_user``): USER must exist; the factory's config dir is made 0700 and
its config file 0600 and neither may then be readable by USER; the work root must be
reachable by USER. Without an engine user, a root factory refuses to start unless
``--allow-root-engine``, and any other factory warns that the engine runs as itself.

The engine's environment never carries the factory's own variables (``engines.SECRET_VARS``:
``FLEET_TOKEN``, ``FLEET_OPERATOR_TOKEN``, ``FLEET_ENROLLMENT_TOKEN``). Other variables pass
through on purpose: agents need their own credentials (``ANTHROPIC_API_KEY``, ...).

Permission checks read the mode bits and owners only (POSIX ACLs are not consulted).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.engines import EngineError

SUDO = "sudo"


class EngineUserError(EngineError):
    """The engine user cannot be used (or is required). ``code`` says why, ``field`` names the
    setting at fault."""

    def __init__(self, message: str, *, code: str, field: str = "engine_user") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True)
class EngineUser:
    """An OS user engines run as. ``via_sudo``: the factory is not root and switches through
    ``sudo``."""

    name: str
    uid: int
    gid: int
    home: str | None = None  # None: no home directory on this machine
    groups: tuple[int, ...] = ()  # USER's own groups (for permission checks)
    via_sudo: bool = False

    def environ(self, env: Mapping[str, str], workdir: Path) -> dict[str, str]:
        """``env`` as USER sees it: its own HOME (the work dir if it has none), USER, LOGNAME."""
        out = dict(env)
        out["HOME"] = self.home or str(workdir)
        out["USER"] = out["LOGNAME"] = self.name
        return out


# --- looking the user up ---------------------------------------------------------------------


def lookup(
    name: str,
    *,
    euid: int | None = None,
    getpwnam: Callable[[str], Any] | None = None,
    getgrouplist: Callable[[str, int], list[int]] | None = None,
) -> EngineUser:
    """The user ``name`` (or a numeric uid) on this machine; ``EngineUserError`` (code
    ``unknown_user``) when there is none."""
    if os.name != "posix":
        raise EngineUserError(
            "--engine-user is supported on POSIX systems only", code="unsupported"
        )
    import pwd

    getpwnam = getpwnam or pwd.getpwnam
    getgrouplist = getgrouplist or os.getgrouplist
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else getpwnam(name)
    except (KeyError, OverflowError):
        raise EngineUserError(
            f"engine user {name!r} does not exist on this machine (see `id {name}`); create it "
            "or pass another --engine-user / FLEET_ENGINE_USER",
            code="unknown_user",
        ) from None
    try:
        groups = tuple(sorted(set(getgrouplist(entry.pw_name, entry.pw_gid))))
    except (KeyError, OSError):
        groups = (entry.pw_gid,)
    home = entry.pw_dir if entry.pw_dir and os.path.isdir(entry.pw_dir) else None
    factory_euid = os.geteuid() if euid is None else euid
    return EngineUser(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=home,
        groups=groups,
        via_sudo=factory_euid != 0,
    )


# --- permissions, read from mode bits ----------------------------------------------------------


def _permits(st: os.stat_result, user: EngineUser, bit: int) -> bool:
    """Whether ``user`` has permission ``bit`` (4 read, 2 write, 1 search) on ``st``."""
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in user.groups or st.st_gid == user.gid:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def reachable(path: Path, user: EngineUser) -> bool:
    """Whether ``user`` may search every directory above ``path`` (those that exist)."""
    for parent in reversed(Path(os.path.abspath(path)).parents):
        try:
            st = os.stat(parent)
        except OSError:
            return True  # the rest does not exist yet: created by the factory later
        if not _permits(st, user, 1):
            return False
    return True


def readable(path: Path, user: EngineUser) -> bool:
    """Whether ``user`` may read ``path`` (a file) or list it (a directory)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return reachable(path, user) and _permits(st, user, 4)


def tighten(path: Path, mode: int) -> None:
    """Drop the group and other bits of ``path`` when the factory owns it (no-op otherwise)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, mode)


# --- the checks at start -------------------------------------------------------------------------


def root_policy(user: str | None, allow_root: bool, euid: int) -> str | None:
    """Without an engine user: refuse root (unless allowed), else a warning line to print.
    ``None`` when there is nothing to say."""
    if user:
        return None
    if euid == 0:
        if not allow_root:
            raise EngineUserError(
                "refusing to run engines as root: pass --engine-user USER (FLEET_ENGINE_USER) "
                "to run them as an unprivileged user, or --allow-root-engine "
                "(FLEET_ALLOW_ROOT_ENGINE=1) to run them as root anyway",
                code="root_engine_refused",
                field="allow_root_engine",
            )
        return (
            "warning: engines run as root (--allow-root-engine): they can read this factory's "
            "config and token"
        )
    return (
        "warning: engines run as this factory's own user and could read its config and token; "
        "pass --engine-user USER (FLEET_ENGINE_USER) to run them as another user"
    )


def check_engine_user(
    name: str | None,
    *,
    allow_root: bool,
    config_path: Path,
    work_root: Path,
    euid: Callable[[], int] | None = None,
    getpwnam: Callable[[str], Any] | None = None,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> tuple[EngineUser | None, str | None]:
    """Everything ``run`` checks before it starts: ``(the engine user or None, a warning line
    or None)``; ``EngineUserError`` when it must not start."""
    factory_euid = (euid or os.geteuid)()
    warning = root_policy(name, allow_root, factory_euid)
    if not name:
        return None, warning
    user = lookup(name, euid=factory_euid, getpwnam=getpwnam)
    if user.uid == factory_euid:
        raise EngineUserError(
            f"engine user {user.name!r} is the factory's own user: pick another user",
            code="same_user",
        )
    if user.uid == 0:
        raise EngineUserError(
            "the engine user may not be root: pick an unprivileged user", code="root_engine_user"
        )
    protect_config(config_path, user)
    if not reachable(work_root, user):
        raise EngineUserError(
            f"the work dir {work_root} is not reachable by engine user {user.name!r} (a "
            "directory above it is private): pass --work-dir (FLEET_WORK_DIR) outside the "
            "factory's config dir, e.g. /srv/fleet-work",
            code="work_dir_unreachable",
            field="work_dir",
        )
    if user.via_sudo:
        check_sudo(user, run=run)
        if shutil.which("setfacl") is None:
            raise EngineUserError(
                "a factory that is not root needs `setfacl` (package acl) to give engine user "
                f"{user.name!r} access to the work dirs; install it, or run the factory as root",
                code="setfacl_missing",
            )
    return user, None


def protect_config(config_path: Path, user: EngineUser) -> None:
    """Make the config dir 0700 and the config file 0600 (when the factory owns them); then
    neither may be readable by ``user``."""
    directory = config_path.parent
    tighten(directory, 0o700)
    tighten(config_path, 0o600)
    for path in (config_path, directory):
        if path.exists() and readable(path, user):
            raise EngineUserError(
                f"{path} is readable by engine user {user.name!r} and holds the factory's "
                f"token: make it private to the factory's user (chown it; chmod "
                f"{'600' if path == config_path else '700'})",
                code="config_readable",
                field="config",
            )


def sudo_argv(user: EngineUser, *command: str) -> list[str]:
    """``command`` run as ``user`` through passwordless sudo, keeping the environment (the
    caller passes one without the factory's secrets: see ``plain_env``)."""
    return [SUDO, "-n", "-E", "-u", user.name, "--", *command]


def plain_env() -> dict[str, str]:
    """The environment of the factory's own helper commands run as the engine user (sudo
    checks, signals): nothing of the factory's but PATH and the locale."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}


def check_sudo(
    user: EngineUser, *, run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run
) -> None:
    """The exact way engines are started, tried once with nothing to do."""
    argv = sudo_argv(user, "/bin/sh", "-c", "true")
    try:
        done = run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
            env=plain_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUserError(
            f"cannot run `sudo -n -u {user.name}` ({type(exc).__name__}: {exc}): a factory that "
            "is not root runs engines through passwordless sudo",
            code="sudo_failed",
        ) from None
    if done.returncode != 0:
        said = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise EngineUserError(
            f"`sudo -n -E -u {user.name} -- /bin/sh -c true` failed"
            + (f" ({said[0][:200]})" if said else f" (exit {done.returncode})")
            + f": the factory's user needs passwordless sudo to {user.name} keeping the "
            f"environment (sudoers: `<factory user> ALL=({user.name}) NOPASSWD:SETENV: ALL`)",
            code="sudo_failed",
        )


# --- the work dir ---------------------------------------------------------------------------


def prepare_for_user(path: Path, user: EngineUser) -> None:
    """Give the directory ``path`` and everything in it to ``user`` (its uid and primary
    gid). Symlinks are never followed (the links themselves change owner), so a link the
    engine left behind cannot hand it anything outside the directory; each directory is
    opened by file descriptor, so swapping one for a link while this runs does not either.
    Only root can give files away: a factory that is not root (sudo) grants ``user`` read,
    write and search on the tree with ACLs instead, and default ACLs on its directories so
    that both keep access to what the other creates (``setfacl -R -P``: links not followed)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EngineUserError(f"{path} is not a directory", code="bad_workdir", field="workdir")
    if os.geteuid() != 0:
        me = os.geteuid()
        spec = f"u:{user.uid}:rwX,d:u:{user.uid}:rwX,d:u:{me}:rwX"
        done = subprocess.run(
            ["setfacl", "-R", "-P", "-m", spec, "--", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip()[:200]
            raise EngineUserError(
                f"cannot give engine user {user.name!r} access to {path}: {said}",
                code="setfacl_failed",
                field="workdir",
            )
        return
    for _root, dirnames, filenames, dirfd in os.fwalk(path, follow_symlinks=False):
        os.fchown(dirfd, user.uid, user.gid)
        for name in (*dirnames, *filenames):
            try:
                os.chown(name, user.uid, user.gid, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile
