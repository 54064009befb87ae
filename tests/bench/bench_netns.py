"""Attach/detach cost: the raw kernel work beside the worker's attach over the bus, same namespaces.

(a) raw: the minimum netlink a move needs, sent directly with pyroute2's message classes on a bare
    socket: link down, one RTM_NEWLINK moving + renaming + setting the MTU, the address, link up
    (and the way back for detach). No validation, snapshot, journal or bus.
(b) worker: the `attach` / `detach` ops over the bus (validation, snapshot, journal with fsync,
    move, configure, readback).
For 1 and 8 interfaces per pod over N pods, p50/p99 per pod, and the ratio (b)/(a). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dranet.services.netns.main import handlers
from dranet.services.netns.netlink import Address, LinkChange, Rtnl
from dranet.services.netns.testbed import Testbed, ip
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusClient
from dranet.service import ServiceHost

PODS = 50


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def raw_round(
    tb: Testbed, host: Rtnl, host_fd: int, pod_ns: str, nics: list[str], i: int
) -> tuple[float, float]:
    fd = os.open(f"/run/netns/{pod_ns}", os.O_RDONLY)
    t0 = time.perf_counter()
    pod = Rtnl.open(fd)
    for k, nic in enumerate(nics):
        link = host.get_link(name=nic)
        assert link is not None
        host.set_link(link.index, LinkChange(up=False))
        host.set_link(link.index, LinkChange(netns_fd=fd, name=f"net{k}", mtu=1400))
        pl = pod.get_link(name=f"net{k}")
        assert pl is not None
        pod.add_address(pl.index, Address(f"10.{100 + k}.{i % 250}.2/24"))
        pod.set_link(pl.index, LinkChange(up=True))
    t1 = time.perf_counter()
    for k, nic in enumerate(nics):
        pl = pod.get_link(name=f"net{k}")
        assert pl is not None
        pod.set_link(pl.index, LinkChange(up=False))
        pod.set_link(pl.index, LinkChange(netns_fd=host_fd, name=nic, mtu=1500))
        link = host.get_link(name=nic)
        assert link is not None
        host.add_address(link.index, Address(f"10.{k}.0.2/24"))
        host.set_link(link.index, LinkChange(up=True))
    t2 = time.perf_counter()
    pod.close()
    os.close(fd)
    return t1 - t0, t2 - t1


def worker_round(client: BusClient, pod_ns: str, nics: list[str], i: int) -> tuple[float, float]:
    devices = [
        {
            "device": f"d-{nic}",
            "ifname": nic,
            "config": {
                "interface": {"name": f"net{k}", "mtu": 1400, "addresses": [f"10.{100 + k}.{i % 250}.2/24"]}
            },
        }
        for k, nic in enumerate(nics)
    ]
    t0 = time.perf_counter()
    client.call(
        "attach", {"pod_uid": f"pod-{i}", "netns": f"/run/netns/{pod_ns}", "devices": devices}, timeout=30
    )
    t1 = time.perf_counter()
    client.call("detach", {"pod_uid": f"pod-{i}", "devices": []}, timeout=30)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=PODS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_netns: needs root (network namespaces); skipped")
        return 0
    tb = Testbed("tnw")
    tmp = tempfile.mkdtemp(prefix="tnw-bench-")
    try:
        nics = [tb.add_nic(f"tnwb{k}", addresses=(f"10.{k}.0.2/24",)) for k in range(8)]
        ip("link", "set", "lo", "up", ns=tb.node)
        host_fd = os.open(tb.node_path, os.O_RDONLY)
        host = Rtnl.open(host_fd)
        ns = argparse.Namespace(
            runtime_dir=str(Path(tmp) / "run"), state_dir=str(Path(tmp) / "state"), log_level="warning"
        )
        svc = ServiceHost("netns", ns, drop_caps=False, install_signals=False)
        worker = NetnsWorker(ns.state_dir, host_netns=tb.node_path, publish=svc.publish)
        worker.start(watch_interval=0)
        svc.serve(handlers(worker), snapshots={"attachments": worker.queries.attachments})
        client = BusClient(ns.runtime_dir, "netns", timeout=30)
        rows = []
        for count in (1, 8):
            raw_a, raw_d, w_a, w_d = [], [], [], []
            for i in range(args.pods):
                pod = tb.add_netns()
                # Interleave (a) and (b), alternating which goes first: the kernel's asynchronous
                # cleanup of the previous pod netns slows whichever runs right after it.
                order = ("raw", "worker") if i % 2 == 0 else ("worker", "raw")
                for kind in order:
                    if kind == "raw":
                        a, d = raw_round(tb, host, host_fd, pod, nics[:count], i)
                        raw_a.append(a)
                        raw_d.append(d)
                    else:
                        a, d = worker_round(client, pod, nics[:count], i)
                        w_a.append(a)
                        w_d.append(d)
                tb.del_netns(pod)
            rows.append((count, "attach", raw_a, w_a))
            rows.append((count, "detach", raw_d, w_d))
        print(f"netns worker vs raw netlink, {args.pods} pods per row, kernel {os.uname().release}")
        print(
            f"{'ifs':>3} {'op':<7} {'raw p50':>9} {'raw p99':>9} {'worker p50':>11} {'worker p99':>11} "
            f"{'ratio p50':>9} {'ratio p99':>9}"
        )
        for count, op, raw, wk in rows:
            print(
                f"{count:>3} {op:<7} {pct(raw, 0.5) * 1e3:8.2f}ms {pct(raw, 0.99) * 1e3:8.2f}ms "
                f"{pct(wk, 0.5) * 1e3:10.2f}ms {pct(wk, 0.99) * 1e3:10.2f}ms "
                f"{pct(wk, 0.5) / pct(raw, 0.5):9.2f} {pct(wk, 0.99) / pct(raw, 0.99):9.2f}"
            )
        client.close()
        svc.close()
        worker.close()
        host.close()
        os.close(host_fd)
    finally:
        tb.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
