"""Many pod sandboxes through the real runtime with the driver as the DaemonSet's pod.

One pod in `claimed_every` claims a NIC (the stand-in NICs in turn) and must have it in its netns;
the others have no claim. Each pod goes (sandbox removed, claims unprepared, API objects deleted)
before the next comes, so what a service holds at the end is what it holds for no pod at all.

Used by tests/e2e/test_daemonset_longlife.py (asserts nothing grows) and
tests/bench/bench_longlife.py (2,000 pods: prints RunPodSandbox p50/p99 per kind and the services'
fds, threads and RSS at the start and the end).
"""

from __future__ import annotations

import secrets
import statistics
from dataclasses import dataclass, field

from localcluster.node import DaemonSetCluster, service_of
from tests.e2e.claims import has_nic, new_pod, simple_cfg
from tests.soak import Usage, usage

SERVICES = ("netns", "discovery", "dra", "nri")


@dataclass
class LongLife:
    cluster: DaemonSetCluster
    claimed_every: int = 10
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    pods: int = 0
    run_sandbox: dict[str, list[float]] = field(default_factory=lambda: {"no claim": [], "claimed NIC": []})
    errors: list[str] = field(default_factory=list)

    def usage(self) -> dict[str, Usage]:
        """Each service of the driver pod (found by its command line among the pod's processes)
        and the runtime itself."""
        assert self.cluster.pod is not None and self.cluster.containerd is not None
        out = {}
        for cmd, pid in self.cluster.pod.host_pids().items():
            if service_of(cmd) in SERVICES:
                out[service_of(cmd)] = usage(pid)
        missing = set(SERVICES) - set(out)
        assert not missing, f"no process for {missing} in the driver pod"
        out["containerd"] = usage(self.cluster.containerd.pid)
        return {s: out[s] for s in (*SERVICES, "containerd")}

    def drive(self, count: int) -> None:
        for _ in range(count):
            self.one()

    def one(self) -> None:
        c = self.cluster
        assert c.net is not None
        i, self.pods = self.pods, self.pods + 1
        name = f"tll{self.tag}-{i}"
        claimed = i % self.claimed_every == 0
        nic = c.net.nics[(i // self.claimed_every) % len(c.net.nics)]
        mac = c.net.snapshot()[nic.name]["address"] if claimed else ""
        pod = new_pod(c, [("nic", nic, simple_cfg(nic))]) if claimed else c.make_pod(name, {})
        run = None
        try:
            run = c.run_pod(pod)
            assert run.status is not None
            if claimed and not has_nic(run.status.netns, nic, mac):
                self.errors.append(f"{name}: {nic.name} not attached as eth1")
            self.run_sandbox["claimed NIC" if claimed else "no claim"].append(run.timings["run_pod_sandbox"])
        except Exception as exc:
            self.errors.append(f"{name}: {exc}")
        finally:
            c.remove_pod(pod, run)
            if claimed:
                c.delete("resource.k8s.io/v1", "resourceclaims", f"{name}-claim", "default")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    if len(samples) < 2:
        return (samples[0] * 1000, samples[0] * 1000) if samples else (0.0, 0.0)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples) * 1000, q[98] * 1000


def usage_table(start: dict[str, Usage], end: dict[str, Usage]) -> str:
    rows = [f"{'process':<11} {'fds':>13} {'threads':>11} {'RSS KiB':>23}"]
    for s, a in start.items():
        b = end[s]
        rows.append(
            f"{s:<11} {a.fds:>4}->{b.fds:<4} {b.fds - a.fds:+4d}"
            f" {a.threads:>3}->{b.threads:<3} {b.threads - a.threads:+4d}"
            f" {a.rss_kib:>7}->{b.rss_kib:<7} {b.rss_kib - a.rss_kib:+7d}"
        )
    return "\n".join(rows)
