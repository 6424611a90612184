"""Parse every Bicep file with checkov's own Bicep parser (pycep) and say which fail.

Runs in the checkov virtualenv, where pycep is installed (it is not in the project's main
environment): ``.local/venv-checkov/bin/python scripts/deploy/bicep_parse.py [PATH ...]``.
checkov itself only logs a file it cannot parse and checks the rest, so this makes a parse
failure loud.

Prints one JSON object, ``{"<path>": null | "<error>"}``, and exits 1 when any file fails
or none is found.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def parse_all(paths: list[Path]) -> dict[str, str | None]:
    from pycep import BicepParser

    parser = BicepParser(add_line_numbers=True)  # as checkov.bicep.parser.Parser builds it
    results: dict[str, str | None] = {}
    for path in paths:
        try:
            tree = parser.parse(text=path.read_text(encoding="utf-8"))
        except Exception as exc:  # pycep raises lark errors of several kinds
            results[str(path)] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        else:
            results[str(path)] = None if tree else "the parser returned nothing"
    return results


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("infra")]
    paths = sorted(
        p for root in roots for p in ([root] if root.is_file() else root.rglob("*.bicep"))
    )
    results = parse_all(paths)
    print(json.dumps(results, indent=2))
    if not results:
        print(f"no .bicep files under {', '.join(map(str, roots))}", file=sys.stderr)
        return 1
    failed = [path for path, error in results.items() if error]
    for path in failed:
        print(f"{path}: does not parse: {results[path]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
