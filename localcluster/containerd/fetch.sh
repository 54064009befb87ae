#!/bin/bash
# Download containerd, runc and the CNI plugins as Debian packages into $CACHE and unpack them
# under $CACHE/root. Uses private apt source lists and state under $CACHE, so the machine's own
# apt configuration is neither read nor changed. Does nothing when the packages are already there.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if [[ -x $CTRD_BIN && -x $RUNC_BIN && -x $CNI_BIN_DIR/bridge && -x $SHIM_BIN ]]; then
    exit 0
fi
mkdir -p "$CACHE/debs" "$CACHE/apt/archives/partial"
apt_private() {  # apt_private NAME apt-get-args...
    local name=$1; shift
    mkdir -p "$CACHE/apt/$name/lists/partial"
    apt-get -q -o APT::Sandbox::User=root -o Dir::Etc::sourceparts=- \
        -o Dir::Etc::sourcelist="$CACHE/apt/$name/sources.list" \
        -o Dir::State::Lists="$CACHE/apt/$name/lists" -o Dir::Cache="$CACHE/apt" "$@"
}
mkdir -p "$CACHE/apt/$SUITE" "$CACHE/apt/bookworm"
echo "$SUITE_SOURCES" > "$CACHE/apt/$SUITE/sources.list"
printf '%s\n' "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" > "$CACHE/apt/bookworm/sources.list"
for name in "$SUITE" bookworm; do
    ls "$CACHE/apt/$name/lists/"*_Packages* >/dev/null 2>&1 || apt_private "$name" update >/dev/null
done
# shellcheck disable=SC2086
(cd "$CACHE/debs" && apt_private "$SUITE" download $SUITE_PKGS && apt_private bookworm download $BOOKWORM_PKGS) \
    2>&1 | grep -v 'Download is performed unsandboxed' || true
rm -rf "$PKGROOT.new"; mkdir -p "$PKGROOT.new"
for p in $SUITE_PKGS $BOOKWORM_PKGS; do
    deb=$(ls -t "$CACHE/debs/${p}_"*.deb 2>/dev/null | head -1)
    [[ -n $deb ]] || { echo "fetch: could not download the Debian package $p" >&2; exit 3; }
    dpkg-deb -x "$deb" "$PKGROOT.new"
    basename "$deb" .deb >> "$PKGROOT.new/VERSIONS"
done
rm -rf "$PKGROOT"; mv "$PKGROOT.new" "$PKGROOT"
echo "fetch: $(tr '\n' ' ' < "$PKGROOT/VERSIONS")"
