# Settings shared by up.sh and down.sh. Every value can be overridden from the environment.
# RUN holds everything of one containerd instance (config, state, sockets, logs) and is removed by
# down.sh; CACHE holds the downloaded and extracted Debian packages and survives it.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${DRANET_CTRD_RUN:-/run/dranet-ctrd}"
CACHE="${DRANET_CTRD_CACHE:-/var/cache/dranet-ctrd}"
# The containerd version: 2.1 (default) or 1.7. Each version's packages live in their own part of
# the cache, so the two can be used one after the other without a download.
VERSION="${DRANET_CONTAINERD:-2.1}"
case $VERSION in
    2.1) ;;
    1.7) CACHE="$CACHE/1.7" ;;
    *) echo "DRANET_CONTAINERD=$VERSION: supported versions are 2.1 and 1.7" >&2; exit 2 ;;
esac
PKGROOT="$CACHE/root"
SOCK="$RUN/containerd.sock"
NRI_SOCK="${DRANET_CTRD_NRI_SOCK:-$RUN/nri.sock}"
PIDFILE="$RUN/containerd.pid"
LOG="$RUN/containerd.log"
CONFIG="$RUN/config.toml"
CNI_NET="${DRANET_CTRD_CNI_NET:-dranet-ctrd}"
CNI_BRIDGE="${DRANET_CTRD_BRIDGE:-dranetctrd0}"
CNI_SUBNET="${DRANET_CTRD_SUBNET:-10.223.0.0/24}"
NS="k8s.io"
PAUSE_IMAGE="localhost/dranet/pause:1.0"
NRI_REG_TIMEOUT="${DRANET_CTRD_NRI_REGISTRATION_TIMEOUT:-5s}"
NRI_REQ_TIMEOUT="${DRANET_CTRD_NRI_REQUEST_TIMEOUT:-2s}"
PYTHON="${DRANET_PYTHON:-python3}"

# containerd 2.1 and the CNI plugins come from Debian sid, 1.7 (1.7.24) and its CNI plugins from
# trixie; runc from bookworm, because newer runc packages are linked against glibc 2.38 and this
# machine has 2.36.
if [[ $VERSION == 1.7 ]]; then
    SUITE=trixie
    SUITE_SOURCES="deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian-security trixie-security main
deb http://deb.debian.org/debian trixie-updates main"
else
    SUITE=sid
    SUITE_SOURCES="deb http://deb.debian.org/debian sid main"
fi
SUITE_PKGS="containerd containernetworking-plugins"
BOOKWORM_PKGS="runc"

CTRD_BIN="$PKGROOT/usr/bin/containerd"
CTR_BIN="$PKGROOT/usr/bin/ctr"
SHIM_BIN="$PKGROOT/usr/bin/containerd-shim-runc-v2"
RUNC_BIN="$PKGROOT/usr/sbin/runc"
CNI_BIN_DIR="$PKGROOT/usr/lib/cni"

ctr_() { "$CTR_BIN" -a "$SOCK" -n "$NS" "$@"; }
