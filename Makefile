SHELL := /bin/bash
# One way to run things. Every target creates .venv on first use, from requirements.lock:
# every package at one version with its hashes, so a fresh machine gets what CI tested.
# pyproject.toml keeps the ranges for people who install the package as a library;
# `make lock` resolves them again into requirements.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check --no-input
STAMP := $(VENV)/.installed
LOCK := requirements.lock
UV_VERSION := 0.13.10

.PHONY: kube-binaries browser venv demo demo-ingress test test-slow test-fast lint lock crds bench bench-overhead bench-istiod clean

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation --editable .
	touch $(STAMP)

# Resolve pyproject.toml again: the dev set (requirements.lock) and the image's runtime set
# (requirements-runtime.lock); commit the result.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
		--python-version 3.11 --quiet --output-file $(LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml build-requirements.in --extra envoy \
		--generate-hashes --universal --python-version 3.11 --quiet \
		--output-file requirements-runtime.lock

demo: venv
	$(PY) -m controlplane demo

demo-ingress: venv
	$(PY) -m controlplane demo --ingress

# The kube tier needs kube-apiserver, kubectl and etcd: the first run builds them from the
# Kubernetes Go modules (about 10 minutes on two cores, progress below) into
# $$CONTROLPLANE_K8S_CACHE or ~/.cache/controlplane-k8s; later runs find them there.
# `make test` is every tier but the slow one (property tests at depth, large meshes);
# `make test-slow` runs that; .ci/run runs both.
test: venv kube-binaries browser
	$(PY) -m pytest -m "not slow"

test-slow: venv kube-binaries
	$(PY) -m pytest -m slow

kube-binaries:
	@bash tests/cluster/build.sh 2> >(grep --line-buffered -v '^go: downloading' >&2) >/dev/null

# The browser tests (tests/web) need Debian's chromium: installed with apt-get when missing
# (root or password-less sudo); where it cannot be, those tests skip saying why.
browser:
	@bash tests/web/install-chromium.sh >/dev/null

test-fast: venv
	$(PY) -m pytest -m "not envoy and not kube and not netns and not slow and not browser"

crds: venv
	$(PY) -m controlplane crds --output-dir crds
	$(PY) -m controlplane crds --output-dir manifests/crds --webhooks manifests/webhooks.yaml

# Long (tens of minutes) but bounded; BENCH_ARGS selects, e.g. BENCH_ARGS="--n 1000 --scenarios storm,canary"
bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

# What a sidecar costs: per-hop latency and one Envoy's memory (bench/README.md, a few minutes)
bench-overhead: venv
	$(PY) -m bench.hop_overhead $(BENCH_ARGS)

# istiod side by side (bench/peer.py): builds istiod's pilot-discovery from the Go module proxy at
# the version pinned in bench/istiod/build.sh (about 10 minutes the first time, cached next to the
# kube binaries), then alternates both control planes against one kube-apiserver. Never part of
# `make test`. BENCH_ARGS="--n 100" for a quick run.
bench-istiod: venv kube-binaries
	$(PY) -m bench.peer $(BENCH_ARGS)

lint: venv
	$(PY) -m ruff check controlplane tests bench
	$(PY) -m ruff format --check controlplane tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache
