"""The ``fleet-factory`` command line: enroll, run, status, submit, jobs, top, config,
autoscale."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from factory_cli import __version__, autoscale
from factory_cli.api import (
    ApiError,
    Conflict,
    FleetClient,
    Forbidden,
    Unauthorized,
)
from factory_cli.artifacts import HttpArtifacts
from factory_cli.capabilities import detect, invalid
from factory_cli.clock import SystemClock
from factory_cli.config import (
    ConfigError,
    Settings,
    env_help,
    load,
    load_file,
    loose_permissions,
    mask,
    positive_seconds,
    save_file,
)
from factory_cli.console import Console, setup_logging
from factory_cli.engine_user import check_engine_user
from factory_cli.engines import PRESETS, EngineError, choose, spawn_shell_as
from factory_cli.runner import EXIT_REFUSED, RunConfig, Runner
from factory_cli.runs import latest_run, latest_summary
from factory_cli.state import pid_alive, read_state
from factory_cli.top import STAGES

EXIT_ERROR = 1
EXIT_USAGE = 2
USER_AGENT = f"fleet-factory/{__version__}"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CliError(Exception):
    """A problem to tell the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- the parser ----------------------------------------------------------------------------


def _seconds(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _idle_seconds(raw: str) -> float:
    try:
        return positive_seconds(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {raw!r}"
        ) from None


def _count(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    # Accepted before or after the command; SUPPRESS so that a subcommand's absent flag
    # does not overwrite one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        help="coordinator base URL ending in /api (FLEET_API)",
    )
    common.add_argument(
        "--config-dir",
        default=argparse.SUPPRESS,
        help="one directory for config, run state and work dirs (FLEET_CONFIG_DIR)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug output"
    )
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output")
    operator = argparse.ArgumentParser(add_help=False)
    operator.add_argument(
        "--token", dest="operator_token", help="an operator token (FLEET_OPERATOR_TOKEN)"
    )
    operator.add_argument("--product", help="the product (FLEET_PRODUCT; default: default)")

    parser = argparse.ArgumentParser(
        prog="fleet-factory",
        description="Join this machine to an agent-fleet coordinator and run coding-agent jobs.",
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"fleet-factory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, *parents: argparse.ArgumentParser) -> Any:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common, *parents],
            epilog=env_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    enroll = add("enroll", "exchange an enrollment token for this factory's own token", json_flag)
    enroll.add_argument(
        "--token", dest="enrollment_token", help="the enrollment token (FLEET_ENROLLMENT_TOKEN)"
    )
    enroll.add_argument("--product", help="the product the token is for (checked)")
    enroll.add_argument(
        "--name",
        dest="factory_id",
        help="this factory's name (default: the coordinator names it for an ephemeral "
        "enrollment token, else the host name)",
    )
    enroll.add_argument("--cap", dest="caps", action="append", help="an extra capability")
    enroll.add_argument("--seats", type=_count, help="jobs run at once (FLEET_SEATS)")
    enroll.add_argument("--cost", type=float, help="relative cost 0..1 (FLEET_COST)")
    enroll.add_argument("--engine", choices=sorted(PRESETS), help="engine preset to save")
    enroll.add_argument("--engine-cmd", help="engine command template to save")
    enroll.add_argument("--force", action="store_true", help="replace an existing enrollment")

    run = add("run", "claim jobs and run them with the engine until stopped")
    ending = run.add_mutually_exclusive_group()
    ending.add_argument("--once", action="store_true", help="fill the seats once, run, exit")
    ending.add_argument(
        "--exit-when-idle",
        metavar="SECONDS",
        type=_idle_seconds,
        help="an ephemeral factory: once it has held nothing and every poll and claim found "
        "nothing for SECONDS in a row, deregister and exit 0 (FLEET_EXIT_WHEN_IDLE)",
    )
    run.add_argument("--seats", type=_count, help="jobs run at once (FLEET_SEATS)")
    engine = run.add_mutually_exclusive_group()
    engine.add_argument("--engine", help=f"engine preset: {', '.join(PRESETS)} (FLEET_ENGINE)")
    engine.add_argument(
        "--engine-cmd",
        help="engine command template with {prompt_file} {workdir} {job_id} (FLEET_ENGINE_CMD)",
    )
    run.add_argument("--cap", dest="caps", action="append", help="an extra capability")
    run.add_argument("--cost", type=float, help="relative cost 0..1 (FLEET_COST)")
    run.add_argument("--work-dir", help="where job work dirs go (FLEET_WORK_DIR)")
    run.add_argument(
        "--poll", dest="poll_seconds", type=_seconds, help="gate poll seconds (FLEET_POLL_SECONDS)"
    )
    run.add_argument(
        "--grace",
        dest="grace_seconds",
        type=_seconds,
        help="seconds jobs get to finish on SIGINT/SIGTERM (FLEET_GRACE_SECONDS)",
    )
    run.add_argument(
        "--checkpoint-every",
        dest="checkpoint_seconds",
        type=_seconds,
        help="for a job with a repository: commit and push what the engine left this often, "
        "and at once when it writes a checkpoint (FLEET_CHECKPOINT_SECONDS, default 300)",
    )
    run.add_argument(
        "--deregister-on-exit",
        action="store_true",
        default=None,
        help="leave the fleet on a clean exit (FLEET_DEREGISTER_ON_EXIT)",
    )
    run.add_argument(
        "--review",
        action="store_true",
        default=None,
        help="when idle, review other factories' jobs in review with the engine and vote "
        "(exit 0 approves, 75 abstains, other codes reject) (FLEET_REVIEW)",
    )
    run.add_argument(
        "--engine-user",
        metavar="USER",
        help="run engines and verify commands as this OS user, so they cannot read this "
        "factory's config or token; a factory that is not root needs passwordless sudo to "
        "USER keeping the environment (sudoers: `ME ALL=(USER) NOPASSWD:SETENV: ALL`) and "
        "setfacl (FLEET_ENGINE_USER)",
    )
    run.add_argument(
        "--allow-root-engine",
        action="store_true",
        default=None,
        help="let a factory running as root run engines as root, without --engine-user "
        "(FLEET_ALLOW_ROOT_ENGINE)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    add("status", "this factory: seats, held jobs, last heartbeat, gate hits/misses", json_flag)

    submit = add("submit", "submit a job manifest (markdown; .json for JSON fields)", operator)
    submit.add_argument("file", help="the manifest file, or - for stdin")
    submit.add_argument("--json", action="store_true", help="machine-readable output")

    jobs = add("jobs", "list the product's jobs", operator, json_flag)
    jobs.add_argument("--stage", choices=STAGES, help="only jobs in this stage")
    jobs.add_argument(
        "--limit",
        type=_count,
        help="at most this many jobs, newest first (default: every job, fetched 1000 a page)",
    )

    review = add(
        "review",
        "vote on a job in review (operator token, else this factory's), or ask for reviewers",
        operator,
        json_flag,
    )
    review.add_argument("job", help="the job's id")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", dest="verdict", action="store_const", const="approve")
    verdict.add_argument("--reject", dest="verdict", action="store_const", const="reject")
    verdict.add_argument(
        "--request", dest="verdict", action="store_const", const="request", help="ask for reviewers"
    )
    review.add_argument("-m", "--comments", default="", help="the comments (or the request's note)")
    review.add_argument("--kind", help="what an operator reviews as (default: human)")
    review.add_argument(
        "--reviewer", dest="reviewers", action="append", default=[], help="whom --request asks"
    )

    top = add("top", "the terminal control plane: a live board of the product", json_flag)
    top.add_argument("--token", dest="operator_token", help="an operator token")
    top.add_argument("--product", help="the product (FLEET_PRODUCT; default: default)")
    top.add_argument("--interval", type=_seconds, default=2.0, help="refresh every SECONDS")

    add("config", "where the config is and what each setting resolves to", json_flag)

    scale = add(
        "autoscale",
        "local elasticity: start ephemeral factories for the product's demand, up to --max",
        json_flag,
    )
    scale.add_argument(
        "--max",
        dest="max_children",
        metavar="N",
        type=_count,
        required=True,
        help="children at once, at most",
    )
    scale.add_argument(
        "--engine",
        choices=sorted(PRESETS),
        help="the children's engine (FLEET_ENGINE; default: the first of claude, codex, aider "
        "on PATH)",
    )
    scale.add_argument("--seats", type=_count, help="each child's seats (FLEET_SEATS)")
    scale.add_argument("--cap", dest="caps", action="append", help="an extra capability")
    scale.add_argument(
        "--idle",
        metavar="SECONDS",
        type=_idle_seconds,
        default=60.0,
        help="a child leaves after SECONDS idle (its run --exit-when-idle); with --until-idle, "
        "also how long demand must be zero with no child running (default 60)",
    )
    scale.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_seconds,
        default=5.0,
        help="poll the demand every SECONDS (default 5)",
    )
    scale.add_argument(
        "--until-idle",
        action="store_true",
        help="exit 0 once demand has been zero and no child has run for --idle seconds",
    )
    scale.add_argument(
        "--operator-token",
        "--token",
        dest="operator_token",
        help="an operator token (FLEET_OPERATOR_TOKEN): polls the demand unless "
        "--scaler-token is given; mints one single-use enrollment token per child unless "
        "--enrollment-token is given (an admin's)",
    )
    scale.add_argument("--product", help="the product (FLEET_PRODUCT; default: default)")
    scale.add_argument(
        "--scaler-token", help="a scaler token (fls_...) to poll the demand (FLEET_SCALER_TOKEN)"
    )
    scale.add_argument(
        "--enrollment-token",
        help="a multi-use enrollment token every child enrolls with (FLEET_ENROLLMENT_TOKEN)",
    )
    scale.add_argument(
        "--children-dir",
        metavar="DIR",
        help="where each child's config dir goes (default: autoscale/ in the data directory)",
    )
    scale.add_argument(
        "--stop-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="on SIGINT/SIGTERM, how long children get to stop before SIGKILL (default 60)",
    )
    return parser


# --- entry ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    environ = dict(os.environ if env is None else env)
    if getattr(args, "config_dir", None):
        environ["FLEET_CONFIG_DIR"] = args.config_dir
    commands: dict[str, Callable[[argparse.Namespace, dict[str, str]], int]] = {
        "enroll": cmd_enroll,
        "run": cmd_run,
        "status": cmd_status,
        "submit": cmd_submit,
        "jobs": cmd_jobs,
        "review": cmd_review,
        "top": cmd_top,
        "config": cmd_config,
        "autoscale": cmd_autoscale,
    }
    try:
        return commands[args.command](args, environ)
    except CliError as exc:
        print(f"fleet-factory: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"fleet-factory: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EngineError as exc:
        print(f"fleet-factory: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unauthorized as exc:
        print(f"fleet-factory: the coordinator refused the token: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except ApiError as exc:
        print(f"fleet-factory: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _flags(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {n: getattr(args, n, None) for n in names}


def _settings(args: argparse.Namespace, env: Mapping[str, str], *names: str) -> Settings:
    settings = load(_flags(args, *names), env)
    if loose_permissions(settings.config_path):
        print(
            f"fleet-factory: warning: {settings.config_path} is readable by others "
            "(it holds a token): chmod 600 it",
            file=sys.stderr,
        )
    return settings


def _out(data: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=stream or sys.stdout)


def _capabilities(settings: Settings, engine_name: str | None, env: Mapping[str, str]) -> list[str]:
    caps = detect(path=env.get("PATH", ""), extra=settings.caps)
    if engine_name == "demo":
        caps = sorted({*caps, "engine:demo"})
    bad = invalid(caps)
    if bad:
        raise ConfigError("invalid capabilities (lower case, name or kind:name): " + ", ".join(bad))
    return caps


def default_name() -> str:
    host = platform.node().split(".")[0] or "factory"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", host).strip("-._") or "factory"
    return name[:64]


@contextmanager
def stop_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """While inside: SIGINT, SIGTERM (and SIGBREAK on Windows) ask ``request_stop`` to stop
    gracefully instead of raising; the previous handlers are put back on the way out."""

    def on_signal(signum: int, _frame: Any) -> None:
        request_stop()

    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):
        signals.append(signal.SIGBREAK)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- enroll --------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace, env: dict[str, str]) -> int:
    settings = _settings(
        args,
        env,
        "api",
        "enrollment_token",
        "factory_id",
        "caps",
        "seats",
        "cost",
        "engine",
        "engine_cmd",
    )
    settings.require("api", "enrollment_token")
    assert settings.api is not None and settings.enrollment_token is not None
    stored = load_file(settings.config_path)
    if stored.get("token") and not args.force:
        raise CliError(
            f"already enrolled as {stored.get('factoryId')} in product {stored.get('product')} "
            f"({settings.config_path}); pass --force to enroll again, or use another "
            "--config-dir",
            EXIT_USAGE,
        )
    # Without --name, the coordinator names an ephemeral token's factory; any other token
    # refuses a nameless enrollment, and it enrolls as the host's name instead.
    name: str | None = settings.factory_id
    fallback = default_name() if name is None else None
    for given in (name, fallback):
        if given is not None and not NAME.match(given):
            raise CliError(
                f"invalid name {given!r}: 1-64 letters, digits, '.', '_' or '-'", EXIT_USAGE
            )
    engine_name = settings.engine if not settings.engine_cmd else None
    caps = _capabilities(settings, engine_name, env)
    client = FleetClient(settings.api, None, user_agent=USER_AGENT)
    explicit = set(settings.caps)

    def attempt(capabilities: list[str]) -> dict[str, Any]:
        return client.enroll(
            settings.enrollment_token or "",
            name=name,
            capabilities=capabilities,
            seats=settings.seats,
            version=USER_AGENT,
            cost=settings.cost,
            fallback_name=fallback,
        )

    try:
        try:
            answer = attempt(caps)
        except Forbidden as exc:
            refused = set(exc.disallowed)
            if not refused or refused & explicit:
                raise
            # The token's allowlist refuses some detected capabilities: enroll without them.
            print(
                "fleet-factory: the enrollment token does not allow "
                + ", ".join(sorted(refused))
                + ": enrolling without them",
                file=sys.stderr,
            )
            caps = [c for c in caps if c not in refused]
            answer = attempt(caps)
    except Unauthorized as exc:
        raise CliError(
            f"the enrollment token is invalid, expired or already used ({exc.message})",
            EXIT_REFUSED,
        ) from None
    except Conflict as exc:
        raise CliError(
            f"a factory named {name or fallback!r} is already enrolled in this product: "
            f"pick another --name ({exc.message})"
        ) from None
    product = str(answer.get("product", ""))
    if args.product and args.product != product:
        print(
            f"fleet-factory: warning: the token is for product {product!r}, not {args.product!r}",
            file=sys.stderr,
        )
    data = {
        **stored,
        "api": settings.api,
        "product": product,
        "factoryId": str(answer["factoryId"]),
        "token": str(answer["token"]),
        "enrolledAt": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, name_ in (
        ("seats", "seats"),
        ("cost", "cost"),
        ("engine", "engine"),
        ("engineCmd", "engine_cmd"),
    ):
        if getattr(args, name_, None) is not None:
            data[key] = getattr(args, name_)
    if args.caps:
        data["caps"] = list(settings.caps)
    save_file(settings.config_path, data)
    if args.json:
        _out(
            {
                "factoryId": data["factoryId"],
                "product": product,
                "capabilities": caps,
                "config": str(settings.config_path),
            }
        )
    else:
        print(f"enrolled as {data['factoryId']} in product {product}")
        print(f"capabilities: {', '.join(caps) or 'none'}")
        print(f"token saved to {settings.config_path} (mode 0600)")
        print("next: fleet-factory run")
    return 0


# --- run -----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, env: dict[str, str]) -> int:
    settings = _settings(
        args,
        env,
        "api",
        "seats",
        "engine",
        "engine_cmd",
        "caps",
        "cost",
        "work_dir",
        "poll_seconds",
        "grace_seconds",
        "checkpoint_seconds",
        "deregister_on_exit",
        "exit_when_idle",
        "review",
        "engine_user",
        "allow_root_engine",
    )
    settings.require("api", "token", "factory_id")
    assert settings.api and settings.token and settings.factory_id
    engine_name, template = choose(settings.engine, settings.engine_cmd, env.get("PATH", ""))
    engine_user, warning = check_engine_user(
        settings.engine_user,
        allow_root=settings.allow_root_engine,
        config_path=settings.config_path,
        work_root=settings.work_root,
    )
    if warning:
        print(f"fleet-factory: {warning}", file=sys.stderr)
    caps = _capabilities(settings, engine_name, env)
    previous = read_state(settings.state_path)
    if previous and previous.get("status") not in (None, "stopped"):
        pid = previous.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            raise CliError(
                f"another fleet-factory run (pid {pid}) uses {settings.state_path}; stop it "
                "or use another --config-dir",
                EXIT_USAGE,
            )
    console = Console(sys.stderr, live=sys.stderr.isatty() and not args.quiet)
    setup_logging(console, verbose=getattr(args, "verbose", False), quiet=args.quiet)
    client = FleetClient(settings.api, settings.token, user_agent=USER_AGENT)
    config = RunConfig(
        factory_id=settings.factory_id,
        capabilities=tuple(caps),
        template=template,
        engine_name=engine_name,
        work_root=settings.work_root,
        seats=settings.seats,
        cost=settings.cost,
        poll_seconds=settings.poll_seconds,
        grace_seconds=settings.grace_seconds,
        git_checkpoint_seconds=settings.checkpoint_seconds,
        deregister_on_exit=settings.deregister_on_exit,
        exit_when_idle=settings.exit_when_idle,
        once=args.once,
        review=settings.review,
    )
    runner = Runner(
        client,
        config,
        clock=SystemClock(),
        state_path=settings.state_path,
        base_env=env,
        on_status=console.status if console.live else None,
        spawner=spawn_shell_as(engine_user),
        # Its own client: uploads run on background threads, beside the loop's own calls.
        sink=HttpArtifacts(FleetClient(settings.api, settings.token, user_agent=USER_AGENT)),
    )

    try:
        with stop_on_signals(runner.request_stop):
            code = runner.run()
    finally:
        console.clear()
        client.close()
    if runner.left_idle and runner.idle is not None:
        idle = f"idle for {runner.idle.seconds:g} s"
        if runner.deregister_error is None:
            print(f"{idle}: deregistered, exiting")
        else:
            print(
                f"fleet-factory: {idle}, but not deregistered ({runner.deregister_error}): "
                f"exiting with {settings.factory_id} still in the fleet",
                file=sys.stderr,
            )
    return code


# --- status --------------------------------------------------------------------------------


def _ago(stamp: Any) -> str:
    if not isinstance(stamp, str):
        return "never"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = (datetime.now(UTC) - then).total_seconds()
    return f"{_duration(seconds)} ago"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def cmd_status(args: argparse.Namespace, env: dict[str, str]) -> int:
    settings = _settings(args, env, "api")
    state = read_state(settings.state_path)
    stored = load_file(settings.config_path)
    if state is None:
        if args.json:
            _out({"running": False, "state": None, "factoryId": stored.get("factoryId")})
            return 0
        who = stored.get("factoryId") or "(not enrolled)"
        print(f"factory  {who}")
        print(f"no run state at {settings.state_path}: `fleet-factory run` has not run here")
        return 0
    pid = state.get("pid")
    alive = pid_alive(pid) if isinstance(pid, int) else None
    running = state.get("status") != "stopped" and alive is not False
    if args.json:
        _out({**state, "running": running, "stateFile": str(settings.state_path)})
        return 0
    gate = state.get("gate") or {}
    beat = state.get("lastHeartbeat") or {}
    jobs = state.get("jobs") or []
    if running:
        process = f"{state.get('status')}, pid {pid}, up {_duration(state.get('uptimeSeconds', 0))}"
    elif state.get("status") == "stopped":
        process = f"stopped (exit {state.get('exitCode')}), {_ago(state.get('updatedAt'))}"
    else:
        process = f"not running: pid {pid} is gone without a clean stop"
    print(f"factory    {state.get('factoryId')} at {state.get('api')}")
    print(f"process    {process}")
    print(f"engine     {state.get('engine')}")
    print(f"seats      {len(jobs)}/{state.get('seats')} busy")
    print(f"heartbeat  {_ago(beat.get('at'))}" + (f" ({beat['status']})" if beat else ""))
    print(
        f"gate       {gate.get('polls', 0)} polls: {gate.get('hits', 0)} hits (claim skipped), "
        f"{gate.get('misses', 0)} misses (claimed); {gate.get('found', 0)} job(s) claimed, "
        f"{gate.get('direct', 0)} without a poll (just after one that found a job); "
        f"version {gate.get('version')}"
    )
    outcomes = state.get("outcomes") or {}
    if outcomes:
        print("done       " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    if state.get("lastError"):
        print(f"last error {state['lastError']}")
    if jobs:
        print("jobs")
        rows = [
            [
                j.get("jobId", ""),
                str(j.get("epoch", "")),
                j.get("stage", ""),
                _duration(j.get("runningSeconds", 0)),
                str(j.get("tokens", 0)),
                "?" if j.get("costUsd") is None else f"${j['costUsd']:.2f}",  # unknown: not $0
                (j.get("lastOutputLine") or "")[:60],
            ]
            for j in jobs
        ]
        _table(["JOB", "EPOCH", "STAGE", "TIME", "TOKENS", "COST", "LAST LINE"], rows, indent=2)
    return 0


# --- operators -----------------------------------------------------------------------------


def _operator_client(
    args: argparse.Namespace, env: Mapping[str, str], *, allow_factory: bool = False
) -> tuple[FleetClient, Settings]:
    settings = _settings(args, env, "api", "operator_token", "product")
    settings.require("api")
    assert settings.api is not None
    token = settings.operator_token
    if not token and allow_factory and settings.token:
        token = settings.token  # a factory token: sees only the jobs it holds
    if not token:
        raise ConfigError("an operator token is needed: --token or FLEET_OPERATOR_TOKEN")
    product = settings.product if settings.operator_token else None
    client = FleetClient(
        settings.api,
        token,
        product=product or ("default" if settings.operator_token else None),
        user_agent=USER_AGENT,
    )
    return client, settings


def cmd_submit(args: argparse.Namespace, env: dict[str, str]) -> int:
    client, _ = _operator_client(args, env)
    if args.file == "-":
        text = sys.stdin.read()
        is_json = text.lstrip().startswith("{")
    else:
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc}", EXIT_USAGE) from None
        is_json = path.suffix.lower() == ".json"
    if is_json:
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise CliError(f"not valid JSON: {exc}", EXIT_USAGE) from None
        answer = client.submit_json(fields)
    else:
        answer = client.submit_markdown(text)
    if args.json:
        _out(answer)
        return 0
    job = answer.get("job") or {}
    verb = "submitted" if answer.get("created") else "already submitted (same idempotency key)"
    print(f"{verb}: {job.get('id')} {job.get('title')!r} -> {job.get('stage')}")
    if answer.get("warning"):
        print(f"warning: {answer['warning']}", file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace, env: dict[str, str]) -> int:
    client, settings = _operator_client(args, env, allow_factory=True)
    jobs = client.list_jobs(args.stage, args.limit)
    if args.json:
        # latestRun: the newest of the job's embedded runs (null when it lists none)
        listed = [{**j, "latestRun": latest_run(j)} for j in jobs]
        _out({"jobs": listed, "count": len(listed)})
        return 0
    if not jobs:
        print("no jobs" + (f" in stage {args.stage}" if args.stage else ""))
        return 0
    rows = [
        [
            str(j.get("id", "")),
            str(j.get("stage", "")),
            str(j.get("priority", "")),
            f"{j.get('attempts', 0)}/{j.get('maxAttempts', '')}",
            str(j.get("holder") or "-"),
            _ago(j.get("updatedAt")),
            latest_summary(j),
            str(j.get("title", ""))[:60],
        ]
        for j in jobs
    ]
    _table(["ID", "STAGE", "PRI", "TRIES", "HOLDER", "UPDATED", "LAST RUN", "TITLE"], rows)
    if not settings.operator_token:
        print("(a factory token lists only the jobs it holds or in review)", file=sys.stderr)
    return 0


def cmd_review(args: argparse.Namespace, env: dict[str, str]) -> int:
    client, _ = _operator_client(args, env, allow_factory=True)
    if args.verdict == "request":
        job = client.request_review(args.job, args.reviewers, args.comments or None)
    else:
        job = client.review(args.job, args.verdict, args.comments, args.kind)
    if args.json:
        _out(job)
        return 0
    state = job.get("reviewState") or {}
    votes = state.get("votes") or []
    approvals = sum(1 for v in votes if v.get("verdict") == "approve")
    needed = (job.get("review") or {}).get("approvals", 1)
    print(
        f"{job.get('id')}: {job.get('stage')} (round {state.get('round')}, "
        f"{approvals}/{needed} approvals)"
    )
    return 0


def cmd_top(args: argparse.Namespace, env: dict[str, str]) -> int:
    client, _ = _operator_client(args, env)
    try:
        module = importlib.import_module("factory_cli.top")
    except ModuleNotFoundError as exc:
        if exc.name != "factory_cli.top":
            raise
        raise CliError("`top` is not part of this build", EXIT_USAGE) from None
    run_top: Callable[[FleetClient, argparse.Namespace], int] = module.run_top
    args.product = client.product  # the effective one (flag, FLEET_PRODUCT or default)
    try:
        return run_top(client, args)
    finally:
        client.close()


def cmd_config(args: argparse.Namespace, env: dict[str, str]) -> int:
    settings = _settings(args, env, "api")
    try:
        engine: str | None = choose(settings.engine, settings.engine_cmd, env.get("PATH", ""))[0]
    except EngineError:
        engine = None
    caps = _capabilities(settings, engine, env)
    values: dict[str, Any] = {}
    for name, source in settings.sources.items():
        value = getattr(settings, name)
        if name.endswith("token"):
            value = mask(value)
        values[name] = {"value": list(value) if isinstance(value, tuple) else value, "from": source}
    report = {
        "configFile": str(settings.config_path),
        "stateFile": str(settings.state_path),
        "workRoot": str(settings.work_root),
        "settings": values,
        "engine": engine,
        "capabilities": caps,
    }
    if args.json:
        _out(report)
        return 0
    print(f"config file  {settings.config_path}")
    print(f"state file   {settings.state_path}")
    print(f"work dirs    {settings.work_root}")
    print(f"engine       {engine or 'none found (pass --engine or --engine-cmd)'}")
    print(f"capabilities {', '.join(caps)}")
    print("settings")
    rows = [
        [name, "" if v["value"] is None else str(v["value"]), v["from"]]
        for name, v in values.items()
    ]
    _table(["NAME", "VALUE", "FROM"], rows, indent=2)
    return 0


# --- autoscale -----------------------------------------------------------------------------


def cmd_autoscale(args: argparse.Namespace, env: dict[str, str]) -> int:
    settings = _settings(
        args, env, "api", "operator_token", "product", "enrollment_token", "engine", "seats", "caps"
    )
    settings.require("api")
    assert settings.api is not None
    scaler_token = args.scaler_token or env.get("FLEET_SCALER_TOKEN") or None
    operator_token = settings.operator_token
    if not (scaler_token or operator_token):
        raise ConfigError(
            "a token to poll the demand is needed: --scaler-token (FLEET_SCALER_TOKEN) or "
            "--operator-token (FLEET_OPERATOR_TOKEN)"
        )
    if not (settings.enrollment_token or operator_token):
        raise ConfigError(
            "the children need an enrollment token: --enrollment-token "
            "(FLEET_ENROLLMENT_TOKEN, one of many uses) or --operator-token (an admin's: one "
            "single-use token is made per child)"
        )
    engine_name = choose(settings.engine, None, env.get("PATH", ""))[0]
    offered = _capabilities(settings, engine_name, env)
    product = settings.product or "default"
    operator = (
        FleetClient(settings.api, operator_token, product=product, user_agent=USER_AGENT)
        if operator_token
        else None
    )
    poller = (
        FleetClient(settings.api, scaler_token, product=settings.product, user_agent=USER_AGENT)
        if scaler_token
        else operator
    )
    assert poller is not None
    tokens: autoscale.EnrollmentTokens
    if settings.enrollment_token:
        tokens = autoscale.SharedToken(settings.enrollment_token)
    else:
        assert operator is not None
        tokens = autoscale.MintedTokens(operator)
    root = Path(args.children_dir).expanduser() if args.children_dir else None
    spec = autoscale.ChildSpec(
        api=settings.api,
        engine=engine_name,
        seats=settings.seats,
        caps=settings.caps,
        idle_seconds=args.idle,
        root=(root or settings.data_dir / "autoscale").resolve(),
        base_env=env,
        pythonpath=autoscale.source_root(),
    )
    config = autoscale.AutoscaleConfig(
        max_children=args.max_children,
        seats_per_child=settings.seats,
        offered=frozenset(offered),
        idle_seconds=args.idle,
        interval=args.interval,
        until_idle=args.until_idle,
        stop_timeout=args.stop_timeout,
    )
    lines = sys.stderr if args.json else sys.stdout
    clock = SystemClock()

    def say(text: str) -> None:
        print(f"{clock.wall():%H:%M:%S} {text}", file=lines, flush=True)

    scaler = autoscale.Autoscaler(
        config,
        demand=lambda: autoscale.demand_reply(poller),
        launcher=autoscale.ProcessLauncher(spec, tokens),
        clock=clock,
        say=say,
    )
    say(
        f"autoscale: up to {config.max_children} child(ren) of {spec.seats} seat(s), engine "
        f"{engine_name}, in {spec.root}; they serve the capability sets within "
        f"{', '.join(offered) or 'none'}"
    )

    try:
        with stop_on_signals(scaler.request_stop):
            code = scaler.run()
    finally:
        for client in {id(c): c for c in (operator, poller) if c is not None}.values():
            client.close()
    summary = scaler.summary(clock.monotonic())
    if args.json:
        _out({**summary, "exitCode": code})
    else:
        for line in autoscale.summary_lines(summary):
            say(line)
    return code


def _table(headers: list[str], rows: list[list[str]], *, indent: int = 0) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    pad = " " * indent
    print(pad + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print(pad + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
