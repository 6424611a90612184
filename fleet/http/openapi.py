"""GET /api/openapi.json: the OpenAPI 3.1 description of the whole HTTP surface, generated.

Nothing here lists the routes. The document is built by walking the app's functions (what
``app.get_functions()`` gives the Functions host) and reading the declaration each HTTP
function serves (``fleet.http.operation``): its route and method, who may call it, its
parameters, its body model and its reply models per status. The models' JSON schemas
(pydantic's, in validation mode for bodies and serialization mode for replies) become the
document's components. What every operation of a kind shares (the error replies, the bearer
scheme, the product header) is said once, here.

``tests/unit/test_openapi.py`` checks the document is valid OpenAPI and agrees with the
routes in both directions; ``tests/unit/test_openapi_snapshot.py`` that its surface (paths,
methods, parameters, statuses) is unchanged; the unit and reliability suites validate real
replies against it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import azure.functions as func
from azure.functions.decorators.core import Trigger
from azure.functions.decorators.http import HttpTrigger
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from fleet.context import ContextProvider
from fleet.coordinator.identity import DEFAULT_PRODUCT, NAME, PRODUCT_HEADER, Role
from fleet.domain.manifest import CAPABILITY_PATTERN, JOB_ID_PATTERN, MAX_CAPABILITY_CHARS
from fleet.http.operation import (
    Bearer,
    Call,
    OneOf,
    Operation,
    Operations,
    Reply,
    Schema,
    Shape,
    operation_of,
)
from fleet.http.responses import JSON
from fleet.http.views import Error

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"
# host.json's extensions.http.routePrefix (a test holds them equal).
ROUTE_PREFIX = "api"

_ROUTE_PARAM = re.compile(r"\{([A-Za-z_]\w*)\}")
_DIRECTIONS: dict[str, JsonSchemaMode] = {"body": "validation", "reply": "serialization"}

TAGS = (
    {"name": "jobs", "description": "Submit and read jobs."},
    {"name": "lease", "description": "The lease holder's fenced writes."},
    {"name": "operator", "description": "Operator actions on a job."},
    {"name": "review", "description": "The review quorum: requests and votes."},
    {"name": "fleet", "description": "The claim, the gate, factories, events, metrics."},
    {"name": "budgets", "description": "Budgets and channel limits."},
    {
        "name": "tokens",
        "description": "Who is calling; operator, enrollment and scaler tokens, enrollment, "
        "rotation and revocation.",
    },
    {"name": "profiles", "description": "Persona profiles (immutable versions)."},
    {"name": "meta", "description": "Health and this document."},
)


def _ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


# --- what every operation of a kind shares ----------------------------------------------

_PARAMETERS: dict[str, Schema] = {
    "Product": {
        "name": PRODUCT_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "The product (partition) the call is about (a `{productId}` in the path names it "
            "instead). Operators name it here: an operator token for other products is 403. "
            "A factory token carries its product, and naming another one is 403."
        ),
        "schema": {"type": "string", "pattern": NAME.pattern, "default": DEFAULT_PRODUCT},
    },
}

_SECURITY_SCHEMES: dict[str, Schema] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "`Authorization: Bearer <token>`. Operator tokens start `flo_`: the bootstrap ones "
            "(locally the stack command prints one; deployed, `FLEET_OPERATOR_TOKENS`) are "
            "admins of every product; the others name a person, a role (`viewer` reads, "
            "`operator` also acts, `admin` also manages tokens, budgets and settings; each "
            "operation's `x-fleet-role` says which it needs) and products "
            "(`POST /api/fleet/operator-tokens`). Factory tokens start `flf_` (from "
            "enrollment), enrollment tokens `fle_` (only for "
            "`POST /api/fleet/factories/enroll`), scaler tokens `fls_` (autoscalers, from "
            "`POST /api/fleet/scaler-tokens`: only for `GET /api/fleet/demand` of their "
            "product)."
        ),
    }
}

# Which kind of bearer token an operation takes, said first in its description; an
# operator token's role is said after it (``_ROLE_NOTE``).
_BEARER_NOTE: dict[Bearer, str] = {
    "factory": "Bearer: a factory token.",
    "operator": "Bearer: an operator token{role}.",
    "any": "Bearer: an operator token{role} or a factory token.",
    "operator_or_scaler": "Bearer: an operator token{role} or the product's scaler token.",
    "enrollment": "Bearer: an enrollment token.",
    "none": "",
}
_ROLE_NOTE: dict[Role, str] = {
    "viewer": " (any role)",
    "operator": " (role `operator` or `admin`)",
    "admin": " (role `admin`)",
}


def _bearer_note(op: Operation) -> str:
    return _BEARER_NOTE[op.bearer].format(role=_ROLE_NOTE[op.role])


def _error(
    description: str, example: Schema | None = None, headers: Schema | None = None
) -> Schema:
    content: Schema = {"schema": _ref("Error")}
    if example is not None:
        content["example"] = example
    response: Schema = {"description": description, "content": {JSON: content}}
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "The request is invalid (`validation_failed`, `illegal_report`); "
        "`details.problems` lists every problem.",
        {
            "error": "validation_failed",
            "message": "title: Field required",
            "details": {
                "problems": [{"path": "title", "code": "missing", "message": "Field required"}]
            },
        },
    ),
    "Unauthorized": _error(
        "No bearer token, or one that is invalid, expired or revoked (`unauthorized`); the "
        "message never says which.",
        {"error": "unauthorized", "message": "invalid, expired or revoked token"},
        headers={"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    ),
    "Forbidden": _error(
        "The token is valid but may not do this (`forbidden`): the wrong kind of token, an "
        "operator whose role is below the operation's (`details.role`, `details.needs`), "
        "another product, a job the factory does not hold, or capabilities outside the "
        "enrollment allowlist.",
        {
            "error": "forbidden",
            "message": "factory tokens cannot do this: it needs an operator token",
        },
    ),
    "NotFound": _error("No such job or profile (`job_not_found`, `not_found`)."),
    "Fenced": _error(
        "`fenced`: the lease epoch is stale, the job was reassigned and nothing was changed "
        "(stop working on it); `timeout` or `budget_exceeded`: the attempt was ended at its "
        "deadline or cost cap (by this call, or before it: stop working on it, report nothing "
        "more for it); or `illegal_transition`, or `conflict` on a write race.",
        {
            "error": "fenced",
            "message": "lease epoch 3 on job j01jc0m9ayqj0f3a4q1x5e6n7z8 is not current",
            "details": {"jobId": "j01jc0m9ayqj0f3a4q1x5e6n7z8", "epoch": 3, "currentEpoch": 4},
        },
    ),
    "Conflict": _error(
        "The job's stage does not allow this (`illegal_transition`, `not_in_review`), a "
        "reviewer voted twice in a round (`already_voted`), or a write race was lost too "
        "often (`conflict`): nothing was changed."
    ),
    "FactoryConflict": _error(
        "`factory_exists`: a factory of this name is enrolled (deregister it first); "
        "`factory_revoked`: the factory was revoked (enroll it again); or "
        "`token_in_grace`: this token was rotated out already and cannot rotate again."
    ),
    "TooLarge": _error(
        "The request body is over 512 KiB (`too_large`); nothing was read or changed.",
        {
            "error": "too_large",
            "message": "request body too large: 600000 bytes, at most 524288 bytes",
        },
    ),
    "QuotaExceeded": _error(
        "`quota_exceeded`: the attempt has used up one of its quotas (agent events, their "
        "payload bytes, artifacts; `details` says which, its limit and what is used), and "
        "nothing was stored: the next attempt starts afresh. Or `too_large`: the request "
        "body is over 512 KiB.",
        {
            "error": "quota_exceeded",
            "message": "attempt 1 of job j01jc0m9ayqj0f3a4q1x5e6n7z8 has sent its 5000 events",
            "details": {"quota": "events", "limit": 5000, "used": 5000},
        },
    ),
    "InternalError": _error("An unexpected error (`internal`); nothing internal is shown."),
    "Unavailable": _error(
        "The store is unavailable or throttling (`store_unavailable`), or a setting is "
        "missing (`settings`). Retry later.",
        headers={
            "Retry-After": {
                "description": "Seconds to wait, when the store said.",
                "schema": {"type": "integer"},
            }
        },
    ),
}

_ERROR_RESPONSES: dict[int, str] = {400: "BadRequest", 404: "NotFound", 413: "QuotaExceeded"}


# --- schemas ---------------------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    """Pydantic's JSON schema without a title on every field ("Leaseepoch")."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class _Components:
    """The models an operation names, each a component of its own (with every model nested
    in it). Field names, not aliases: the manifest accepts both, and they match the job's."""

    def __init__(self) -> None:
        self._models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}

    def add(self, shape: Shape, direction: str) -> None:
        mode = _DIRECTIONS[direction]
        for model in _models_in(shape):
            self._models[(model, mode)] = None

    def build(self) -> tuple[dict[str, Schema], dict[tuple[type[BaseModel], str], Schema]]:
        """The components' schemas, and each (model, mode)'s ``$ref``."""
        keys, top = models_json_schema(
            list(self._models),
            by_alias=False,
            ref_template="#/components/schemas/{model}",
            schema_generator=_Generator,
        )
        schemas: dict[str, Schema] = top.get("$defs", {})
        refs: dict[tuple[type[BaseModel], str], Schema] = {}
        for (model, mode), ref in keys.items():
            if isinstance(model, type) and issubclass(model, BaseModel):
                refs[(model, mode)] = dict(ref)
        return schemas, refs


