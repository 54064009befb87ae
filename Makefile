# The two commands a newcomer needs: `make demo` and `make test`. `make bench` runs the benchmarks.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
GEN := dranet/_generated
PROTOS := $(wildcard proto/*.proto)

.PHONY: conformance-protos deploy-config all venv proto test lint unit kernel e2e bench demo clean system-deps

all: venv proto

# Virtual environment with the package (editable) and the test tools. Re-run when pyproject changes.
$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip >/dev/null
	$(VPY) -m pip install -q -e '.[test]'
	touch $@
venv: $(VENV)/.installed

# Python modules generated from proto/ (flat, self-contained .proto files). The generated gRPC
# modules import their siblings as top-level modules; rewrite that to package-relative imports.
$(GEN)/.stamp: $(PROTOS) $(VENV)/.installed
	find $(GEN) -name '*_pb2*.py*' -delete
	if [ -n "$(PROTOS)" ]; then \
	  $(VPY) -m grpc_tools.protoc -I proto --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS) && \
	  sed -i -E 's/^import ([a-z0-9_]+_pb2) as /from . import \1 as /' $(GEN)/*_pb2_grpc.py $(GEN)/*_pb2.py; \
	fi
	touch $@
proto: $(GEN)/.stamp

# Debian tools the tests and the demo use (iproute2 for `ip netns`, gcc for the pause image).
system-deps:
	@missing=""; for c in ip gcc nsenter; do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq iproute2 gcc libc6-dev util-linux >/dev/null; \
	fi

lint: venv proto
	$(VPY) -m ruff check dranet services tests
	$(VPY) -m mypy

# Everything: lint, types, unit, kernel and end-to-end tests (the e2e fixture brings up containerd).
# pytest's exit code 5 (no tests collected) is a failure like any other non-zero code.
test: system-deps venv proto lint conformance-protos
	$(VPY) -m pytest -p no:cacheprovider tests

# The official kubelet protos (Debian's golang-github-kubernetes-kubelet-dev) for the conformance tests.
conformance-protos:
	tests/conformance/fetch_kubelet_protos.sh || echo "kubelet protos unavailable; conformance tests will skip"

unit: venv proto
	$(VPY) -m pytest tests/unit

bench: system-deps venv proto
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(VPY) $$b || exit 1; echo; done

demo: system-deps venv proto
	$(VPY) -m dranet demo

clean:
	rm -rf $(VENV) $(GEN)/*_pb2*.py* $(GEN)/.stamp build *.egg-info

# deploy/supervisord.conf: what `dranet run` renders in the image (an example for node-1; the
# DaemonSet renders its own at start). tests/unit/test_platform.py keeps the two in step.
deploy-config: venv
	$(VPY) -c 'import sys; from tests.unit.test_platform import deploy_config; sys.stdout.write(deploy_config())' > deploy/supervisord.conf
