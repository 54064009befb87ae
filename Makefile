# The two commands a newcomer needs: `make demo` and `make test`. `make bench` runs the benchmarks.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
GEN := dranet/_generated
PROTOS := $(wildcard proto/*.proto)

.PHONY: all venv proto test lint unit kernel e2e bench demo clean system-deps

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
	$(VPY) -m grpc_tools.protoc -I proto --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	sed -i -E 's/^import ([a-z0-9_]+_pb2) as /from . import \1 as /' $(GEN)/*_pb2_grpc.py $(GEN)/*_pb2.py
	touch $@
proto: $(GEN)/.stamp
