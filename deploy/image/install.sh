#!/bin/sh
# Installs dranet into an image's root filesystem. Run as root inside that filesystem, offline:
# deploy/Dockerfile's final stage runs it, and so does `make image` (deploy/image/build.sh, in a
# chroot of its Debian base), so both images hold the same install.
#
#   install.sh deps WHEELS   /opt/dranet: a venv with the dependencies of WHEELS/dranet-*.whl
#   install.sh app WHEELS    the dranet wheel alone into that venv, /usr/local/bin/dranet, a smoke test
#
# Two steps so an image build can cache the dependencies and redo only the small app part.
set -eu
step=${1:?deps|app}
wheels=${2:?directory with the dranet wheel and its dependency wheels}
VENV=/opt/dranet
# pip runs from its own wheel (Debian's python3-pip-whl, or the copy python.org's ensurepip
# bundles): it installs into the venv without ending up in it.
bundled=$(python3 -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))' 2>/dev/null || true)
pipwhl=$(ls /usr/share/python-wheels/pip-*.whl "$bundled"/_bundled/pip-*.whl 2>/dev/null | head -n 1)
[ -n "$pipwhl" ] || { echo "install.sh: no pip wheel in this python (Debian: install python3-venv)" >&2; exit 1; }
pip() { "$VENV/bin/python" "$pipwhl/pip" --disable-pip-version-check -q "$@"; }
app=$(ls "$wheels"/dranet-*.whl)

case $step in
deps)
    python3 -m venv --without-pip "$VENV"
    # libseccomp's Python binding is a Debian package only (python3-seccomp): into the venv too
    so=$(ls /usr/lib/python3/dist-packages/seccomp.cpython-*.so 2>/dev/null | head -n 1)
    [ -n "$so" ] || { echo "install.sh: install python3-seccomp (the services' syscall filter)" >&2; exit 1; }
    ln -sf "$so" "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
    pip install --no-index --no-cache-dir --find-links "$wheels" "$app"   # the app with its dependencies,
    pip uninstall -y dranet                                               # then the app out again
    ;;
app)
    pip install --no-index --no-cache-dir --no-deps "$app"
    ln -sf "$VENV/bin/dranet" /usr/local/bin/dranet
    # the modules a missing build step would leave out, and the supervisor `dranet run` execs
    "$VENV/bin/dranet" --help >/dev/null
    "$VENV/bin/python" -c 'import dranet._generated.dra_v1_pb2_grpc, supervisor, prometheus_client, seccomp'
    # discovery's PCI names (Debian's package pci.ids, in the base)
    [ -f /usr/share/misc/pci.ids ] || { echo "install.sh: no /usr/share/misc/pci.ids (Debian package pci.ids)" >&2; exit 1; }
    # the worker's DHCP client (services/netns/dhcp.py looks for it there) and the nsenter it runs it with
    [ -x /sbin/dhclient ] || { echo "install.sh: no /sbin/dhclient (Debian package isc-dhcp-client)" >&2; exit 1; }
    command -v nsenter >/dev/null || { echo "install.sh: no nsenter (Debian package util-linux)" >&2; exit 1; }
    ;;
*)
    echo "install.sh: unknown step $step (deps|app)" >&2; exit 2 ;;
esac
