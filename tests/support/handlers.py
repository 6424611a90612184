"""Helpers of the unit tests that call HTTP handlers directly: the operator token the
``tokens`` fixture (tests/unit/conftest.py) knows, and a check of replies against the
served OpenAPI document."""

from __future__ import annotations

from typing import Any

import jsonschema

from fleet.http.openapi import build_document

OPERATOR = "flo_" + "o" * 43  # a bootstrap operator token of the unit tests' Tokens
COMPONENTS = build_document()["components"]


def documented(reply: Any, schema: str) -> None:
    """The reply is what the OpenAPI document says it is."""
    jsonschema.validate(reply, {"$ref": f"#/components/schemas/{schema}", "components": COMPONENTS})
