"""The Azure Functions (Python v2 programming model) entry point.

It only builds the app and registers one Blueprint per area; handlers live in fleet/http/,
timers in fleet/timers.py. Runs under `func start` / `func azure functionapp publish`, and
under the local host (`python -m fleet.devhost`) where Core Tools are not installed.
"""

import azure.functions as func

from fleet import timers
from fleet.http import (
    budgets,
    factories,
    fleet_ops,
    health,
    jobs,
    openapi,
    profiles,
    tokens,
    work,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    health.bp,
    jobs.bp,
    fleet_ops.bp,
    factories.bp,
    profiles.bp,
    tokens.bp,
    budgets.bp,
    work.bp,
    openapi.bp,
    timers.bp,
):
    app.register_functions(blueprint)
