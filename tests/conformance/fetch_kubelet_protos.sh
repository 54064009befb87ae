#!/bin/bash
# Fetch the kubelet's official .proto files (Debian golang-github-kubernetes-kubelet-dev) for the
# DRA conformance tests. Only apt is contacted. The package is in sid (not bookworm), so a private
# apt list is used; the machine's own apt configuration is not touched.
#   usage: tests/conformance/fetch_kubelet_protos.sh [DEST]   (default .cache/kubelet-protos)
# Afterwards DEST/usr/share/gocode/src/k8s.io/kubelet/pkg/apis/... holds the protos.
set -euo pipefail
DEST=${1:-.cache/kubelet-protos}
PKG=golang-github-kubernetes-kubelet-dev
if [[ -f $DEST/usr/share/gocode/src/k8s.io/kubelet/pkg/apis/dra/v1beta1/api.proto ]]; then
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$DEST"
echo "deb http://deb.debian.org/debian sid main" > "$WORK/sid.list"
APT=(-q -o APT::Sandbox::User=root -o Dir::Etc::sourceparts=- -o "Dir::Etc::sourcelist=$WORK/sid.list"
     -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache")
apt-get "${APT[@]}" update >/dev/null
(cd "$WORK" && apt-get "${APT[@]}" download "$PKG" >/dev/null)
dpkg-deb -x "$WORK"/${PKG}_*.deb "$DEST"
basename "$WORK"/${PKG}_*.deb .deb > "$DEST/VERSION"
echo "kubelet protos in $DEST ($(cat "$DEST/VERSION"))"
