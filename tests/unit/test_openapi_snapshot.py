"""The served OpenAPI document keeps its surface: every path, method, parameter and status
code, diffed against a snapshot (``tests/fixtures/openapi_surface.json``) taken from the
hand-written document before it was generated from the handlers' own declarations. A change
to the API's surface must change the snapshot on purpose:
``FLEET_UPDATE_OPENAPI_SNAPSHOT=1 pytest tests/unit/test_openapi_snapshot.py`` rewrites it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.support.handlers import DOCUMENT

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "openapi_surface.json"
METHODS = ("get", "put", "post", "patch", "delete")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = document["components"][kind][name]
    return node


def surface(document: dict[str, Any]) -> dict[str, Any]:
    """``"METHOD /path"`` → its parameters (``in:name``, ``!`` when required), whether it
    takes a body (and must), and its status codes."""
    out: dict[str, Any] = {}
    for path, item in sorted(document["paths"].items()):
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            params = [_resolve(document, p) for p in (*shared, *operation.get("parameters", []))]
            body = operation.get("requestBody")
            out[f"{method.upper()} {path}"] = {
                "parameters": sorted(
                    f"{p['in']}:{p['name']}" + ("!" if p.get("required") else "") for p in params
                ),
                "body": None if body is None else bool(_resolve(document, body).get("required")),
                "statuses": sorted(operation["responses"]),
            }
    return out


def test_openapi_surface_matches_the_snapshot() -> None:
    current = surface(DOCUMENT)
    if os.environ.get("FLEET_UPDATE_OPENAPI_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(current) == sorted(expected), "operations added or removed"
    changed = {op: (expected[op], current[op]) for op in current if current[op] != expected[op]}
    assert not changed, changed
