#!/bin/bash
# Stop the containerd that up.sh started (only the pid in its pid file) and remove what it left:
# pods (through CRI), leaked tasks (containerd 2.1 leaks the pause task of a sandbox an NRI
# plugin failed, containerd#13355), runc state, shims, mounts under $RUN, pod netns, the CNI
# bridge, CNI result files and empty cgroups. Keeps the package cache unless --purge.
set -uo pipefail
source "$(dirname "$0")/env.sh"
[[ -d $RUN ]] || { [[ ${1:-} == --purge ]] && rm -rf "$CACHE"; exit 0; }

pid=$(cat "$PIDFILE" 2>/dev/null || true)
if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe") == "$CTRD_BIN" ]]; then
    # CRI first: it tears down CNI and removes the pods' netns properly.
    timeout 120 "$PYTHON" -m localcluster.cri --socket "$SOCK" cleanup >/dev/null 2>&1 || true
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
        ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1; sleep 0.2; ctr_ tasks rm -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1; done
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; sleep 0.2; }
fi

# runc containers still in our root; remember their netns inodes so that only their netns go
ours=" "
for root in "$RUN"/runc/*/; do
    [[ -d $root && -x $RUNC_BIN ]] || continue
    for id in $("$RUNC_BIN" --root "$root" list -q 2>/dev/null); do
        cpid=$("$RUNC_BIN" --root "$root" state "$id" 2>/dev/null | sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p')
        [[ -n $cpid && $cpid != 0 ]] && ours+="$(stat -L -c %i "/proc/$cpid/ns/net" 2>/dev/null) "
        "$RUNC_BIN" --root "$root" delete -f "$id" >/dev/null 2>&1
    done
done
# Only the shims of this containerd (their command line holds `-address $SOCK`): other instances
# on the machine (parallel test sessions, a node stand-in) run the same shim binary.
for p in /proc/[0-9]*; do
    [[ $(readlink "$p/exe" 2>/dev/null) == "$SHIM_BIN" ]] || continue
    tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qxF -- "$SOCK" && kill -TERM "${p#/proc/}" 2>/dev/null
done
if [[ -f $RUN/netns.before ]]; then
    for ns in /var/run/netns/cni-*; do
        [[ -e $ns ]] || continue
        grep -qx "$(basename "$ns")" "$RUN/netns.before" && continue
        ino=$(stat -L -c %i "$ns" 2>/dev/null)
        [[ -n $ino && $ours == *" $ino "* ]] && { umount "$ns" 2>/dev/null; rm -f "$ns"; }
    done
fi
awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
done
ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link del "$CNI_BRIDGE"
rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null
for d in "$RUN"/root/io.containerd.grpc.v1.cri/sandboxes/* "$RUN"/state/io.containerd.runtime.v2.task/k8s.io/*; do
    [[ -d $d ]] && rm -f /var/lib/cni/results/*-"$(basename "$d")"-* 2>/dev/null
done
for c in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do [[ -d $c ]] && rmdir "$c" 2>/dev/null; done
if [[ -f $RUN/hostdirs.before ]]; then
    for d in /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni /var/run/netns; do
        grep -qx "$d" "$RUN/hostdirs.before" || rmdir "$d" 2>/dev/null
    done
fi
rm -rf "$RUN"
[[ ${1:-} == --purge ]] && rm -rf "$CACHE"
echo "down: done"
exit 0
