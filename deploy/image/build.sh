#!/bin/bash
# `make image`: the driver image built on this machine, from Debian packages and the project's
# wheels, with no registry and no daemon. Needs root, mmdebstrap (make system-deps), a python 3.11
# with setuptools and grpcio-tools to build the wheel (default: the project's .venv).
#
#   deploy/image/build.sh                  # -> $OUT, an OCI image layout tar
#   CTR=/path/ctr CTR_ADDRESS=/path/containerd.sock deploy/image/build.sh   # + imported there
#
# Layers: 1) bookworm from mmdebstrap (python3, python3-venv, libstdc++6, pci.ids, python3-seccomp,
# isc-dhcp-client), cached by its inputs;
# 2) /opt/dranet, a venv with the dependencies (install.sh deps), cached by the wheel's
# Requires-Dist and the wheelhouse; 3) the dranet wheel alone (install.sh app), rebuilt every time.
# install.sh is the script deploy/Dockerfile runs too, and the image config (ENV, ENTRYPOINT, CMD)
# comes from the Dockerfile's final stage: the two builds cannot drift apart.
# Prints "[build Ns] step" lines on stderr and the OCI layout's path and sizes on stdout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
IMAGE=${IMAGE:-localhost/dranet:dev}
CACHE=${DRANET_IMAGE_CACHE:-/var/cache/dranet-image}
OUT=${OUT:-$CACHE/out/$(echo "${IMAGE##*/}" | tr ':' '_').oci.tar}
PYTHON=${PYTHON:-$SRC/.venv/bin/python}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CTR=${CTR:-ctr}
CTR_ADDRESS=${CTR_ADDRESS:-}
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}

