"""The Azure Functions (Python v2 programming model) entry point, and the composition root.

It builds the app and registers one Blueprint per area over one context provider: the
app's context (settings, stores, coordinator, tokens, ...) is built from the environment on
first use and kept for the life of the worker process. Handlers live in fleet/http/, timers
in fleet/timers.py; none of them looks the context up, each is handed it. Runs under
`func start` / `func azure functionapp publish`, and under the local host
(`python -m devtools`) where Core Tools are not installed.

Tests, the simulation and the benchmarks build their own app over a context of their own:
`build_app(lambda: context)`.
"""

import logging

import azure.functions as func

from fleet import timers
from fleet.context import ContextProvider, build_context, once
from fleet.http import (
    actions,
    budgets,
    factories,
    fleet_ops,
    health,
    jobs,
    lease,
    openapi,
    operators,
    profiles,
    scaler_tokens,
    tokens,
    tracker,
    work,
)
from fleet.settings import Settings

# The Azure SDK logs every store request's URL and headers at INFO: on a busy coordinator that
# is most of what it logs (and what Application Insights ingests and bills). Its warnings and
# errors still come through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

# Registration order is the order routes of equal precedence are matched in.
HTTP = (
    health,
    jobs,
    lease,
    actions,
    fleet_ops,
    factories,
    profiles,
    tokens,
    operators,
    scaler_tokens,
    budgets,
    work,
    tracker,
)


class FleetApp(func.FunctionApp):
    """A FunctionApp whose functions are built once: the host indexes them, and the OpenAPI
    document is generated from the same list (a second ``get_functions()`` of a plain app
    finds every function name taken)."""

    def get_functions(self) -> list[func.Function]:
        built: list[func.Function] | None = self.__dict__.get("_fleet_functions")
        if built is None:
            built = super().get_functions()
            self.__dict__["_fleet_functions"] = built
        return built


def build_app(context: ContextProvider) -> FleetApp:
    app = FleetApp(http_auth_level=func.AuthLevel.FUNCTION)
    for module in HTTP:
        app.register_functions(module.operations.blueprint(context))
    app.register_functions(openapi.blueprint(app.get_functions, context))
    app.register_functions(timers.blueprint(context))
    return app


app = build_app(once(lambda: build_context(Settings.from_env())))
