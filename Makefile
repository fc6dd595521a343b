# nimop: the contract users, docs and CI rely on.
#   make test          lint, type-check, CRD drift check, images, unit + integration tests on the lab
#   make demo / down   the whole thing running locally with a simulated llama NIM; stop it
#   make cluster-up / cluster-down / make -s kubeconfig    the local control plane alone
#   make cluster-up KARPENTER=1   ... with real Karpenter and a GPU NodePool at zero nodes
#   make crds          regenerate crds/ (and the chart's copy) from the pydantic models
#   make run           the operator against $KUBECONFIG, or the local lab
#   make bench         benchmarks that print numbers
#   make chaos         crash soak: 50 SIGKILLs of the operator through 30 NimServices' rollouts
#   make image         the operator and simulator images, built without a Docker engine if need be
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAB := .lab
STAMP := $(VENV)/.installed

.PHONY: help venv binaries lint typecheck crds crds-check unit integration test \
        cluster-up cluster-down kubeconfig run demo down bench chaos image lock clean karpenter

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

# Karpenter's controller with its kwok cloud provider, for the lab's autoscaled GPU pools
# (tests/integration/test_lab_karpenter.py, cluster-up KARPENTER=1); minutes cold, instant warm.
karpenter:
	@hack/karpenter/build.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator tests bench gitops
	$(VENV)/bin/ruff format --check operator tests bench gitops
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy operator/nimop operator/nimsim operator/nimlab operator/nimcheck tests bench gitops

crds: venv
	$(PY) -m nimop.crd write crds charts/nimop/crds

crds-check: venv
	$(PY) -m nimop.crd check crds charts/nimop/crds

unit: venv
	$(VENV)/bin/pytest tests/unit

# The lab runs the images `make image` builds (the operator's Helm install tests, Jobs' shell
# scripts in the simulator image): warm, the build takes seconds.
integration: venv binaries karpenter image
	$(VENV)/bin/pytest tests/integration

test: venv binaries karpenter lint typecheck crds-check image
	$(VENV)/bin/pytest tests

# KARPENTER=1 (or NIMLAB_KARPENTER=1): Karpenter's GPU and CPU NodePools instead of the static
# GPU nodes; `up` builds Karpenter first (hack/karpenter/build.sh, minutes cold).
cluster-up: venv binaries
	@$(PY) -m nimlab up --state-dir $(LAB) $(if $(filter 1 true yes,$(KARPENTER)),--karpenter-gpu-pool)

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
	$(VENV)/bin/pip install --quiet -c requirements-dev.lock -e '.[dev,bench]'
	$(PY) -m bench

# Not part of `make test`: about 10 minutes on its own lab (bench/chaos.py; CHAOS_* settings).
chaos: venv binaries
	$(PY) -m bench.chaos

# nimop:<version> and nimsim:<version> from docker/*.Dockerfile with docker, podman or buildah, also
# written as OCI archives to build/images/; missing tools come from Debian's packages (as root).
# docs/install.md, "Images", says where the base image comes from.
image:
	@hack/image/build.sh

lock: venv
	@{ echo '# Pinned versions for CI and `make venv` (used as pip constraints). Regenerate with `make lock`.'; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^nimop'; } > requirements-dev.lock

clean: cluster-down
	rm -rf $(VENV) $(LAB) .mypy_cache .ruff_cache .pytest_cache
