"""Deployment checks: the app settings a deployment needs, and a deployed API's health.

    python -m scripts.deploy.check settings                 # what the template sets, and why
    python -m scripts.deploy.check settings --compare appsettings.json
    python -m scripts.deploy.check health https://func-1.azurewebsites.net
    python -m scripts.deploy.check token                    # a new operator token + its hash

``settings`` reads the same inventory as tests/unit/test_infra.py (scripts/deploy/inventory.py:
the names the deployed code reads, the names infra/app/api.bicep sets) and fails if they
disagree. With ``--compare`` it checks a deployed app's settings, as printed by
``az functionapp config appsettings list -g RG -n APP -o json``: every setting present,
required ones non-empty, no key-based setting.

``health`` calls ``GET <api>/api/health`` until it answers 200 with every dependency ok (a
fresh deployment takes a while to start), and says which dependency is not.

Runs from the repository root with the standard library only (no Azure SDK, no az login).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python scripts/deploy/check.py): find `scripts.deploy`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.deploy import inventory
from scripts.deploy.webui import BuildError, normalize_api_base

MAIN_TEMPLATE = Path("infra") / "main.bicep"
OPERATOR_TOKEN_PREFIX = "flo_"  # fleet.settings.OPERATOR_TOKEN_PREFIX


# --- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str
    source: str  # where the template takes the value from
    description: str
    required: bool  # False: empty means "the code's default" / "feature off"
    readers: tuple[str, ...]  # file:line of each read in fleet code; () for host settings


def param_descriptions(text: str) -> dict[str, str]:
    """``@description('...')`` of each ``param`` in a Bicep file."""
    found: dict[str, str] = {}
    pending: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"@description\('((?:[^'\\]|\\.)*)'\)$", stripped)
        if match:
            pending = re.sub(r"\\(.)", r"\1", match.group(1))
            continue
        match = re.match(r"param\s+(\w+)\s", stripped)
        if match:
            if pending is not None:
                found[match.group(1)] = pending
            pending = None
        elif not stripped.startswith("@"):
            pending = None
    return found


def module_params(text: str, symbol: str) -> dict[str, str]:
    """The ``params`` a Bicep file passes to its module ``symbol``: name -> expression."""
    match = re.search(rf"^module\s+{symbol}\s+'[^']+'\s*=\s*\{{", text, re.MULTILINE)
    if match is None:
        raise inventory.BicepSyntaxError(f"no module {symbol}")
    body = inventory.object_entries(inventory._block_after(text, match.end() - 1))
    params = body.get("params", "{}").strip()
    return inventory.object_entries(params[1:-1])


def deployment_settings(root: Path = inventory.ROOT) -> list[Setting]:
    """Every app setting the template sets, in template order, with where its value comes
    from (a main.bicep parameter and its default, or a resource output) and who reads it."""
    code = inventory.code_settings(root)
    settings = inventory.app_settings(root / inventory.API_TEMPLATE)
    main = (root / MAIN_TEMPLATE).read_text(encoding="utf-8")
    passed = module_params(main, "api")
    defaults = inventory.param_defaults(root / MAIN_TEMPLATE)
    descriptions = param_descriptions(main)
    out: list[Setting] = []
    for name, expression in settings.items():
        source = passed.get(expression, expression)  # api.bicep param -> main.bicep value
        description = inventory.PLATFORM.get(name, "")
        required = True
        if re.search(r"\?.*:\s*''\s*$", source):
            # `cond ? value : ''` (a Key Vault reference when the secret was given): empty
            # means the feature is off.
            required = False
        if re.fullmatch(r"\w+", source) and source in descriptions:
            description = descriptions[source]
            default = defaults.get(source)
            required = default != "''"
            source = f"param {source}" + (f" = {default}" if default is not None else "")
        out.append(
            Setting(
                name=name,
                source=source,
                description=description,
                required=required,
                readers=tuple(code.where(name)),
            )
        )
    return out


def format_settings(settings: Sequence[Setting]) -> list[str]:
    lines = ["App settings of a deployment (infra/app/api.bicep appsettings):", ""]
    for s in settings:
        flag = "required" if s.required else "optional, empty: the code's default / off"
        lines.append(f"{s.name}  ({flag})")
        lines.append(f"    value:   {s.source}")
        if s.description:
            lines.append(f"    meaning: {s.description}")
        readers = ", ".join(s.readers) if s.readers else "the Functions host"
        lines.append(f"    read by: {readers}")
    lines += ["", "Read by the code, deliberately not set in Azure (local-only alternatives):"]
    lines += [f"{name}: {reason}" for name, reason in sorted(inventory.LOCAL_ONLY.items())]
    return lines


def compare_deployed(settings: Sequence[Setting], deployed: Any) -> list[str]:
    """Problems with a deployed app's settings (``az functionapp config appsettings list``
    JSON: a list of ``{"name", "value", "slotSetting"}``, or a plain name -> value object)."""
    if isinstance(deployed, Mapping):
        actual = {str(k): v for k, v in deployed.items()}
    elif isinstance(deployed, list) and all(isinstance(i, Mapping) for i in deployed):
        actual = {str(i.get("name")): i.get("value") for i in deployed}
    else:
        return [
            "not an app settings list: expected the JSON of `az functionapp config "
            "appsettings list`"
        ]
    problems: list[str] = []
    for s in settings:
        if s.name not in actual:
            problems.append(f"{s.name}: missing")
        elif s.required and not (actual[s.name] or "").strip():
            problems.append(f"{s.name}: empty, but required")
    for name in sorted(inventory.LOCAL_ONLY.keys() & actual.keys()):
        problems.append(
            f"{name}: set, but a deployment must not use it ({inventory.LOCAL_ONLY[name]})"
        )
    return problems


# --- health -------------------------------------------------------------------------------


def health_url(api: str) -> str:
    """``<origin>/api/health`` for an API given with or without ``/api``."""
    return f"{normalize_api_base(api)}/api/health"


def evaluate_health(status: int, body: str) -> list[str]:
    """What is wrong with a /api/health answer ([] when healthy)."""
    try:
        document = json.loads(body) if body else None
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return [f"HTTP {status}, and the body is not the health JSON: {body[:200]!r}"]
    problems: list[str] = []
    if status != 200:
        problems.append(f"HTTP {status} (want 200), status {document.get('status')!r}")
    if "dependencies" not in document:
        message = document.get("message") or document.get("error") or "no dependencies listed"
        problems.append(f"the app is not running its stores: {message}")
        return problems
    dependencies = document.get("dependencies")
    if not isinstance(dependencies, dict) or not dependencies:
        problems.append("no dependencies listed")
        return problems
    for name, result in sorted(dependencies.items()):
        if not (isinstance(result, dict) and result.get("ok") is True):
            detail = (
                result
                if not isinstance(result, dict)
                else (f"{result.get('error', '?')}: {result.get('message', '')}".strip())
            )
            problems.append(f"{name} is not ok ({detail})")
    if document.get("status") != "ok" and not problems:
        problems.append(f"status {document.get('status')!r} (want 'ok')")
    return problems


Fetch = Callable[[str, float], tuple[int, str]]


def http_get(url: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")


def wait_healthy(
    api: str,
    *,
    attempts: int,
    wait_seconds: float,
    timeout: float = 30.0,
    fetch: Fetch = http_get,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Poll the health endpoint; [] once healthy, else the last attempt's problems."""
    url = health_url(api)
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            status, body = fetch(url, timeout)
        except (urllib.error.URLError, OSError) as exc:
            problems = [f"{url} unreachable: {getattr(exc, 'reason', exc)}"]
        else:
            problems = evaluate_health(status, body)
        if not problems:
            log(f"{url}: healthy")
            return []
        log(f"{url}: attempt {attempt}/{attempts}: " + "; ".join(problems))
        if attempt < attempts:
            sleep(wait_seconds)
    return problems


