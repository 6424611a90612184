"""Build the deployable copy of the web UI: webui/ with the API's base URL set.

The page finds the API at ``window.FLEET_API_BASE + "/api"``, set by webui/config.js before
the app starts; locally the API's own host serves the page, so the base is empty. Deployed,
the page (a Static Web App) and the API (the Function App) are different origins, so the copy's
config.js names the Function App; the Function App allows the page's origin (CORS,
infra/app/api.bicep). The source tree is never modified.

    python3 scripts/deploy/webui.py build --api-base https://func-1.azurewebsites.net --out DIR

``--api-base`` defaults to $API_URL (an output of the template, which azd puts in the
environment of its hooks). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "webui"
CONFIG_SCRIPT = "config.js"


class BuildError(ValueError):
    pass


def normalize_api_base(raw: str) -> str:
    """``https://host[/prefix]`` without a trailing slash or ``/api`` (the page appends it)."""
    base = raw.strip().rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise BuildError(f"the API base must be an http(s) URL, not {raw!r}")
    if parts.query or parts.fragment:
        raise BuildError(f"the API base must not carry a query or fragment: {raw!r}")
    return base


def config_script(api_base: str) -> str:
    """The deployed config.js: the API base as a JavaScript string literal."""
    # json.dumps gives a valid JS string literal; escaping "<" keeps "</script>" out of it.
    literal = json.dumps(normalize_api_base(api_base)).replace("<", "\\u003c")
    return (
        "// Written by scripts/deploy/webui.py for this deployment: the API is on another origin.\n"
        f"window.FLEET_API_BASE = {literal};\n"
    )


def build(api_base: str, out: Path, source: Path = SOURCE) -> Path:
    script = config_script(api_base)
    index = (source / "index.html").read_text(encoding="utf-8")
    if f'src="{CONFIG_SCRIPT}"' not in index:
        raise BuildError(f"{source}/index.html does not load {CONFIG_SCRIPT}: nothing to configure")
    out = out.resolve()
    if out == source.resolve() or out in source.resolve().parents:
        raise BuildError(f"refusing to build into {out}: it holds the source")
    if out.exists():
        shutil.rmtree(out)
    # Skip an earlier build inside the source (webui/dist) and dotfiles.
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("dist", ".*"))
    (out / CONFIG_SCRIPT).write_text(script, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="copy webui/ to OUT with the API base set in config.js")
    b.add_argument("--api-base", default=os.environ.get("API_URL", ""), help="default: $API_URL")
    b.add_argument("--out", type=Path, default=SOURCE / "dist")
    args = parser.parse_args(argv)
    if not args.api_base:
        print("no API base: pass --api-base or set API_URL (azd sets it)", file=sys.stderr)
        return 2
    try:
        out = build(args.api_base, args.out)
    except BuildError as exc:
        print(f"webui build: {exc}", file=sys.stderr)
        return 1
    print(f"web UI built in {out} (API base {normalize_api_base(args.api_base)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
