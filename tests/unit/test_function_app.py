"""The composition root (function_app.py): every function is one the Functions worker can
index, and the context is built once per process, on first use."""

from __future__ import annotations

import inspect

import pytest

from fleet.context import AppContext, context_for, once
from fleet.errors import SettingsError
from fleet.settings import Settings
from fleet.store.memory import memory_stores
from function_app import build_app


def test_function_app_each_function_takes_exactly_its_bindings() -> None:
    # The worker refuses a function whose parameters are not its bindings' names: the
    # handlers take (req, call) and the timers (timer, context), but what is registered
    # takes the binding alone.
    context = context_for(Settings.from_env({"FLEET_STORE": "memory"}), memory_stores())
    functions = build_app(lambda: context).get_functions()
    assert len(functions) > 50
    for function in functions:
        parameters = list(inspect.signature(function.get_user_function()).parameters)
        bindings = [b.name for b in function.get_bindings() if b.name != "$return"]
        assert parameters == bindings, function.get_function_name()


def test_function_app_builds_the_context_once_on_first_use() -> None:
    built: list[AppContext] = []

    def build() -> AppContext:
        built.append(context_for(Settings.from_env({"FLEET_STORE": "memory"}), memory_stores()))
        return built[-1]

    provider = once(build)
    build_app(provider).get_functions()
    assert built == []  # building the app resolves nothing
    assert provider() is provider() is built[0] and len(built) == 1


def test_function_app_a_failed_build_is_retried_on_next_use() -> None:
    env = {"FLEET_STORE": "azure"}  # no Cosmos endpoint: the build fails
    provider = once(lambda: context_for(Settings.from_env(env), memory_stores()))
    with pytest.raises(SettingsError):
        provider()
    env["FLEET_STORE"] = "memory"
    assert provider().settings.store == "memory"
