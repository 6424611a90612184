"""The import layers of ``fleet`` (``[tool.importlinter]`` in pyproject.toml, run by
``lint-imports`` in scripts/test.sh) catch what they are there for: each test copies
``fleet/`` and the contracts to a temporary directory, injects one bad import, and runs the
linter on the copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for package in ("fleet", "devtools"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint(root: Path, contract: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def inject(root: Path, module: str, statement: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{statement}\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("module", "imported"),
    [
        ("fleet.domain.models", "fleet.http.jobs"),  # the domain reaching up to HTTP
        ("fleet.store.memory", "fleet.coordinator.clock"),  # the store above its layer
        ("fleet.errors", "fleet.settings"),  # the bottom importing anything of fleet
        ("fleet.coordinator.identity", "fleet.context"),  # the cycle this layering removed
    ],
)
def test_import_layers_an_upward_import_fails_the_check(
    copy: Path, module: str, imported: str
) -> None:
    assert lint(copy, "layers").returncode == 0, "the contracts hold on fleet/ as it is"
    inject(copy, module, f"import {imported}")
    result = lint(copy, "layers")
    assert result.returncode == 1, result.stdout
    assert f"{module} -> {imported}" in result.stdout


def test_import_layers_a_cycle_within_a_layer_fails_the_check(copy: Path) -> None:
    # fleet.domain.review imports fleet.domain.stages: the way back closes a cycle.
    inject(copy, "fleet.domain.stages", "import fleet.domain.review")
    result = lint(copy, "acyclic")
    assert result.returncode == 1, result.stdout
    assert "No cycles are allowed in fleet.domain" in result.stdout


def test_import_layers_a_new_module_must_sit_in_a_layer(copy: Path) -> None:
    (copy / "fleet" / "helpers.py").write_text("X = 1\n", encoding="utf-8")
    result = lint(copy, "layers")
    assert result.returncode == 1, result.stdout
    assert "fleet.helpers" in result.stdout


def test_import_layers_the_app_never_imports_the_local_tooling(copy: Path) -> None:
    assert lint(copy, "tooling").returncode == 0
    inject(copy, "fleet.http.health", "import devtools.stack")
    result = lint(copy, "tooling")
    assert result.returncode == 1, result.stdout
    assert "fleet.http.health -> devtools.stack" in result.stdout
