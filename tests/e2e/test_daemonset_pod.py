"""The driver as it ships: deploy/kubernetes (kustomized) run as the DaemonSet's pod, from the image
`make image` builds, through CRI on a real containerd inside a node stand-in's network namespace
(localcluster.node; conftest.py's ``driver``, which every e2e test uses). What the pod gets is
checked from inside its containers; a pod with a claimed NIC is run through the real DRA gRPC
(registration socket in the hostPath kubelet directory) and CRI, as in test_full_path.py.
"""

from __future__ import annotations

import http.client
import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dranet.audit import mask_of
from dranet.capabilities import WORKER_CAPS, WORKER_DHCP_CAPS
from localcluster.daemonpod import ProbeState, http_probe
from localcluster.node import DaemonSetCluster, service_of
from localcluster.nodenet import StandInNic, in_netns, link_info
from localcluster.podspec import Probe
from tests.e2e.claims import Nics, assert_home, has_nic, new_pod, simple_cfg

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

# Read inside a container: credentials, root filesystem, network devices, the processes it sees.
CHECK = r"""
import json, os
def st(k):
    for l in open('/proc/self/status'):
        if l.startswith(k + ':'): return l.split()[1]
try:
    open('/probe-rw', 'w'); rootfs = 'rw'
except OSError as e:
    rootfs = 'ro' if e.errno == 30 else str(e)
procs = set()
for p in os.listdir('/proc'):
    if p.isdigit():
        try: procs.add(open(f'/proc/{p}/cmdline').read().replace('\0', ' ').strip())
        except OSError: pass
print(json.dumps({'uid': os.getuid(), 'CapEff': st('CapEff'), 'CapBnd': st('CapBnd'),
  'NoNewPrivs': st('NoNewPrivs'), 'Seccomp': st('Seccomp'), 'rootfs': rootfs,
  'netdevs': sorted(os.listdir('/sys/class/net')), 'env': {k: os.environ.get(k) for k in
  ('NODE_NAME', 'KUBERNETES_SERVICE_HOST')}, 'processes': sorted(procs - {''}),
  'netns_dir': os.path.isdir('/var/run/netns'), 'pci_ids': os.path.isfile('/usr/share/misc/pci.ids')}))
"""


@pytest.fixture
def cluster(driver: DaemonSetCluster) -> DaemonSetCluster:
    return driver


def inside(cluster: DaemonSetCluster, container: str) -> dict[str, Any]:
    assert cluster.pod is not None
    code, out, err = cluster.pod.exec(container, ["python3", "-c", CHECK], timeout=20)
    assert code == 0, err
    return dict(json.loads(out))


def test_containers_run_with_the_manifests_security_context(cluster: DaemonSetCluster) -> None:
    main, worker = inside(cluster, "dranet"), inside(cluster, "netns")
    # dranet: root with only the uid switch (SETUID, SETGID, CHOWN: discovery and dra give them up
    # with their uid), no_new_privs, seccomp filter, read-only root
    switch = (1 << 0) | (1 << 6) | (1 << 7)
    assert (main["uid"], int(main["CapEff"], 16), main["NoNewPrivs"], main["Seccomp"], main["rootfs"]) == (
        0,
        switch,
        "1",
        "2",
        "ro",
    )
    # netns: NET_ADMIN and SYS_ADMIN, and NET_RAW and NET_BIND_SERVICE for its DHCP client (--dhcp)
    # only, also in the bounding set; read-only root
    net_and_sys_admin = mask_of(WORKER_CAPS | WORKER_DHCP_CAPS)
    assert int(worker["CapEff"], 16) == int(worker["CapBnd"], 16) == net_and_sys_admin
    assert worker["rootfs"] == "ro"
    # env from fieldRef and the `kubernetes` Service
    assert main["env"] == {"NODE_NAME": cluster.node_name, "KUBERNETES_SERVICE_HOST": "127.0.0.1"}
    assert any(service_of(p) == "endpoint" and "--metrics-address=:9177" in p for p in main["processes"])
    # No shared process namespace: neither container sees the other's processes
    assert not any(service_of(p) == "netns" for p in main["processes"])
    assert not any(service_of(p) in ("discovery", "dra", "nri") for p in worker["processes"])
    # hostNetwork is the node netns: its NICs, never the machine's interfaces
    assert cluster.net is not None
    assert {n.name for n in cluster.net.nics} <= set(main["netdevs"])
    machine = set(Path("/sys/class/net").iterdir())
    assert not {p.name for p in machine} & set(main["netdevs"]) - {"lo"}
    assert worker["netns_dir"]
    assert main["pci_ids"]  # Debian's PCI ID database: pciVendor/pciDevice names as upstream's


