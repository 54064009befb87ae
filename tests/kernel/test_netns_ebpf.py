"""eBPF on the real kernel: upstream's attributes (ebpf, tcFilterNames, tcxProgramNames) and
`disableEbpfPrograms` (tc, tcx and XDP programs detached at attach, named in the attachment).

The programs are two-instruction eBPF programs loaded with bpf(2) (tests/kernel/bpfprogs.py) and
attached as upstream's e2e does: a direct-action tc filter on clsact ingress named like tc names
an object file's section, a tcx ingress program attached as `bpftool net attach` does, a tcx
egress program through a bpf_link, and an XDP program.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from bpfprogs import BPF_TCX_EGRESS, BPF_TCX_INGRESS, add_tc_filter, attach_tcx, attach_xdp, ifindex, in_netns
from dranet.services.discovery.devices import ScanOptions, build_devices
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.netlinkscan import scan
from dranet.services.discovery.sysfs import Sysfs
from dranet.services.netns import ebpf
from dranet.services.netns.main import handlers
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker
from test_discovery_kernel import wait_until
from workerproc import WorkerNode

from dranet import bpf
from dranet.bus import BusClient, BusError
from dranet.netlink.rtnl import open_in_netns

pytestmark = pytest.mark.kernel


def programs(ns: str, ifname: str) -> dict[str, list[str]]:
    """What is on the link now: tc filters, tcx programs, XDP program ids."""
    idx = ifindex(ns, ifname)
    sock = open_in_netns(f"/run/netns/{ns}")
    try:
        tc = [f.name for f in sock.bpf_filters(idx)] if idx in sock.clsact_links() else []
        xdp = [str(prog) for link in sock.links() if link.index == idx for _mode, prog in link.xdp]
    finally:
        sock.close()
    tcx = [p.name for p in in_netns(ns, lambda: bpf.tcx_programs(idx))]
    return {"tc": tc, "tcx": tcx, "xdp": xdp}


def test_ebpf_attributes_as_upstreams_e2e_reads_them(
    tb: Testbed, worker: NetnsWorker, tmp_path: Path
) -> None:
    """Upstream's "validate bpf filter attributes" and "validate tcx bpf filter attributes"."""
    tb.add_nic("tneb0")
    tb.add_nic("tnec0")
    add_tc_filter(tb.node, "tneb0", "dummy_bpf.o:[classifier]")
    attach_tcx(tb.node, "tneb0", "handle_ingress", BPF_TCX_INGRESS)
    tcx = handlers(worker)["tcx_programs"]({}, None)["links"]
    assert tcx == {"tneb0": ["handle_ingress"]}
    sock = open_in_netns(tb.node_path)
    try:
        snap = scan(sock, tcx=tcx)
    finally:
        sock.close()
    (tmp_path / "sys").mkdir()
    devices = build_devices(snap, Sysfs(tmp_path / "sys"), ScanOptions(filter=DeviceFilter("true")))
    attrs = {d.ifname: d.attributes for d in devices}
    assert attrs["tneb0"]["dra.net/ebpf"] is True
    assert attrs["tneb0"]["dra.net/tcFilterNames"] == "dummy_bpf.o:[classifier]"
    assert attrs["tneb0"]["dra.net/tcxProgramNames"] == "handle_ingress"
    assert attrs["tnec0"]["dra.net/ebpf"] is False
    assert "dra.net/tcFilterNames" not in attrs["tnec0"] and "dra.net/tcxProgramNames" not in attrs["tnec0"]


def test_tcx_read_yields_to_an_attach_in_progress(tb: Testbed, worker: NetnsWorker) -> None:
    """Discovery's tcx question waits while an attach runs (it would take the worker's GIL from the
    pod start), at most tcx_yield_max, and answers the same either way."""
    tb.add_nic("tnet0")
    attach_tcx(tb.node, "tnet0", "handle_ingress", BPF_TCX_INGRESS)
    want = {"links": {"tnet0": ["handle_ingress"]}}
    worker.queries.tcx_yield_max = 60.0
    answers: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: answers.append(worker.queries.tcx_programs()))
    with worker.queries.start_path():
        reader.start()
        reader.join(0.5)
        assert reader.is_alive() and not answers  # no answer while the attach is in progress
    reader.join(60)
    assert answers == [want]
    worker.queries.tcx_yield_max = 0.05  # an attach that does not end: the answer comes anyway
    with worker.queries.start_path():
        assert worker.queries.tcx_programs() == want


