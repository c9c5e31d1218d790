# One way to run things. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint crds bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(PY) -m controlplane demo

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not envoy and not kube and not netns and not slow"

crds: venv
	$(PY) -m controlplane crds --output-dir crds
	$(PY) -m controlplane crds --output-dir manifests/crds --webhooks manifests/webhooks.yaml

# Long (tens of minutes) but bounded; BENCH_ARGS selects, e.g. BENCH_ARGS="--n 1000 --scenarios storm,canary"
bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

lint: venv
	$(PY) -m ruff check controlplane tests bench

clean:
	rm -rf $(VENV) .pytest_cache