def test_discovery_in_the_pod_publishes_only_the_nodes_nics(cluster: DaemonSetCluster) -> None:
    """hostNetwork is the node netns: the machine's own NICs (a PCI NIC in sysfs, its netdev in the
    machine's netns) are not the node's to hand out, and every published device has its ifName."""
    assert cluster.net is not None
    devices = [d for s in cluster.our_slices() for d in s["spec"].get("devices") or []]
    names = [((d.get("attributes") or {}).get("dra.net/ifName") or {}).get("string") for d in devices]
    assert None not in names, [d for d, n in zip(devices, names, strict=True) if n is None]
    assert {n.name for n in cluster.net.nics} <= set(names)
    machine = {p.name for p in Path("/sys/class/net").iterdir()} - {"lo"}
    assert not set(names) & machine, set(names) & machine


# Tries to read the ServiceAccount token: its own, and through /proc/<pid>/root of every other
# process it sees; says which pids it tried (with their command lines) and which gave the token.
TOKEN = r"""
import json, os
T = 'var/run/secrets/kubernetes.io/serviceaccount/token'
tried, read = {}, []
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try: tried[p] = open(f'/proc/{p}/cmdline').read().replace('\0', ' ').strip()
    except OSError: continue
    try:
        open(f'/proc/{p}/root/{T}').read(); read.append(p)
    except OSError:
        pass
try: open('/' + T).read(); own = True
except OSError: own = False
print(json.dumps({'tried': tried, 'read': read, 'own': own}))
"""


def test_the_worker_cannot_read_the_main_containers_token(cluster: DaemonSetCluster) -> None:
    """Issue 13, item 4: the worker (root, CAP_SYS_ADMIN) gets no API credentials: none of its own,
    and none through another process's root (no shared pid namespace; every dranet process is
    undumpable, so even a same-uid process in the main container cannot look into a service)."""
    assert cluster.pod is not None
    code, out, err = cluster.pod.exec("netns", ["python3", "-c", TOKEN], timeout=20)
    assert code == 0, err
    worker = json.loads(out)
    print(f"from the worker: tried {len(worker['tried'])} processes, read the token through {worker['read']}")
    assert worker["read"] == [] and not worker["own"], worker
    code, out, err = cluster.pod.exec("dranet", ["python3", "-c", TOKEN], timeout=20)
    assert code == 0, err
    main = json.loads(out)
    services = {p for p, cmd in main["tried"].items() if service_of(cmd) or "dranet.supervise" in cmd}
    assert len(services) >= 4, main["tried"]  # supervisord and the three services
    assert main["own"] and not services & set(main["read"]), main


def test_probes_pass_with_the_manifests_probes(cluster: DaemonSetCluster) -> None:
    pod = cluster.pod
    assert pod is not None
    assert pod.ready() == {"dranet": True, "netns": True}
    for name, rc in pod.containers.items():
        for kind, state in rc.probes.items():
            assert state.probe.http is not None, f"{name} {kind}: the manifest's probes are httpGet"
            ok, why = http_probe(pod.plan.netns, state.probe)
            assert ok, f"{name} {kind}: {why}"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_one_endpoint_serves_every_services_metrics(cluster: DaemonSetCluster, host: str) -> None:
    """:9177 in the node's network, over IPv4 and IPv6: the four services' metrics (the worker's
    from the other container too) and each one's process metrics, under a `service` label."""
    assert cluster.pod is not None

    def scrape() -> str:
        conn = http.client.HTTPConnection(host, 9177, timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    text = in_netns(cluster.node_netns, scrape)
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    every = {"discovery", "dra", "nri", "netns"}
    up = {s.labels["service"]: s.value for s in samples if s.name == "dranet_service_up"}
    assert up == dict.fromkeys(every, 1.0)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "dranet_build_info"):
        assert {s.labels["service"] for s in samples if s.name == name} == every | {"endpoint"}, name
    assert any(s.name == "dranet_discovery_devices" and s.labels["service"] == "discovery" for s in samples)