command -v mmdebstrap >/dev/null || { echo "build.sh: needs mmdebstrap (make system-deps)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "build.sh: needs root (chroot, device nodes in the base)" >&2; exit 1; }
T0=$EPOCHREALTIME
step() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[build %5.1fs] %s\n", b-a, m}' >&2; }
# Scratch on tmpfs: unpacking ~300 MB of small files onto this kind of VM's disk costs seconds.
WORK=$(mktemp -d "${BUILD_TMP:-/dev/shm}/dranet-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"/{wheelhouse,blobs,out} "$(dirname "$OUT")"

# ---------------------------------------------------------------- 1. wheels
# What a commit would hold (tracked + untracked, not ignored): never .venv or generated modules.
mkdir "$WORK/src"
(cd "$SRC" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
PIPQ=(-q --disable-pip-version-check)
# The build backend generates the protobuf modules (setup.py); no `make proto` needed here.
quiet() { "$@" 2>&1 >/dev/null | { grep -v "is ignored: it is neither" || true; } >&2; }  # pip.conf noise
quiet "$PYTHON" -m pip wheel "${PIPQ[@]}" --no-deps --no-build-isolation -w "$WORK/wheels" "$WORK/src"
APPWHL=$(ls "$WORK"/wheels/dranet-*.whl)
# dependencies: offline from the wheelhouse when it has them all, else from the package index
if ! "$PYTHON" -m pip wheel "${PIPQ[@]}" --no-index --find-links "$CACHE/wheelhouse" -w "$CACHE/wheelhouse" \
        "$APPWHL" >/dev/null 2>&1; then
    step "wheelhouse incomplete: fetching the dependencies' wheels from the package index"
    quiet "$PYTHON" -m pip wheel "${PIPQ[@]}" --find-links "$CACHE/wheelhouse" -w "$CACHE/wheelhouse" "$APPWHL"
fi
rm -f "$CACHE/wheelhouse/$(basename "$APPWHL")"
step "wheels: $(basename "$APPWHL") + $(ls "$CACHE/wheelhouse" | wc -l) dependencies"

# ---------------------------------------------------------------- 2. base layer (cached)
# pyzmq's wheel needs libstdc++; pci.ids: the PCI ID database for pciVendor/pciDevice names;
# python3-seccomp: libseccomp's binding for the services' syscall filters; isc-dhcp-client: the
# dhclient the worker runs for claims with interface.dhcp (services/netns/dhcp.py)
MMARGS=(--variant=essential --include=python3,python3-venv,libstdc++6,pci.ids,python3-seccomp,isc-dhcp-client
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr                  # else usrmerge pulls in perl
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    # mmdebstrap copies the build host's resolv.conf and hostname; the runtime mounts its own
    --customize-hook=': > "$1/etc/resolv.conf"; : > "$1/etc/hostname"')
SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")
KEY=$(printf '%s\n' "$(mmdebstrap --version)" "${MMARGS[@]}" "${SOURCES[@]}" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$SUITE-$KEY.tar
if [[ ! -s $BASE ]]; then
    step "mmdebstrap $SUITE -> $BASE"
    mmdebstrap --format=tar "${MMARGS[@]}" "$SUITE" "$BASE.part" "${SOURCES[@]}" >"$WORK/mmdebstrap.log" 2>&1 \
        || { tail -30 "$WORK/mmdebstrap.log" >&2; exit 1; }
    mv "$BASE.part" "$BASE"
fi
step "base layer ($(du -m "$BASE" | cut -f1) MB)"

# ---------------------------------------------------------------- 3. deps layer (cached) + app layer
# in_chroot ROOT ARGS...: install.sh ARGS in a chroot of ROOT, offline, in a private mount
# namespace (its /proc and /dev mounts vanish with it, also on failure)
in_chroot() {
    local root=$1; shift
    cp "$HERE/install.sh" "$root/tmp/install.sh"
    unshare --mount --propagation private sh -euc '
        R=$1; shift
        mount -t proc proc "$R/proc"
        mount -t tmpfs -o mode=755 tmpfs "$R/dev"
        for d in null zero random urandom; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
        exec chroot "$R" "$@"' sh "$root" \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        sh /tmp/install.sh "$@"
    rm -f "$root/tmp/install.sh"
}
REQS=$("$PYTHON" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
print(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())' "$APPWHL" \
    | grep '^Requires-Dist:' | sort)
HOSTPY=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
DKEY=$(printf '%s\n' "$KEY" "$HOSTPY" "$REQS" "$(sha256sum "$HERE/install.sh")" $(ls "$CACHE/wheelhouse") \
    | sha256sum | cut -c1-16)
DEPS=$CACHE/deps-$DKEY.tar
R=$WORK/rootfs
mkdir "$R"
tar -xpf "$BASE" -C "$R" --numeric-owner
IMGPY=$(chroot "$R" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $IMGPY == "$HOSTPY" ]] || { echo "build.sh: image python $IMGPY, wheels built for $HOSTPY" >&2; exit 1; }
mkdir -p "$R/tmp/wheels"
if [[ ! -s $DEPS ]]; then
    cp "$CACHE"/wheelhouse/*.whl "$APPWHL" "$R/tmp/wheels/"
    in_chroot "$R" deps /tmp/wheels
    tar -C "$R" --numeric-owner -cf "$DEPS.part" opt/dranet
    mv "$DEPS.part" "$DEPS"
    rm -rf "$R/opt/dranet" "$R"/tmp/wheels/*
    step "deps layer built ($(du -m "$DEPS" | cut -f1) MB)"
fi
tar -xpf "$DEPS" -C "$R" --numeric-owner
cp "$APPWHL" "$R/tmp/wheels/"
touch "$WORK/stamp"; sleep 0.01
in_chroot "$R" app /tmp/wheels
# the app layer: everything the app install created or changed (it deletes nothing: no whiteouts)
(cd "$R" && find opt/dranet usr/local/bin -newer "$WORK/stamp" -print0 \
    | tar --null --no-recursion --numeric-owner -T - -cf "$WORK/app.tar")
step "app layer: $(tar -tf "$WORK/app.tar" | wc -l) entries, smoke test passed"

# ---------------------------------------------------------------- 4. OCI layout tar
python3 "$HERE/ocipack.py" --out "$OUT" --name "$IMAGE" --dockerfile "$SRC/deploy/Dockerfile" \
    --cached-layer "$BASE" --cached-layer "$DEPS" --layer "$WORK/app.tar" --blob-cache "$CACHE/blobs"
step "OCI layout $OUT ($(du -m "$OUT" | cut -f1) MB)"

# ---------------------------------------------------------------- 5. import
if [[ -n $CTR_ADDRESS ]]; then
    ctr_() { "$CTR" -a "$CTR_ADDRESS" -n k8s.io "$@"; }
    ctr_ images import --snapshotter "$SNAPSHOTTER" "$OUT" >/dev/null
    # CRI also names each image by its id; those of earlier builds keep their layers alive
    ctr_ images ls | awk 'NR > 1 { if ($1 ~ /^sha256:/) idonly[$1] = $3; else named[$3] = 1 }
        END { for (r in idonly) if (!(idonly[r] in named)) print r }' | xargs -r "$CTR" -a "$CTR_ADDRESS" -n k8s.io images rm >/dev/null
    step "imported $IMAGE into $CTR_ADDRESS"
fi
# old base/deps layers: those of other inputs, unused for a day (a build from another checkout
# with other dependencies may be packing its layer right now: never delete a fresh one)
touch -c "$BASE" "$DEPS"  # -c: never create one (another build may have deleted it)
find "$CACHE" -maxdepth 1 \( -name 'base-*.tar' -o -name 'deps-*.tar' \) ! -path "$BASE" ! -path "$DEPS" \
    -mmin +1440 -delete
step "done"
