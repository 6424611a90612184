#!/usr/bin/env bash
# Security scan of the Bicep templates: every .bicep file must parse (checkov's own parser,
# pycep) and checkov must report 0 failed checks; each skipped check must be waived in the
# template with a reason (`//checkov:skip=CKV_...: reason`). Run by `make checkov` and CI.
#
# checkov pins an old `packaging` that conflicts with pytest, so it gets its own virtualenv,
# .local/venv-checkov (under .local/: git-ignored, left out of the app package by .funcignore,
# removed by `make clean`), installed from scripts/deploy/requirements-checkov.txt and
# reinstalled when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.local/venv-checkov
LOCK=scripts/deploy/requirements-checkov.txt
STAMP=$VENV/.installed

if [ ! -f "$STAMP" ] || [ "$LOCK" -nt "$STAMP" ]; then
  echo "== installing checkov into $VENV"
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$LOCK"
  touch "$STAMP"
fi

echo "== bicep: every template parses"
"$VENV/bin/python" scripts/deploy/bicep_parse.py infra >/dev/null
echo "all $(find infra -name '*.bicep' | wc -l) .bicep files parse"

echo "== checkov (bicep)"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --skip-download: no calls to the vendor's platform (this runs offline, and needs none).
# checkov's exit code is not trusted alone: checkov_report.py also fails on parse errors,
# a skip without a reason, or a scan that checked nothing.
set +e
"$VENV/bin/checkov" --directory infra --framework bicep --skip-download --output json \
  >"$report" 2>"$report.log"
status=$?
set -e
if ! "$VENV/bin/python" scripts/deploy/checkov_report.py "$report"; then
  sed -n '1,40p' "$report.log" >&2
  rm -f "$report.log"
  exit 1
fi
rm -f "$report.log"
# 1 is "some check failed", which checkov_report.py has already judged; anything else is
# checkov itself failing.
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
  echo "checkov exited with status $status" >&2
  exit "$status"
fi
