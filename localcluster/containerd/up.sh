#!/bin/bash
# Start a private containerd (2.1, or 1.7 with DRANET_CONTAINERD=1.7) with CRI and NRI for the
# tests and the demo:
#   packages from Debian (fetch.sh), a pause image built here with gcc (no registry is ever
#   contacted), a CNI bridge with no gateway, no masquerade and no host address (traffic from a
#   pod leads nowhere), and NRI listening on $NRI_SOCK with the configured timeouts.
# Prints "ready" and the sockets when containerd serves CRI. Exit 3: the packages could not be fetched.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "already running: pid $(cat "$PIDFILE") socket $SOCK nri $NRI_SOCK"
    exit 0
fi
"$HERE/fetch.sh"
"$RUNC_BIN" --version >/dev/null || { echo "up: $RUNC_BIN does not run on this machine" >&2; exit 1; }
command -v gcc >/dev/null || { echo "up: gcc is needed to build the pause image (apt-get install gcc)" >&2; exit 1; }

mkdir -p "$RUN"/{root,state,tmp,opt,images,runc,pods,certs.d,cdi,cni/net.d,cni/ipam,nri/plugins,nri/conf.d}
mkdir -p "$(dirname "$NRI_SOCK")"

# ------------------------------------------------------------------ the pause image
gcc -static -Os -o "$RUN/images/pause" "$HERE/pause.c"
"$PYTHON" "$HERE/mkimage.py" "$RUN/images/pause.tar" "$PAUSE_IMAGE" "$RUN/images/pause" pause

# ------------------------------------------------------------------ snapshotter: overlay if it mounts here
SNAPSHOTTER="${DRANET_CTRD_SNAPSHOTTER:-}"
if [[ -z $SNAPSHOTTER ]]; then
    t="$RUN/tmp/ovl"; mkdir -p "$t"/{l,u,w,m}
    if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
        umount "$t/m"; SNAPSHOTTER=overlayfs
    else
        SNAPSHOTTER=native
    fi
    rm -rf "$t"
fi

# ------------------------------------------------------------------ CNI: a bridge that leads nowhere
cat > "$RUN/cni/net.d/10-$CNI_NET.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [{
    "type": "bridge", "bridge": "$CNI_BRIDGE",
    "isGateway": false, "ipMasq": false, "hairpinMode": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CNI_SUBNET"}]], "dataDir": "$RUN/cni/ipam"}
  }]
}
JSON

# ------------------------------------------------------------------ containerd configuration
# 2.1 reads `version = 3`, 1.7 `version = 2` (one CRI section; NRI and CDI off unless switched on).
if [[ $VERSION == 1.7 ]]; then
cat > "$CONFIG" <<TOML
version = 2
root = '$RUN/root'
state = '$RUN/state'
temp = '$RUN/tmp'

[grpc]
  address = '$SOCK'

[debug]
  level = '${DRANET_CTRD_LOG_LEVEL:-info}'

[plugins]
  [plugins.'io.containerd.grpc.v1.cri']
    sandbox_image = '$PAUSE_IMAGE'
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
    restrict_oom_score_adj = true
    # off by default in 1.7: dra writes a CDI spec per prepared claim into our own spec dir
    enable_cdi = true
    cdi_spec_dirs = ['$RUN/cdi']
    [plugins.'io.containerd.grpc.v1.cri'.containerd]
      snapshotter = '$SNAPSHOTTER'
      default_runtime_name = 'runc'
      [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        sandbox_mode = 'podsandbox'
        [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]
          BinaryName = '$RUNC_BIN'
          Root = '$RUN/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.grpc.v1.cri'.cni]
      bin_dir = '$CNI_BIN_DIR'
      conf_dir = '$RUN/cni/net.d'
      max_conf_num = 1
    [plugins.'io.containerd.grpc.v1.cri'.registry]
      config_path = '$RUN/certs.d'

  [plugins.'io.containerd.internal.v1.opt']
    path = '$RUN/opt'

  # off by default in 1.7 (disable = true): the driver needs it on
  [plugins.'io.containerd.nri.v1.nri']
    disable = false
    disable_connections = false
    socket_path = '$NRI_SOCK'
    plugin_path = '$RUN/nri/plugins'
    plugin_config_path = '$RUN/nri/conf.d'
    plugin_registration_timeout = '$NRI_REG_TIMEOUT'
    plugin_request_timeout = '$NRI_REQ_TIMEOUT'
TOML
else
cat > "$CONFIG" <<TOML
version = 3
root = '$RUN/root'
state = '$RUN/state'
temp = '$RUN/tmp'

[grpc]
  address = '$SOCK'

[debug]
  level = '${DRANET_CTRD_LOG_LEVEL:-info}'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = '$SNAPSHOTTER'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_IMAGE'
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '$RUN/certs.d'

  [plugins.'io.containerd.cri.v1.runtime']
    # root here lacks CAP_SYS_RESOURCE: runc cannot give the pause process the oom_score_adj -998
    # the CRI asks for ("can't get final child's PID from pipe: EOF"); clamp it instead.
    restrict_oom_score_adj = true
    # CDI (on by default in 2.1; said here with our own spec dir, so that no test reads or writes
    # the machine's /etc/cdi or /var/run/cdi): dra writes a spec per prepared claim into it.
    enable_cdi = true
    cdi_spec_dirs = ['$RUN/cdi']
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        sandboxer = 'podsandbox'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$RUNC_BIN'
          Root = '$RUN/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$CNI_BIN_DIR']
      conf_dir = '$RUN/cni/net.d'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.internal.v1.opt']
    path = '$RUN/opt'

  [plugins.'io.containerd.nri.v1.nri']
    disable = false
    disable_connections = false
    socket_path = '$NRI_SOCK'
    plugin_path = '$RUN/nri/plugins'
    plugin_config_path = '$RUN/nri/conf.d'
    plugin_registration_timeout = '$NRI_REG_TIMEOUT'
    plugin_request_timeout = '$NRI_REQ_TIMEOUT'
TOML
fi

# ------------------------------------------------------------------ start
# What exists before we start, so down.sh removes only what this containerd created.
# (Kept across a restart on the same state: the first start's view is the one that counts.)
if [[ ! -f $RUN/hostdirs.before ]]; then
    ls /var/run/netns 2>/dev/null > "$RUN/netns.before" || true
    for d in /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni /var/run/netns; do
        [[ -d $d ]] && echo "$d"
    done > "$RUN/hostdirs.before"
fi
# An accidental image pull would go to a closed port on loopback, never off the machine.
PATH="$PKGROOT/usr/bin:$PKGROOT/usr/sbin:$PATH" \
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    setsid "$CTRD_BIN" --config "$CONFIG" >>"$LOG" 2>&1 </dev/null &
echo $! > "$PIDFILE"

for _ in $(seq 1 300); do
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "up: containerd exited:" >&2; tail -20 "$LOG" >&2; exit 1; }
    if [[ -S $SOCK && -S $NRI_SOCK ]] && ctr_ plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri .* ok'; then
        ctr_ images import --snapshotter "$SNAPSHOTTER" "$RUN/images/pause.tar" >/dev/null
        echo "ready: pid $(cat "$PIDFILE") cri $SOCK nri $NRI_SOCK log $LOG"
        exit 0
    fi
    sleep 0.1
done
echo "up: containerd did not serve CRI within 30 s:" >&2; tail -30 "$LOG" >&2
exit 1
