# nimop: the contract users, docs and CI rely on.
#   make test          lint, type-check, CRD drift check, unit + integration tests on the local lab
#   make demo / down   the whole thing running locally with a simulated llama NIM; stop it
#   make cluster-up / cluster-down / make -s kubeconfig    the local control plane alone
#   make crds          regenerate crds/ (and the chart's copy) from the pydantic models
#   make run           the operator against $KUBECONFIG, or the local lab
#   make bench         benchmarks that print numbers
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAB := .lab
STAMP := $(VENV)/.installed

.PHONY: help venv binaries lint typecheck crds crds-check unit integration test \
        cluster-up cluster-down kubeconfig run demo down bench lock clean

help:
	@sed -n 's/^#   //p' Makefile

$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements-dev.lock -e '.[dev]'
	touch $@

venv: $(STAMP)

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm
# from Go modules into ~/.cache/nimop (minutes cold, instant warm).
binaries:
	@hack/k8s/build.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator tests bench gitops
	$(VENV)/bin/ruff format --check operator tests bench gitops

typecheck: venv
	$(VENV)/bin/mypy operator/nimop operator/nimsim operator/nimlab tests bench gitops

crds: venv
	$(PY) -m nimop.crd write crds charts/nimop/crds

crds-check: venv
	$(PY) -m nimop.crd check crds charts/nimop/crds

unit: venv
	$(VENV)/bin/pytest tests/unit

integration: venv binaries
	$(VENV)/bin/pytest tests/integration

test: venv binaries lint typecheck crds-check
	$(VENV)/bin/pytest tests

cluster-up: venv binaries
	@$(PY) -m nimlab up --state-dir $(LAB)

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m nimlab down --state-dir $(LAB); fi

# Prints the running lab's kubeconfig path and nothing else (use with make -s).
kubeconfig:
	@if [ -s $(LAB)/pid ] && kill -0 "$$(cat $(LAB)/pid)" 2>/dev/null; then \
	  echo "$(CURDIR)/$(LAB)/kubeconfig"; \
	else echo "no lab is running: make cluster-up" >&2; exit 1; fi

run: venv
	@if [ -n "$$KUBECONFIG" ]; then kc="$$KUBECONFIG"; \
	 else kc="$$($(MAKE) -s kubeconfig)" || exit 1; fi; \
	 KUBECONFIG="$$kc" $(PY) -m nimop run

demo: venv binaries
	@$(PY) -m nimlab demo --state-dir $(LAB)

down: cluster-down

bench: venv binaries
	$(PY) -m bench

lock: venv
	@{ echo '# Pinned versions for CI and `make venv` (used as pip constraints). Regenerate with `make lock`.'; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^nimop'; } > requirements-dev.lock

clean: cluster-down
	rm -rf $(VENV) $(LAB) .mypy_cache .ruff_cache .pytest_cache