def test_disable_ebpf_programs_detaches_tc_tcx_and_xdp(tb: Testbed, worker: NetnsWorker) -> None:
    """Upstream's "validate bpf programs are removed", with XDP and a tcx bpf_link too; the
    attachment and its event name what was taken off; they are not put back at release."""
    tb.add_nic("tned0", addresses=("10.1.0.2/24",))
    add_tc_filter(tb.node, "tned0", "dummy_bpf.o:[classifier]")
    attach_tcx(tb.node, "tned0", "handle_ingress", BPF_TCX_INGRESS)
    link_fd = attach_tcx(tb.node, "tned0", "handle_egress", BPF_TCX_EGRESS, link=True)
    attach_xdp(tb.node, "tned0", "xdp_pass")
    try:
        assert programs(tb.node, "tned0")["tcx"] == ["handle_ingress", "handle_egress"]
        pod = tb.add_netns()
        cfg = {"interface": {"name": "eth1", "disableEbpfPrograms": True}}
        res = worker.attach("pod-e", f"/run/netns/{pod}", [{"device": "d", "ifname": "tned0", "config": cfg}])
        assert programs(pod, "eth1") == {"tc": [], "tcx": [], "xdp": []}
        detached = res["attachments"][0]["ebpf_detached"]
        assert detached == [
            "tc ingress dummy_bpf.o:[classifier]",
            "tcx ingress handle_ingress",
            "tcx egress handle_egress",
            "xdp xdp_pass",
        ]
        assert worker.events[-1]["ebpf_detached"] == detached  # type: ignore[attr-defined]
        worker.detach("pod-e")
        assert programs(tb.node, "tned0") == {"tc": [], "tcx": [], "xdp": []}  # as upstream
    finally:
        os.close(link_fd)


def test_xdp_held_by_a_bpf_link_is_detached(tb: Testbed) -> None:
    tb.add_nic("tnex0")
    fd = attach_xdp(tb.node, "tnex0", "xdp_link", link=True)
    try:
        from dranet.services.netns.podns import Netns

        ns = Netns.open_path(tb.node_path)
        try:
            assert ebpf.detach_all(ns, ifindex(tb.node, "tnex0")) == ["xdp xdp_link"]
        finally:
            ns.close()
        assert programs(tb.node, "tnex0")["xdp"] == []
    finally:
        os.close(fd)


def test_without_disable_tcx_and_xdp_stay_and_nothing_is_reported(tb: Testbed, worker: NetnsWorker) -> None:
    """The kernel keeps tcx and XDP programs across the move to the pod (it drops tc filters with
    the clsact qdisc); without disableEbpfPrograms the worker leaves them alone."""
    tb.add_nic("tnef0")
    add_tc_filter(tb.node, "tnef0", "dummy_bpf.o:[classifier]")
    attach_tcx(tb.node, "tnef0", "handle_ingress", BPF_TCX_INGRESS)
    pod = tb.add_netns()
    res = worker.attach("pod-f", f"/run/netns/{pod}", [{"device": "f", "ifname": "tnef0", "config": {}}])
    assert "ebpf_detached" not in res["attachments"][0]
    assert programs(pod, "tnef0")["tcx"] == ["handle_ingress"]
    worker.detach("pod-f")


def test_discovery_service_publishes_tcx_names_it_asks_the_worker_for(worker_node: WorkerNode) -> None:
    """The real processes: discovery (no capability) asks the netns worker for the tcx programs
    over the bus and publishes them beside the tc filter names it reads itself."""
    node = worker_node
    node.tb.add_nic("tnks0")
    add_tc_filter(node.tb.node, "tnks0", "dummy_bpf.o:[classifier]")
    attach_tcx(node.tb.node, "tnks0", "handle_ingress", BPF_TCX_INGRESS)
    worker = node.start("worker")
    (node.logs / "sys").mkdir()
    discovery = subprocess.Popen(
        [
            *(sys.executable, "-m", "dranet", "discovery", "--runtime-dir", node.runtime_dir),
            *("--state-dir", node.state_dir, "--node-name", "n1", "--no-publish"),
            *("--sysfs-root", str(node.logs / "sys"), "--filter", "true", "--netns", node.tb.node),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(node.logs / "discovery.log", "wb"),
    )
    client = BusClient(node.runtime_dir, "discovery", timeout=2)
    try:

        def attributes() -> dict[str, Any] | None:
            try:
                devices = client.call("get_inventory")["devices"]
            except BusError:
                return None
            found = [d["attributes"] for d in devices if d["ifname"] == "tnks0"]
            return found[0] if found and found[0].get("dra.net/tcxProgramNames") else None

        attrs = wait_until(attributes, "tcx names in discovery's inventory")
        assert attrs["dra.net/ebpf"] is True
        assert attrs["dra.net/tcFilterNames"] == "dummy_bpf.o:[classifier]"
        assert attrs["dra.net/tcxProgramNames"] == "handle_ingress"
    finally:
        client.close()
        discovery.terminate()
        discovery.wait(10)
        node.stop(worker, "worker")
