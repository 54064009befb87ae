# The two commands a newcomer needs: `make demo` and `make test`. `make bench` runs the benchmarks.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
GEN := dranet/_generated
PROTOS := $(wildcard proto/*.proto)

.PHONY: conformance-protos deploy-config all venv proto test lint unit kernel e2e bench demo clean system-deps image seccomp

all: venv proto

# Virtual environment with the package (editable), the test tools and the development stand-ins
# (localcluster/, a distribution of its own: never in the product wheel). Re-run when pyproject changes.
$(VENV)/.installed: pyproject.toml localcluster/pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip >/dev/null
	$(VPY) -m pip install -q -e '.[test]' -e ./localcluster
	touch $@
venv: $(VENV)/.installed

# libseccomp's Python binding (dranet/syscalls.py) is a Debian package only (python3-seccomp, from
# `make system-deps`): linked into the virtualenv, whose Python has the same ABI (3.11).
seccomp: $(VENV)/.installed
	@so=$$(ls /usr/lib/python3/dist-packages/seccomp.cpython-*.so 2>/dev/null | head -1); \
	site=$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	if [ -z "$$so" ]; then echo "python3-seccomp is not installed: run make system-deps"; exit 1; fi; \
	ln -sf "$$so" "$$site/"

# Python modules generated from proto/ (flat, self-contained .proto files) into the dev tree, by the
# same generator the build backend runs for every wheel (setup.py -> proto/generate.py).
$(GEN)/.stamp: $(PROTOS) proto/generate.py $(VENV)/.installed
	$(VPY) proto/generate.py $(GEN)
	touch $@
proto: $(GEN)/.stamp

# Debian tools the tests and the demo use (iproute2 for `ip netns`, gcc for the pause image,
# mmdebstrap for the driver image's base, openssl for the node stand-in's API certificates,
# Debian's PCI ID database (pci.ids: the names discovery publishes, as the image has them),
# dhclient for the netns worker's DHCP and dnsmasq as the DHCP server the tests run).
system-deps:
	@missing=""; for c in ip gcc nsenter mmdebstrap openssl dhclient dnsmasq; do \
	  command -v $$c >/dev/null || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	test -f /usr/share/misc/pci.ids || missing="$$missing pci.ids"; \
	ls /usr/lib/python3/dist-packages/seccomp.cpython-*.so >/dev/null 2>&1 || missing="$$missing python3-seccomp"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends iproute2 gcc libc6-dev util-linux mmdebstrap openssl pci.ids python3-seccomp \
	    isc-dhcp-client dnsmasq-base >/dev/null; \
	fi

# The driver image, built here from Debian packages and the project's wheels, no registry: an OCI
# layout tar under /var/cache/dranet-image/out (cached layers: a code change rebuilds in seconds).
# CTR=<ctr> CTR_ADDRESS=<containerd socket> also imports it. deploy/image/build.sh says more.
image: system-deps venv
	deploy/image/build.sh

lint: venv proto
	$(VPY) -m ruff check .
	$(VPY) -m mypy

# Everything: lint, types, unit, kernel and end-to-end tests (the e2e fixture brings up containerd).
# pytest's exit code 5 (no tests collected) is a failure like any other non-zero code.
test: system-deps venv seccomp proto lint conformance-protos
	$(VPY) -m pytest -p no:cacheprovider tests

# The official kubelet protos (Debian's golang-github-kubernetes-kubelet-dev) for the conformance tests.
conformance-protos:
	tests/conformance/fetch_kubelet_protos.sh || echo "kubelet protos unavailable; conformance tests will skip"

unit: venv seccomp proto
	$(VPY) -m pytest tests/unit

bench: system-deps venv seccomp proto
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(VPY) $$b || exit 1; echo; done

# The driver runs as the DaemonSet's pod on containerd, from the image `make image` builds (cached).
demo: system-deps venv seccomp proto
	$(VPY) -m localcluster demo

clean:
	rm -rf $(VENV) $(GEN)/*_pb2*.py* $(GEN)/.stamp build *.egg-info

# deploy/supervisord.conf: what `dranet run` renders in the image (an example for node-1; the
# DaemonSet renders its own at start). tests/unit/test_platform.py keeps the two in step.
deploy-config: venv
	$(VPY) -c 'import sys; from tests.unit.test_platform import deploy_config; sys.stdout.write(deploy_config())' > deploy/supervisord.conf
