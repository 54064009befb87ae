"""The whole pod start path, measured in one run on the same machine state (run by `make bench`).

Real services: containerd 2.1 with NRI, the local API server, stand-in NICs (veth pairs) and the
four services under `dranet run`, driven by the local allocator and node agent (DRA gRPC, CRI).

(a) raw kernel cost: bench_netns's raw netlink round (down, move + rename + MTU, address, up) for
    1 and 8 veths, in private namespaces of a Testbed;
(b) CRI RunPodSandbox wall time for a pod without a claim and with 1 and 8 claimed interfaces
    (each pod removed through the node agent before the next, and its NICs back on the node);
(c) per pod, from the one Prometheus endpoint (`dranet run --metrics-address`): the nri
    RunPodSandbox handler (dranet_nri_handler_duration_seconds), the dra lookup it makes and the
    netns worker's attach (dranet_bus_request_duration_seconds for dra/pod_devices and
    netns/attach), and the worker's per-device part (dranet_netns_attach_device_seconds: snapshot,
    move, configure of one device) against the rest of its attach, and that attach phase by phase
    (dranet_netns_attach_phase_seconds: check, open, plan, journal, devices, commit, notify). A
    pod's own value is the change of the histogram's _sum across that pod (its _count must move by
    exactly one, or by the device count), so these are exact per-pod times, not bucket estimates.

(a) and the three kinds of pods are interleaved, so slow phases of the machine hit every row alike.
Prints a table and the ratios; asserts nothing about time. Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from dranet.services.netns.netlink import Rtnl
from dranet.services.netns.testbed import Testbed

from localcluster.claims import Request, by_ifname, device_class, resource_claim

PODS = 40
WARMUP = 3
DEVICE_CLASS = "dranet-bench"
Series = tuple[str, frozenset[tuple[str, str]]]

# What to read per pod: (row key, metric name without _sum/_count, labels a series must carry).
WATCH: dict[str, tuple[str, dict[str, str]]] = {
    "handler": ("dranet_nri_handler_duration_seconds", {"event": "run_pod_sandbox"}),
    "lookup": ("dranet_bus_request_duration_seconds", {"service": "dra", "op": "pod_devices"}),
    "attach": ("dranet_bus_request_duration_seconds", {"service": "netns", "op": "attach"}),
    "devices": ("dranet_netns_attach_device_seconds", {"outcome": "ok"}),
}
# The worker's attach, phase by phase (dranet_netns_attach_phase_seconds): where its time goes.
ATTACH_PHASES = ("check", "open", "plan", "journal", "devices", "commit", "notify")
WATCH.update({f"phase:{p}": ("dranet_netns_attach_phase_seconds", {"phase": p}) for p in ATTACH_PHASES})


def bench_netns() -> ModuleType:
    """The raw-kernel helpers of bench_netns.py (a sibling script, not a package)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("bench_netns")


# ------------------------------------------------------------------ metrics


_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[Series, float]:
    out: dict[Series, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(samples: dict[Series, float], name: str, want: dict[str, str]) -> float:
    """Sum of the series of `name` whose labels include `want` (e.g. every outcome)."""
    items = set(want.items())
    return sum(v for (n, labels), v in samples.items() if n == name and items <= labels)


@dataclass
class Probe:
    """The /metrics endpoint of `dranet run`; one reading = (sum, count) per WATCH key."""

    urls: list[str]

    def read(self) -> dict[str, tuple[float, float]]:
        samples: dict[Series, float] = {}
        for url in self.urls:
            with urllib.request.urlopen(url, timeout=5) as r:
                samples.update(parse_metrics(r.read().decode()))
        return {
            key: (total(samples, f"{name}_sum", want), total(samples, f"{name}_count", want))
            for key, (name, want) in WATCH.items()
        }

    def per_pod(
        self, before: dict[str, tuple[float, float]], expect: dict[str, int], timeout: float = 2.0
    ) -> dict[str, float] | None:
        """Seconds each watched step took for the one pod since `before`; None when a count moved
        by other than `expect` (a retry, a late attach): that pod has no clean per-step time."""
        deadline = time.monotonic() + timeout
        while True:
            after = self.read()
            counts = {k: after[k][1] - before[k][1] for k in WATCH}
            if all(counts[k] == expect.get(k, 0) for k in WATCH):
                return {k: after[k][0] - before[k][0] for k in WATCH if expect.get(k)}
            # The reply may reach us a moment before the server records it: look again briefly.
            if time.monotonic() > deadline or any(counts[k] > expect.get(k, 0) for k in WATCH):
                return None
            time.sleep(0.01)


# ------------------------------------------------------------------ pods through the real path


@dataclass
class Samples:
    raw: dict[int, list[float]] = field(default_factory=lambda: {1: [], 8: []})
    cri: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 8: []})
    steps: dict[int, dict[str, list[float]]] = field(
        default_factory=lambda: {n: {k: [] for k in WATCH} for n in (0, 1, 8)}
    )
    unclean: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0, 8: 0})
    failed: dict[int, list[str]] = field(default_factory=lambda: {0: [], 1: [], 8: []})


