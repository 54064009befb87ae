"""Benchmark of the nri service on the real containerd 2.1 (run by `make bench`).

1. Added latency on CRI RunPodSandbox: the same kind of pod with no plugin connected, with the
   plugin and no claimed device, and with 1 and 8 claimed devices.
2. Our RunPodSandbox handler itself (lookup over the bus + attach over the bus + bookkeeping),
   and its overhead over the worker's own attach time, p50/p99, for 1 and 8 interfaces.

dra and the netns worker are stand-ins served on the real bus (ZeroMQ, msgpack, in this process);
the stand-in worker does no kernel work, so "worker" below is its handler time (~0) and the
overhead is everything else our path costs. Prints tables; asserts nothing.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from dranet.services.netns.model import netns_ident
from dranet.services.netns.nspath import DEFAULT_ROOTS, alive, netns_id
from dranet.services.nri.collaborators import BusDra, BusNetns
from dranet.services.nri.handlers import PodHandlers, PodInfo
from dranet.services.nri.plugin import NriPlugin, PluginOptions

from dranet.bus.client import BusClient
from dranet.bus.server import BusServer, RequestContext
from localcluster.containerd import Containerd
from localcluster.cri import CriClient

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def row(label: str, ms: list[float]) -> str:
    return f"{label:<44} {len(ms):>4} {pct(ms, 50):>9.2f} {pct(ms, 99):>9.2f} {statistics.mean(ms):>9.2f}"


class Stand:
    """dra and netns stand-ins on the bus; the worker records its own time per attach."""

    def __init__(self, rd: Path) -> None:
        self.devices: dict[str, list[dict[str, Any]]] = {}
        self.worker_ms: dict[str, float] = {}
        self.attached: dict[str, list[dict[str, Any]]] = {}  # pod UID -> its attachments
        self.dra = BusServer(rd, "dra", {"pod_devices": self.pod_devices})
        ops = {
            "attach": self.attach,
            "detach": self.detach,
            "list": self.list,
            "netns_alive": self.netns_alive,
        }
        self.netns = BusServer(rd, "netns", ops)
        self.dra.start()
        self.netns.start()

    def pod_devices(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"devices": self.devices.get(body["pod_uid"], [])}

    def attach(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        t = time.perf_counter()
        ident = netns_id(body["netns"])
        out = [
            {
                "pod_uid": body["pod_uid"],
                "device": d["device"],
                "pod_ifname": d["ifname"],
                "hardware_address": "",
                "ips": [],
                "state": "attached",
                "netns": body["netns"],
                "netns_id": netns_ident(ident) if ident else "",
            }
            for d in body["devices"]
        ]
        self.attached[body["pod_uid"]] = out
        self.worker_ms[body["pod_uid"]] = (time.perf_counter() - t) * 1000
        return {"attachments": out}

    def detach(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"released": [a["device"] for a in self.attached.pop(body["pod_uid"], [])]}

    def list(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"attachments": [a for pod in self.attached.values() for a in pod]}

    def netns_alive(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """As the worker answers it (nri asks at every Synchronize): the paths that open as a pod
        netns, with their identities."""
        found = alive(body["netns"], DEFAULT_ROOTS, [netns_id("/proc/self/ns/net") or (0, 0)])
        return {"alive": [{"netns": p, "id": netns_ident(i)} for p, i in found.items()]}

    def close(self) -> None:
        self.dra.stop()
        self.netns.stop()


class TimedHandlers(PodHandlers):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.handler_ms: dict[str, float] = {}

    def run_pod_sandbox(self, pod: PodInfo) -> None:
        t = time.perf_counter()
        try:
            super().run_pod_sandbox(pod)
        finally:
            self.handler_ms[pod.uid] = (time.perf_counter() - t) * 1000


def devices(n: int) -> list[dict[str, Any]]:
    return [
        {
            "device": f"eth{i}",
            "ifname": f"net{i}",
            "config": {},
            "claim_uid": "c",
            "claim_namespace": "d",
            "claim_name": "c",
            "request": "r",
            "pool": "p",
        }
        for i in range(n)
    ]


def cycle(cri: CriClient, stand: Stand, n_devices: int | None, count: int) -> tuple[list[float], list[str]]:
    """`count` pods: run (timed), stop, remove. n_devices None = no claim."""
    times, uids = [], []
    for _ in range(count):
        uid = str(uuid.uuid4())
        if n_devices:
            stand.devices[uid] = devices(n_devices)
        t = time.perf_counter()
        sid = cri.run_pod_sandbox(f"bench-{uid[:8]}", uid=uid)
        times.append((time.perf_counter() - t) * 1000)
        uids.append(uid)
        cri.stop_pod_sandbox(sid)
        cri.remove_pod_sandbox(sid)
    return times, uids


def main() -> int:
    ctrd = Containerd(f"/tmp/tnr-bench-{uuid.uuid4().hex[:6]}", bridge="dranetbench0")
    ctrd.up()
    rd = Path(tempfile.mkdtemp(prefix="tnr-bus-"))
    stand = Stand(rd)
    cri = CriClient(str(ctrd.cri_socket))
    dra_c, netns_c = BusClient(rd, "dra"), BusClient(rd, "netns")
    handlers = TimedHandlers(BusDra(dra_c), BusNetns(netns_c))
    plugin = NriPlugin(handlers, PluginOptions(socket_path=str(ctrd.nri_socket)))
    try:
        cycle(cri, stand, None, 3)  # warm up containerd
        base, _ = cycle(cri, stand, None, N)
        plugin.start()
        assert plugin.synchronized.wait(30)
        cycle(cri, stand, 1, 3)  # warm up our path
        noclaim, _ = cycle(cri, stand, None, N)
        one, uids1 = cycle(cri, stand, 1, N)
        eight, uids8 = cycle(cri, stand, 8, N)
        print(f"containerd {plugin.runtime_version}; {N} pods per row; times in ms\n")
        print(f"{'CRI RunPodSandbox':<44} {'n':>4} {'p50':>9} {'p99':>9} {'mean':>9}")
        print(row("no plugin connected", base))
        print(row("plugin, pod without a claim", noclaim))
        print(row("plugin, 1 claimed interface", one))
        print(row("plugin, 8 claimed interfaces", eight))
        print(f"\n{'our RunPodSandbox handler':<44} {'n':>4} {'p50':>9} {'p99':>9} {'mean':>9}")
        for label, uids in (("1 interface", uids1), ("8 interfaces", uids8)):
            h = [handlers.handler_ms[u] for u in uids]
            w = [stand.worker_ms[u] for u in uids]
            print(row(f"handler, {label}", h))
            print(row(f"  worker's own attach time, {label}", w))
            print(row(f"  handler minus worker, {label}", [a - b for a, b in zip(h, w, strict=True)]))
        print(
            f"\nbudget: {handlers.request_timeout - handlers.opts.budget_margin:.2f} s of "
            f"{handlers.request_timeout:g} s"
        )
    finally:
        plugin.stop()
        handlers.close()
        cri.cleanup()
        cri.close()
        dra_c.close()
        netns_c.close()
        stand.close()
        ctrd.down()
        shutil.rmtree(rd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