def _models_in(shape: Shape | None) -> tuple[type[BaseModel], ...]:
    if isinstance(shape, OneOf):
        return shape.models
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        return (shape,)
    return ()


def _schema(
    shape: Shape, direction: str, refs: dict[tuple[type[BaseModel], str], Schema]
) -> Schema:
    mode = _DIRECTIONS[direction]
    if isinstance(shape, OneOf):
        alternatives = [refs[(m, mode)] for m in shape.models]
        return {"oneOf" if shape.exclusive else "anyOf": alternatives}
    if isinstance(shape, type):
        return refs[(shape, mode)]
    return shape


def _fix(schema: Any) -> None:
    """Pydantic writes a tuple's max_length as maxLength; JSON Schema counts items with
    maxItems."""
    if isinstance(schema, dict):
        if schema.get("type") == "array":
            for length, items in (("maxLength", "maxItems"), ("minLength", "minItems")):
                if length in schema:
                    schema[items] = schema.pop(length)
        for value in schema.values():
            _fix(value)
    elif isinstance(schema, list):
        for value in schema:
            _fix(value)


def _refine_requests(schemas: dict[str, Schema]) -> None:
    """What the manifest's validators (not its types) check, and the shorthand forms it
    accepts; each only where the model's own schema does not say it already."""
    capability = {
        "type": "string",
        "pattern": CAPABILITY_PATTERN,
        "maxLength": MAX_CAPABILITY_CHARS,
    }
    for name in ("Manifest", "ProfileSpec"):
        capabilities = schemas.get(name, {}).get("properties", {}).get("capabilities", {})
        if capabilities.get("items") == {"type": "string"}:
            capabilities["items"] = dict(capability)
    if "Manifest" not in schemas:
        return
    manifest = schemas["Manifest"]["properties"]
    deps = manifest.get("deps", {}).get("anyOf")
    if deps is not None and not any(s.get("type") == "array" for s in deps):
        shorthand = {
            "type": "array",
            "items": {"type": "string", "pattern": JOB_ID_PATTERN},
            "description": "Shorthand for {mode: all, jobs: [...]}.",
        }
        deps.insert(0, shorthand)
    described = {
        "repo": "A git URL: https://, ssh://, scp-like git@host:path or file:// (at most "
        "2048 characters). Never with credentials (400 `invalid`): the factory uses its "
        "machine's own.",
        "base": "The branch to start from (a valid git branch name); default: the remote's "
        "default branch.",
        "pr": "Open (or reuse) a pull request for the shipped branch.",
        "timeoutSeconds": "Per attempt; default: the product's `timeoutSeconds`, else none.",
        "maxCostUsd": "Per attempt: a reported cost over it ends the attempt.",
    }
    for name, text in described.items():
        if name in manifest:
            manifest[name]["description"] = text
    budget = manifest.get("budgetUsd", {}).get("anyOf")
    if budget and budget[0].get("type") == "number" and len(budget) == 2:
        mapping = {
            "type": "object",
            "properties": {"estimateUsd": budget[0]},
            "required": ["estimateUsd"],
            "additionalProperties": False,
        }
        budget.insert(1, mapping)


