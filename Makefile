# agent-fleet: the two commands a newcomer needs are `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install up test lint unit clean checkov

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	npm ci --no-audit --no-fund --loglevel=error
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	touch $(STAMP)

install: $(STAMP)

# Brings up Azurite, the Cosmos emulator and the local Functions host; Ctrl-C stops all.
up: install
	$(PY) -m devtools.stack --demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# Everything: linters, unit tests, the contract suite on both backends, integration tests.
test: install
	bash scripts/test.sh

# Security scan of infra/ (Bicep): every template parses, checkov reports 0 failed checks,
# every skipped check is waived in the template with a reason. checkov lives in its own
# virtualenv (.local/venv-checkov): it pins a `packaging` that conflicts with pytest.
checkov:
	PYTHON=$(PYTHON) bash scripts/checkov.sh

unit: install
	$(PY) -m pytest -m "not integration"

# Claim storm, dispatch latency, idle cost, lifecycle and scale curve on one fresh local stack
# (stopped after): prints one combined table, writes benchmarks/results/*.json (~11 min on
# 2 cores). The lifecycle prints its figures as ratios to benchmarks/reference/*-baseline.json.
# Options (one part, --quick sizes): .venv/bin/python -m benchmarks --help
.PHONY: bench
bench: install
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
