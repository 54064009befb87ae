"""10 pods on one shared NIC against 10 pods on 10 exclusive NICs (run by `make bench`).

Real services, as bench_pod_start.py: containerd 2.1 with NRI, the local API server and allocator,
stand-in NICs (veth pairs) and the four services under `dranet run`, driven through DRA gRPC and
CRI by the node agent. Discovery shares the first NIC (--shared-filter, --shared-interfaces 10):
each of its pods gets a macvlan child of it (a share, KEP-5075); the exclusive pods each get a
whole NIC moved into their netns. A round starts 10 pods one after the other (allocate, prepare,
RunPodSandbox with the attach) and times the whole, then removes them; the two kinds alternate.
Prints the time to start 10 pods and the per-pod RunPodSandbox; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from localcluster.claims import Request, by_ifname, device_class, resource_claim

ROUNDS = 5
PODS = 10
DEVICE_CLASS = "dranet-bench"


def sibling(name: str) -> ModuleType:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module(name)


def claim_body(name: str, ifname: str, address: str) -> dict[str, Any]:
    cfg = {"interface": {"name": "net0", "addresses": [address]}}
    return resource_claim(name, [Request("nic", [by_ifname(ifname)], device_class=DEVICE_CLASS, config=cfg)])


class Round:
    """Start PODS pods (shared: on the first NIC; else one NIC each), time it, remove them."""

    def __init__(self, cluster: Any, bench: Any) -> None:
        self.cluster = cluster
        self.bench = bench
        self.n = 0

    def run(self, shared: bool) -> tuple[float, list[float]]:
        c = self.cluster
        nics = c.net.nics
        started: list[tuple[dict[str, Any], Any, str]] = []
        per_pod: list[float] = []
        try:
            began = time.monotonic()
            for k in range(PODS):
                self.n += 1
                nic = nics[0] if shared else nics[1 + k]
                address = nic.pod_address(10 + k) if shared else nic.pod_address()
                claim = f"shb-claim-{self.n}"
                body = claim_body(claim, nic.name, address)
                c.create("resource.k8s.io/v1", "resourceclaims", body, "default")
                pod = c.make_pod(f"shb-pod-{self.n}", {"net": claim})
                run = c.run_pod(pod)
                started.append((pod, run, claim))
                per_pod.append(run.timings["run_pod_sandbox"])
            total = time.monotonic() - began
            if self.n <= 2 * PODS:  # the first round of each kind: every pod has its own net0
                from localcluster.demo import addresses, links_in

                seen = set()
                for _pod, run, _claim in started:
                    net0 = links_in(run.status.netns)["net0"]
                    seen.add((tuple(addresses(net0)), net0["address"]))
                assert len(seen) == PODS, f"pods share an address or MAC: {seen}"
            return total, per_pod
        finally:
            for pod, run, claim in started:
                c.remove_pod(pod, run)
                c.delete("resource.k8s.io/v1", "resourceclaims", claim, "default")
            if not shared:
                sibling("bench_pod_start").wait_home(
                    [n.name for n in nics[1 : 1 + PODS]], self.bench.inventory
                )


def ms(values: list[float], p: float) -> str:
    return f"{sibling('bench_netns').pct(values, p) * 1e3:9.1f}" if values else f"{'-':>9}"


def row(label: str, values: list[float]) -> str:
    mean = f"{statistics.mean(values) * 1e3:9.1f}" if values else f"{'-':>9}"
    return f"{label:<46} {len(values):>4} {ms(values, 0.5)} {ms(values, 0.99)} {mean}"


def run(rounds: int, log: Any) -> int:
    from localcluster.containerd import Containerd, PackagesUnavailable
    from localcluster.demo import Cluster

    tag = secrets.token_hex(2)
    prefix = f"tsh{tag}"
    workdir = Path(tempfile.mkdtemp(prefix=f"tsh-{tag}-", dir="/tmp"))
    ctrd = Containerd(workdir / "ctrd", bridge=f"tsh{tag}br", subnet="10.227.0.0/24")
    shared_filter = f'attributes["dra.net/ifName"].StringValue == "{prefix}0"'
    cluster = Cluster(
        workdir,
        nic_count=1 + PODS,
        prefix=prefix,
        containerd=ctrd,
        log=log,
        extra_args={"discovery": ["--shared-filter", shared_filter, "--shared-interfaces", str(PODS)]},
    )
    bench: Any = None
    errors: list[str] = []
    t_start = time.monotonic()
    try:
        try:
            ctrd.up()
        except PackagesUnavailable as exc:
            print(f"bench_shared_nic: containerd's Debian packages are unavailable ({exc}); skipped")
            return 0
        cluster.start()
        cluster.wait_slices()
        cluster.create("resource.k8s.io/v1", "deviceclasses", device_class(DEVICE_CLASS))
        pod_start = sibling("bench_pod_start")
        bench = pod_start.PodBench(cluster, pod_start.Probe([]))
        r = Round(cluster, bench)
        log(f"set up in {time.monotonic() - t_start:.0f}s; {rounds} rounds of {PODS} pods each kind ...")
        totals: dict[bool, list[float]] = {True: [], False: []}
        pods: dict[bool, list[float]] = {True: [], False: []}
        for i in range(rounds):
            for shared in (True, False) if i % 2 == 0 else (False, True):
                total, per_pod = r.run(shared)
                totals[shared].append(total)
                pods[shared].extend(per_pod)
        print(f"\n10 pods on one shared NIC vs on 10 exclusive NICs, kernel {os.uname().release}; ms\n")
        print(f"{'':<46} {'n':>4} {'p50':>9} {'p99':>9} {'mean':>9}")
        print(row(f"{PODS} pods, one shared NIC (macvlan children)", totals[True]))
        print(row(f"{PODS} pods, {PODS} exclusive NICs (moved)", totals[False]))
        print(row("  per pod RunPodSandbox, shared NIC", pods[True]))
        print(row("  per pod RunPodSandbox, exclusive NIC", pods[False]))
    finally:
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        if bench is not None:
            bench.close()
        if cluster.agent is not None:
            try:
                errors += cluster.agent.cri.cleanup()
            except Exception as exc:
                errors.append(f"pods: {exc}")
        errors += cluster.stop()
        try:
            ctrd.down()
        except Exception as exc:
            errors.append(f"containerd down: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        leftovers = [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(prefix)]
        print(f"\ncleanup: {'everything removed' if not errors and not leftovers else errors + leftovers}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="rounds of each kind (default %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_shared_nic: needs root (containerd, network namespaces); skipped")
        return 0
    try:
        return run(
            max(args.rounds, 1), (lambda _: None) if args.quiet else (lambda m: print(f"  {m}", flush=True))
        )
    except KeyboardInterrupt:
        print("bench_shared_nic: interrupted (cleaned up)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