# --- operations --------------------------------------------------------------------------


def _path(route: str) -> str:
    return f"/{ROUTE_PREFIX}/{route}" if ROUTE_PREFIX else f"/{route}"


def _operation(op: Operation, refs: dict[tuple[type[BaseModel], str], Schema]) -> Schema:
    declared = {p.name for p in op.params if p.where == "path"}
    in_route = set(_ROUTE_PARAM.findall(op.route))
    if declared != in_route:
        raise ValueError(f"{op.method} {op.route}: path parameters {sorted(declared)} declared")
    out: Schema = {"operationId": op.id, "summary": op.summary, "tags": [op.tag]}
    if op.bearer in ("operator", "any", "operator_or_scaler"):
        out["x-fleet-role"] = op.role  # what an operator token must be to call it
    description = " ".join(filter(None, (_bearer_note(op), op.description)))
    if description:
        out["description"] = description
    parameters: list[Schema] = [
        {
            "name": p.name,
            "in": p.where,
            "required": p.where == "path",
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.params
    ]
    if op.bearer != "none":
        out["security"] = [{"bearerAuth": []}]
        if op.bearer != "enrollment":
            parameters.append(_ref("Product", "parameters"))
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        body: Schema = {
            "required": op.body.required,
            "content": {
                ctype: {"schema": _schema(shape, "body", refs)}
                for ctype, shape in op.body.content.items()
            },
        }
        if op.body.description:
            body["description"] = op.body.description
        out["requestBody"] = body
    responses: Schema = {}
    for status, reply in op.replies.items():
        response: Schema = {"description": reply.description}
        if reply.shape is not None:
            response["content"] = {JSON: {"schema": _schema(reply.shape, "reply", refs)}}
        if reply.headers:
            response["headers"] = dict(reply.headers)
        responses[str(status)] = response
    for status in op.errors:
        name = op.conflict if status == 409 else _ERROR_RESPONSES[status]
        responses[str(status)] = _ref(name, "responses")
    if op.body is not None and 413 not in op.errors:  # QuotaExceeded says both
        responses["413"] = _ref("TooLarge", "responses")
    if op.bearer != "none":
        responses["401"] = _ref("Unauthorized", "responses")
        responses["403"] = _ref("Forbidden", "responses")
    if op.fleet_errors:
        responses["500"] = _ref("InternalError", "responses")
        responses["503"] = _ref("Unavailable", "responses")
    out["responses"] = dict(sorted(responses.items()))
    return out


def _http_trigger(function: func.Function) -> HttpTrigger | None:
    trigger: Trigger | None = function.get_trigger()
    return trigger if isinstance(trigger, HttpTrigger) else None


def declared_operations(functions: Iterable[func.Function]) -> list[Operation]:
    """The declaration of every HTTP function, in registration order. A function serving a
    route without a declaration is an error: everything served is documented."""
    out: list[Operation] = []
    for function in functions:
        trigger = _http_trigger(function)
        if trigger is None:
            continue
        op = operation_of(function.get_user_function())
        if op is None:
            raise ValueError(f"{function.get_function_name()}: an HTTP function not declared")
        methods = {str(getattr(m, "value", m)).upper() for m in trigger.methods or ()}
        if trigger.route != op.route or methods != {op.method.upper()}:
            raise ValueError(f"{function.get_function_name()}: served as declared, or not at all")
        out.append(op)
    return out


def build_document(functions: Iterable[func.Function]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP functions among ``functions``, as a fresh dict."""
    ops = declared_operations(functions)
    components = _Components()
    components.add(Error, "reply")  # every error reply's body (_RESPONSES)
    for op in ops:
        if op.body is not None:
            for shape in op.body.content.values():
                components.add(shape, "body")
        for reply in op.replies.values():
            if reply.shape is not None:
                components.add(reply.shape, "reply")
    schemas, refs = components.build()
    for schema in schemas.values():
        _fix(schema)
    _refine_requests(schemas)
    paths: dict[str, Schema] = {}
    for op in ops:
        path = _path(op.route)
        item = paths.setdefault(path, {})
        if op.method.lower() in item:
            raise ValueError(f"{op.method} {path} is documented twice")
        item[op.method.lower()] = _operation(op, refs)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "agent-fleet coordinator",
            "version": API_VERSION,
            "description": (
                "Jobs, leases, factories, tokens and profiles of the agent-fleet coordinator. "
                "Every call but health and this document carries a bearer token (operator, "
                "factory, or for enrollment an enrollment token); see `bearerAuth`. Every "
                "error answers with an `Error` body: a machine-readable `error` code and a "
                "`message`."
            ),
        },
        "tags": list(TAGS),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "parameters": _PARAMETERS,
            "responses": _RESPONSES,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
    # Operations share parameter and schema objects: give the caller its own copy.
    return copy.deepcopy(document)


def blueprint(
    functions: Callable[[], Iterable[func.Function]], context: ContextProvider
) -> func.Blueprint:
    """The operation serving the document of the app whose functions ``functions`` gives
    (called on the first request, once every function is registered; built once)."""
    operations = Operations()
    lock = threading.Lock()
    served: list[str] = []

    def document() -> str:
        with lock:
            if not served:
                served.append(json.dumps(build_document(functions()), separators=(",", ":")))
            return served[0]

    @operations.route(
        "openapi.json",
        "GET",
        caller="anonymous",
        id="openapiDocument",
        summary="This document",
        tag="meta",
        replies={200: Reply("The OpenAPI 3.1 document.", {"type": "object"})},
        fleet_errors=False,
    )
    def openapi_document(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        """The OpenAPI document (built once per instance)."""
        return func.HttpResponse(document(), status_code=200, mimetype=JSON, charset="utf-8")

    return operations.blueprint(context)
