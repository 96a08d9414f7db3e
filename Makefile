# Everything starts from a fresh clone: the venv, the pinned tools and the test control plane
# are created on demand. `make run` is the main job, `make test` the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/.tools/bin
export PATH := $(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
DATA_DIR ?= $(CURDIR)/.data
PYTEST_ARGS ?=

.PHONY: all venv tools control-plane node-deps node-binaries image node run demo test test-fast lint bench chart constraints cluster clean

all: test

# pyproject.toml has compatible ranges; constraints.txt the exact versions CI and the image use.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $@

venv: $(VENV)/.installed

tools:
	bash hack/install-tools.sh

control-plane:
	bash hack/build-control-plane.sh

## node-deps: containerd, runc, CNI plugins, iptables, buildah, debootstrap from Debian (root + apt).
node-deps:
	bash hack/install-node-deps.sh

## node-binaries: kubelet, kube-proxy, kube-controller-manager, kube-scheduler, CoreDNS (cached).
node-binaries: control-plane
	bash hack/build-node.sh

## image: the project image from the Dockerfile, with buildah on Debian bases (no registry, no Docker).
image: node-deps
	bash hack/build-images.sh

## node: a control plane plus one node that runs pods, until Ctrl-C (prints how to use it).
node: venv tools node-binaries image
	$(PY) -m tests.support.node

## run: the main job — the runtime on the embedded default (local mode, file under ./.data/).
## Needs only the venv: the local runtime runs pyturso, never tursodb, helm or kubectl.
run: venv
	mkdir -p $(DATA_DIR)
	TURSO_LOCAL_PATH=$${TURSO_LOCAL_PATH:-$(DATA_DIR)/turso/runtime.db} BUNTIME_HOST=$${BUNTIME_HOST:-127.0.0.1} $(VENV)/bin/buntime serve

## demo: the short Turso service demo on the same local file.
demo: venv
	mkdir -p $(DATA_DIR)
	TURSO_LOCAL_PATH=$${TURSO_LOCAL_PATH:-$(DATA_DIR)/turso/runtime.db} $(VENV)/bin/buntime demo

## test: the whole suite against real tursodb, real replicas, a real kube-apiserver and a node
## that runs the chart's pods (the node tests skip, saying why, where a node cannot run).
test: venv tools control-plane node-binaries image
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: skip the control-plane tests (for a quick local loop).
test-fast: venv tools
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check runtime operator turso-server
	$(VENV)/bin/mypy
	PYTHONPATH=runtime:operator:turso-server $(VENV)/bin/lint-imports

bench: venv tools control-plane
	$(PY) -m bench

## constraints: re-pin constraints.txt from the current venv (after changing a range in pyproject.toml).
constraints: venv
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -vi '^buntime'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

## chart: regenerate the chart's plugin values, schema and questions from the plugin manifests.
chart: venv
	$(PY) hack/generate-chart.py

## cluster: start the test control plane (etcd + kube-apiserver) by hand.
cluster: venv tools control-plane
	$(PY) -m tests.support.controlplane

clean:
	rm -rf $(VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