def test_audit_from_the_host_passes(cluster: DaemonSetCluster) -> None:
    """`dranet audit` on the host, against the processes of the running containers. Without --pid it
    finds them by the pid and pid namespace each service answers with on the bus (the pids the
    services see are the pod's own pid namespace's), whatever else runs `dranet` on the machine."""
    r = subprocess.run(
        [sys.executable, "-m", "dranet", "audit", f"--runtime-dir={cluster.runtime_dir}", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # Issue 13: every thread checked; discovery and dra under their own uids, the bus policy
    # (learned from the worker) agreeing; every service under its seccomp filter; no token for
    # the worker.
    report = json.loads(r.stdout)
    procs = {p["service"]: p for p in report["processes"]}
    # The shared driver has docs/install.md's CDI step applied, which keeps dra uid 0 (it writes the
    # runtime's CDI directory): the audit then warns, as documented, that dra shares uid 0.
    dra_uid = 0 if cluster.cdi else 65102
    uids = {s: p["uid"] for s, p in procs.items()}
    assert uids == {"netns": 0, "discovery": 65101, "dra": dra_uid, "nri": 0}
    assert all(p["threads"] > 1 and p["seccomp"] == 2 and p["no_new_privs"] for p in procs.values()), procs
    assert not procs["netns"]["sees_token"] and procs["dra"]["sees_token"]
    findings = report["findings"]
    uid_findings = [f for f in findings if f["severity"] in ("fail", "warn") and "uid" in f["message"]]
    shared = [f for f in uid_findings if f["severity"] == "warn" and "share uid 0" in f["message"]]
    assert uid_findings == (shared if cluster.cdi else []), uid_findings
    # each service found by its pid as seen from the node (bus answer + pid namespace)
    assert {s: p["pid"] for s, p in procs.items()} == {s: cluster.service_pid(s) for s in procs}
    # discovery's rescans are background work: it runs at --nice 10, the pod start path at 0
    nice = {s: niceness(p["pid"]) for s, p in procs.items()}
    assert nice == {"netns": 0, "discovery": 10, "dra": 0, "nri": 0}


def niceness(pid: int) -> int:
    """Field 19 of /proc/PID/stat (after the parenthesised command, which may hold spaces)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def claimed_pod(cluster: DaemonSetCluster, nic: StandInNic) -> dict[str, Any]:
    return new_pod(cluster, [("nic", nic, simple_cfg(nic))])


def test_claimed_nic_in_the_pod_and_back(cluster: DaemonSetCluster, nics: Nics) -> None:
    assert cluster.net is not None
    (nic,) = nics.take()
    before = cluster.net.snapshot()
    pod = claimed_pod(cluster, nic)
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None and run.status.netns
        assert has_nic(run.status.netns, nic, before[nic.name]["address"])
        assert link_info(nic.name, cluster.node_netns) is None  # gone from the node
    finally:
        cluster.remove_pod(pod, run)
    assert_home(cluster, before, nic)


def test_liveness_failure_restarts_the_sidecar_and_attached_nics_stay(
    cluster: DaemonSetCluster, nics: Nics
) -> None:
    """The prober's restart on the real runtime: a liveness probe that fails (here a probe that
    always fails, period 1 s, threshold 2; the manifest's own values are checked in
    tests/unit/test_podspec.py) restarts the netns container as the kubelet does, the new one gets
    the manifest's probes back and becomes ready, and a pod attached meanwhile keeps its NIC."""
    assert cluster.pod is not None and cluster.net is not None
    (nic,) = nics.take()
    before = cluster.net.snapshot()
    pod = claimed_pod(cluster, nic)
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None
        rc = cluster.pod.containers["netns"]
        attempt, restarts = rc.attempt, len(rc.restarts)
        failing = Probe("livenessProbe", ["false"], 1, 5, 2, 1, 0)
        rc.probes["livenessProbe"] = ProbeState(failing, time.monotonic())
        deadline = time.monotonic() + 90
        while len(rc.restarts) == restarts and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rc.attempt == attempt + 1
        assert rc.restarts[-1].startswith("livenessProbe failed 2 times")
        assert rc.probes["livenessProbe"].probe.period == 30  # the manifest's again
        cluster.pod.wait_ready(90)
        assert has_nic(run.status.netns, nic, before[nic.name]["address"])
    finally:
        cluster.remove_pod(pod, run)
    assert_home(cluster, before, nic)


def test_the_checks_after_an_install_pass(cluster: DaemonSetCluster) -> None:
    """docs/install.md's commands after `kubectl apply -k`: `kubectl get` against the node
    stand-in's API server, `kubectl exec ds/dranet -c C -- CMD` as CMD run in container C."""
    from tests.unit.test_install_doc import install_commands

    assert cluster.pod is not None and cluster.kubeconfig is not None
    ran = []
    for cmd in install_commands():
        argv = shlex.split(cmd)
        if argv[:1] != ["kubectl"] or "apply" in argv:
            continue
        if "exec" in argv:
            container, inner = argv[argv.index("-c") + 1], argv[argv.index("--") + 1 :]
            code, out, err = cluster.pod.exec(container, inner, timeout=60)
        else:
            r = subprocess.run(
                [*argv, f"--kubeconfig={cluster.kubeconfig}"], capture_output=True, text=True, timeout=60
            )
            code, out, err = r.returncode, r.stdout, r.stderr
            if "resourceslices" in argv:
                assert cluster.node_name in out, out
        assert code == 0, f"{cmd}: {out} {err}"
        ran.append(cmd)
    assert len(ran) == 4, ran


def test_rolling_update_runs_the_new_pod_beside_the_old(cluster: DaemonSetCluster, nics: Nics) -> None:
    """maxSurge 1 on the real runtime: a second driver pod (another pod UID) starts beside the
    first on the same host directories. Its dra registers under its own socket names and the kubelet
    stand-in switches to it; its discovery, nri and worker stand by (one NRI plugin, one worker on
    the node). When the old pod goes, the new pod's services take over: a NIC attached before stays
    in its pod, a new pod gets its NIC through the new driver pod, and both go home at the end. The
    new pod stays the session's driver for the tests after this one."""
    import dataclasses

    from dranet.bus import BusClient, BusError
    from localcluster.cri import CriClient
    from localcluster.daemonpod import DaemonPod
    from localcluster.podspec import plan

    assert cluster.pod is not None and cluster.net is not None and cluster.agent is not None
    assert cluster.containerd is not None and cluster.pki is not None
    old = cluster.pod
    first, second = nics.take(2)
    before = cluster.net.snapshot()
    pod = claimed_pod(cluster, first)
    run = cluster.run_pod(pod)
    uid = str(uuid.uuid4())
    pod_dir = cluster.workdir / "pods" / f"driver-{uid[:8]}"
    node = dataclasses.replace(cluster.node(), pod_uid=uid, pod_dir=pod_dir)
    ca = cluster.pki[0].read_text()
    new = DaemonPod(
        plan(cluster.template, node, sa_token="node-standin-token", root_ca=ca),
        CriClient(str(cluster.containerd.cri_socket)),
    )
    bus = BusClient(cluster.runtime_dir, "dra", timeout=5.0)

    def bus_instance() -> str:
        try:  # a call in flight while the old socket closes is lost: ask again
            return str(bus.call("ping", {}, timeout=1.0)["details"]["instance"])
        except BusError:
            return ""

    run_b = None
    pod_b: dict[str, Any] = {}
    try:
        new.up()
        new.wait_ready(120)  # its standby services count as ready (their markers)
        end = time.monotonic() + 60
        while time.monotonic() < end and uid not in (cluster.agent.plugin or _NoPlugin).endpoint:
            time.sleep(0.2)
        if uid not in (cluster.agent.plugin or _NoPlugin).endpoint:
            tails = new.log_tails(1_000_000)
            pytest.fail(f"the kubelet does not use the new dra: {tails['dranet'][-80:]}")
        assert bus_instance() == old.plan.sandbox.metadata.uid  # the old pod's dra keeps the bus
        tails = new.log_tails(1_000_000)  # the whole logs: the endpoint retries its port meanwhile
        logs = "\n".join(tails["dranet"] + tails["netns"])
        assert logs.count("standing by until it exits") >= 3, logs  # discovery, nri, netns

        errors = old.down()
        old.cri.close()
        cluster.pod = new
        assert not errors, errors
        end = time.monotonic() + 60
        while time.monotonic() < end and bus_instance() != uid:
            time.sleep(0.2)
        assert bus_instance() == uid
        cluster.wait_services()
        assert run.status is not None and has_nic(run.status.netns, first, before[first.name]["address"])
        pod_b = claimed_pod(cluster, second)
        run_b = cluster.run_pod(pod_b)
        assert run_b.status is not None
        assert has_nic(run_b.status.netns, second, before[second.name]["address"])
    finally:
        bus.close()
        if pod_b:
            cluster.remove_pod(pod_b, run_b)
        cluster.remove_pod(pod, run)
        if cluster.pod is not new:  # failed before the hand-over: the old pod stays the driver
            new.down()
            new.cri.close()
    assert_home(cluster, before, first)
    assert_home(cluster, before, second)
    nics.give_back([first, second])


class _NoPlugin:
    endpoint = ""