def claim_body(name: str, nics: list[Any]) -> dict[str, Any]:
    """One request per NIC, selected by name; each configured like the raw round (name, MTU, address)."""
    requests = [
        Request(
            f"r{k}",
            [by_ifname(nic.name)],
            device_class=DEVICE_CLASS,
            config={"interface": {"name": f"net{k}", "mtu": 1400, "addresses": [nic.pod_address()]}},
        )
        for k, nic in enumerate(nics)
    ]
    return resource_claim(name, requests)


def wait_home(names: list[str], inventory: Callable[[], dict[str, str]], timeout: float = 15.0) -> None:
    """Until every NIC is back in this (the node's) netns and discovery's inventory says so again.

    Why the second part: while a NIC is in a pod, discovery keeps its device with no host interface
    (ifname ""), and a claim prepared before discovery sees the NIC return gets that empty name."""
    deadline = time.monotonic() + timeout
    missing = names
    while True:
        missing = [n for n in missing if not _has_link(n)]
        if not missing:
            known = inventory()
            missing = [n for n in names if known.get(n) != n]
            if not missing:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"NICs {missing} not back on the node (netns and discovery's inventory) within {timeout:.0f}s"
            )
        time.sleep(0.01)


def _has_link(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


@dataclass
class PodResult:
    cri: float = 0.0  # RunPodSandbox seconds
    steps: dict[str, float] | None = None  # WATCH key -> seconds; None without a clean reading
    error: str = ""  # the pod did not start: why


class PodBench:
    def __init__(self, cluster: Any, probe: Probe) -> None:
        from dranet.bus import BusClient

        self.cluster = cluster
        self.probe = probe
        self.n = 0
        self.discovery = BusClient(cluster.runtime_dir, "discovery", timeout=5.0)

    def inventory(self) -> dict[str, str]:
        """discovery's devices: name -> host interface name ("" while in a pod)."""
        body = self.discovery.call("get_inventory")
        return {d["name"]: d["ifname"] for d in body["devices"]}

    def close(self) -> None:
        self.discovery.close()

    def one(self, count: int) -> PodResult:
        """Start one pod with `count` claimed NICs (0: no claim), time it, remove it; NICs back home."""
        from localcluster.nodeagent import NodeAgentError

        c = self.cluster
        self.n += 1
        nics = c.net.nics[:count]
        claim = f"bench-claim-{self.n}"
        if nics:
            c.create("resource.k8s.io/v1", "resourceclaims", claim_body(claim, nics), "default")
        pod = c.make_pod(f"bench-pod-{self.n}", {"net": claim} if nics else {})
        before = self.probe.read()
        run = None
        try:
            run = c.run_pod(pod)
            expect = {"handler": 1, "lookup": 1, "attach": 1 if nics else 0, "devices": len(nics)}
            expect |= {f"phase:{p}": 1 if nics else 0 for p in ATTACH_PHASES}
            return PodResult(run.timings["run_pod_sandbox"], self.probe.per_pod(before, expect))
        except NodeAgentError as exc:
            run = getattr(exc, "run", None)  # as far as it got: removing it unprepares the claims
            return PodResult(error=f"{type(exc).__name__}: {exc}")
        finally:
            c.remove_pod(pod, run)
            if nics:
                c.delete("resource.k8s.io/v1", "resourceclaims", claim, "default")
            wait_home([n.name for n in nics], self.inventory)


# ------------------------------------------------------------------ report


def pct(values: list[float], p: float) -> float:
    return float(bench_netns().pct(values, p))


def ms(values: list[float], p: float) -> str:
    return f"{pct(values, p) * 1e3:9.2f}" if values else f"{'-':>9}"


def row(label: str, values: list[float]) -> str:
    mean = f"{statistics.mean(values) * 1e3:9.2f}" if values else f"{'-':>9}"
    return f"{label:<48} {len(values):>4} {ms(values, 0.5)} {ms(values, 0.99)} {mean}"


def report(s: Samples, pods: int, runtime: str) -> None:
    print(f"pod start path, {pods} pods per row, kernel {os.uname().release}, runtime {runtime}; ms\n")
    print(f"{'':<48} {'n':>4} {'p50':>9} {'p99':>9} {'mean':>9}")
    print(row("(a) raw kernel: move+configure 1 veth", s.raw[1]))
    print(row("(a) raw kernel: move+configure 8 veths", s.raw[8]))
    print(row("(b) CRI RunPodSandbox, no claim", s.cri[0]))
    print(row("(b) CRI RunPodSandbox, 1 interface", s.cri[1]))
    print(row("(b) CRI RunPodSandbox, 8 interfaces", s.cri[8]))
    print(row("(c) nri handler, no claim (dra lookup only)", s.steps[0]["handler"]))
    for n in (1, 8):
        st = s.steps[n]
        label = "1 interface" if n == 1 else "8 interfaces"
        print(row(f"(c) nri handler, {label}", st["handler"]))
        print(row("      dra pod_devices (server side)", st["lookup"]))
        print(row("      netns worker attach (server side)", st["attach"]))
        print(row("        of which per-device work (sum)", st["devices"]))
        print(row("        attach minus per-device work", _minus(st["attach"], st["devices"])))
        for p in ATTACH_PHASES:
            print(row(f"          phase {p}", st[f"phase:{p}"]))
        print(row("      handler minus attach (same pod)", _minus(st["handler"], st["attach"])))
    for n, errors in s.failed.items():
        if errors:
            print(f"\npods with {n} interface(s) that did not start: {len(errors)}; first: {errors[0]}")
    if any(s.unclean.values()):
        print(f"\npods without a clean per-pod metric reading (retries, late attaches): {s.unclean}")

    print("\nratios")
    for n in (1, 8):
        h, r = s.steps[n]["handler"], s.raw[n]
        if h and r:
            print(
                f"  nri handler / raw kernel, {n} if: p50 {pct(h, 0.5) / pct(r, 0.5):5.2f}x  "
                f"p99 {pct(h, 0.99) / pct(r, 0.99):5.2f}x   "
                f"(handler - raw: p50 {(pct(h, 0.5) - pct(r, 0.5)) * 1e3:+.2f} ms, "
                f"p99 {(pct(h, 0.99) - pct(r, 0.99)) * 1e3:+.2f} ms)"
            )
    for n in (1, 8):
        c, base = s.cri[n], s.cri[0]
        if c and base:
            print(
                f"  CRI added vs no-claim pods, {n} if: "
                + "  ".join(
                    f"{name} {(pct(c, p) - pct(base, p)) * 1e3:+.2f} ms ({pct(c, p) / pct(base, p):.2f}x)"
                    for name, p in (("p50", 0.5), ("p99", 0.99))
                )
            )

    print("\ndesign targets")
    h1, r1 = s.steps[1]["handler"], s.raw[1]
    if h1 and r1:
        limit = pct(r1, 0.99) + 0.005
        verdict = "met" if pct(h1, 0.99) <= limit else "MISSED"
        print(
            f"  1 interface, nri RunPodSandbox p99 {pct(h1, 0.99) * 1e3:.2f} ms vs raw p99 + 5 ms = "
            f"{limit * 1e3:.2f} ms: {verdict}"
        )
        gap = pct(h1, 0.5) - pct(r1, 0.5)
        print(
            f"  1 interface, at p50: nri RunPodSandbox {pct(h1, 0.5) * 1e3:.2f} ms = raw p50 "
            f"{gap * 1e3:+.2f} ms ({'within' if gap <= 0.005 else 'OVER'} the 5 ms); "
            f"p99 of {len(h1)} samples is the slowest one, so noisy"
        )
    c1, c0 = s.cri[1], s.cri[0]
    if c1 and c0 and r1:
        added = pct(c1, 0.99) - pct(c0, 0.99)
        verdict = "met" if added <= pct(r1, 0.99) + 0.005 else "MISSED"
        print(
            f"  1 interface, CRI p99 added over no-claim {added * 1e3:.2f} ms vs raw p99 + 5 ms = "
            f"{(pct(r1, 0.99) + 0.005) * 1e3:.2f} ms: {verdict}"
        )
    h8, c8 = s.steps[8]["handler"], s.cri[8]
    if h8 and c8:
        print(
            f"  8 interfaces, nri RunPodSandbox p99 {pct(h8, 0.99) * 1e3:.2f} ms, CRI p99 "
            f"{pct(c8, 0.99) * 1e3:.2f} ms, vs the runtime's 2 s: "
            f"{'well inside' if pct(h8, 0.99) < 1.0 else 'TOO CLOSE'} (handler under half the budget)"
        )


def _minus(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


# ------------------------------------------------------------------ set-up and the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def raw_bed(count: int, prefix: str) -> Iterator[tuple[Testbed, Rtnl, int, list[str]]]:
    """A Testbed whose node netns holds `count` veth NICs, and a netlink socket in that netns."""
    tb = Testbed(prefix)
    host: Rtnl | None = None
    host_fd = -1
    try:
        nics = [tb.add_nic(f"tprb{k}", addresses=(f"10.{k}.0.2/24",)) for k in range(count)]
        host_fd = os.open(tb.node_path, os.O_RDONLY)
        host = Rtnl.open(host_fd)
        yield tb, host, host_fd, nics
    finally:
        if host is not None:
            host.close()
        if host_fd >= 0:
            os.close(host_fd)
        tb.close()


def raw_sample(bed: tuple[Testbed, Rtnl, int, list[str]], count: int, i: int) -> float:
    tb, host, host_fd, nics = bed
    pod_ns = tb.add_netns()
    try:
        attach, _ = bench_netns().raw_round(tb, host, host_fd, pod_ns, nics[:count], i)
    finally:
        tb.del_netns(pod_ns)
    return float(attach)


def run(pods: int, log: Callable[[str], None]) -> int:
    from localcluster.containerd import Containerd, PackagesUnavailable
    from localcluster.demo import Cluster

    tag = secrets.token_hex(2)
    workdir = Path(tempfile.mkdtemp(prefix=f"tps-{tag}-", dir="/tmp"))
    ctrd = Containerd(workdir / "ctrd", bridge=f"tps{tag}br", subnet="10.226.0.0/24")
    port = free_port()
    cluster = Cluster(
        workdir,
        nic_count=8,
        prefix=f"tps{tag}",
        containerd=ctrd,
        log=log,
        metrics_address=f"127.0.0.1:{port}",
    )
    errors: list[str] = []
    bench: PodBench | None = None
    t_start = time.monotonic()
    try:
        log("starting containerd ...")
        try:
            ctrd.up()
        except PackagesUnavailable as exc:
            print(f"bench_pod_start: containerd's Debian packages are unavailable ({exc}); skipped")
            return 0
        cluster.start()
        cluster.wait_slices()
        cluster.create("resource.k8s.io/v1", "deviceclasses", device_class(DEVICE_CLASS))
        probe = Probe([f"http://127.0.0.1:{port}/metrics"])
        bench = PodBench(cluster, probe)
        s = Samples()
        with raw_bed(8, f"tps{tag}") as bed:
            log(f"set up in {time.monotonic() - t_start:.0f}s; warming up ...")
            for n in (0, 1, 8) * WARMUP:
                bench.one(n)
            for n in (1, 8):
                raw_sample(bed, n, 0)
            log(f"measuring {pods} rounds ...")
            for i in range(pods):
                # Rotate the order each round: whatever runs right after a pod removal or a netns
                # deletion pays for the kernel's asynchronous cleanup; spread that over every row.
                kinds: list[tuple[str, int]] = [("raw", 1), ("raw", 8), ("pod", 0), ("pod", 1), ("pod", 8)]
                k = i % len(kinds)
                for kind, n in kinds[k:] + kinds[:k]:
                    if kind == "raw":
                        s.raw[n].append(raw_sample(bed, n, i))
                        continue
                    r = bench.one(n)
                    if r.error:
                        s.failed[n].append(r.error)
                        continue
                    s.cri[n].append(r.cri)
                    if r.steps is None:
                        s.unclean[n] += 1
                        continue
                    for key, v in r.steps.items():
                        s.steps[n][key].append(v)
        assert cluster.agent is not None
        version = cluster.agent.cri.version()
        report(s, pods, f"{version.get('runtime_name', '')} {version.get('runtime_version', '')}".strip())
    finally:
        # Nothing may stop the cleanup half-way: no Ctrl-C, no SIGTERM until it is done.
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        if bench is not None:
            bench.close()
        if cluster.agent is not None:  # the bench's containerd: pods left by an interruption go
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
        leftovers = [f"netns {n}" for n in _listdir("/run/netns") if n.startswith(f"tps{tag}")]
        leftovers += [f"link {n}" for n in _listdir("/sys/class/net") if n.startswith(f"tps{tag}")]
        print(
            f"\ncleanup: {'everything removed' if not errors and not leftovers else errors + leftovers}; "
            f"total {time.monotonic() - t_start:.0f}s"
        )
    return 0


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=PODS, help="pods per row (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_pod_start: needs root (containerd, network namespaces); skipped")
        return 0
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            print(f"bench_pod_start: `{tool}` is missing; skipped")
            return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up like Ctrl-C
    try:
        return run(
            max(args.pods, 1), (lambda _: None) if args.quiet else (lambda m: print(f"  {m}", flush=True))
        )
    except KeyboardInterrupt:
        print("bench_pod_start: interrupted (cleaned up)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
