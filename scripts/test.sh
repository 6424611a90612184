#!/usr/bin/env bash
# The whole test command: linters (ruff, mypy, the import layers), then every test (unit,
# contract on both backends, integration on the real local stack). Fails when pytest collects
# or runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy (strict)"
"$VENV/bin/mypy"
echo "== import layers (pyproject.toml [tool.importlinter]: no upward import, no cycle)"
"$VENV/bin/lint-imports" --no-logo
echo "== pytest"
set +e
"$VENV/bin/python" -m pytest --durations=25 "$@"  # the slowest, to keep the budget in sight
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