# --- tokens -------------------------------------------------------------------------------


def new_operator_token() -> tuple[str, str]:
    """A fresh operator token and the ``sha256:`` form to put in FLEET_OPERATOR_TOKENS."""
    token = OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("settings", help="the app settings a deployment needs")
    s.add_argument(
        "--compare",
        type=Path,
        metavar="JSON",
        help="a deployed app's settings: `az functionapp config appsettings list -o json`",
    )
    h = sub.add_parser("health", help="GET <api>/api/health until every dependency is ok")
    h.add_argument("api", help="the API's URL (API_URL), e.g. https://func-1.azurewebsites.net")
    h.add_argument("--attempts", type=int, default=10)
    h.add_argument("--wait", type=float, default=15.0, help="seconds between attempts")
    h.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    sub.add_parser("token", help="print a new operator token and its sha256: form")
    args = parser.parse_args(argv)

    if args.command == "token":
        token, hashed = new_operator_token()
        print(f"operator token (keep it secret; shown once): {token}")
        print(f"FLEET_OPERATOR_TOKENS value (the hash only):  {hashed}")
        return 0

    if args.command == "health":
        try:
            problems = wait_healthy(
                args.api, attempts=args.attempts, wait_seconds=args.wait, timeout=args.timeout
            )
        except BuildError as exc:
            print(f"health: {exc}", file=sys.stderr)
            return 2
        for problem in problems:
            print(f"UNHEALTHY: {problem}", file=sys.stderr)
        return 1 if problems else 0

    drift = inventory.compare(inventory.code_settings(), inventory.app_settings())
    if not drift.ok:
        for message in drift.messages():
            print(f"DRIFT: {message}", file=sys.stderr)
        return 1
    settings = deployment_settings()
    if args.compare is None:
        print("\n".join(format_settings(settings)))
        return 0
    problems = compare_deployed(settings, json.loads(args.compare.read_text(encoding="utf-8")))
    for problem in problems:
        print(f"SETTING: {problem}", file=sys.stderr)
    if not problems:
        print(f"all {len(settings)} app settings present; none key-based")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
