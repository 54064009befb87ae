"""NodePrepareResources latency as the kubelet sees it, and the checkpoint's write cost.

The dra service runs in-process against the local API server (one HTTP GET per new claim) and bus
stand-ins for discovery and the netns worker; the kubelet side is a gRPC client on the unix socket.
Each sample prepares a fresh claim (1 or 8 devices), then unprepares it (not timed). A repeated
prepare of an already prepared claim (the cheap, idempotent path) is measured too. Every row is
measured with the claim's CDI spec written (the default) and without (`--cdi-dir=`).
Measures and prints; asserts nothing.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import Harness, device, opaque
from dranet.services.dra.checkpoint import Checkpoint
from dranet.services.dra.model import PreparedClaim, PreparedDevice

N = 200
CONFIG = {
    "interface": {"name": "net1", "addresses": ["10.20.0.2/24"], "mtu": 1500},
    "routes": [{"destination": "10.21.0.0/16", "gateway": "10.20.0.1"}],
}


def pct(samples: list[float], p: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * p))]


def row(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<44} {len(ms):>5} {statistics.median(ms):>9.2f} {pct(ms, 0.99):>9.2f} {max(ms):>9.2f}"


def bench_prepare(h: Harness, ndev: int) -> tuple[list[float], list[float]]:
    fresh, repeat = [], []
    names = [f"eth{i}" for i in range(ndev)]
    for i in range(N):
        claim = h.cluster.create_claim(
            devices=names,
            requests=[f"r{j}" for j in range(ndev)],
            pods=[f"pod-{ndev}-{i}"],
            configs=[opaque(CONFIG, "FromClass"), opaque({"interface": {"mtu": 9000}})],
        )
        t0 = time.perf_counter()
        resp = h.kubelet.prepare(h.endpoint, [claim])
        fresh.append(time.perf_counter() - t0)
        assert resp[claim[1]][1] == "", resp
        t0 = time.perf_counter()
        h.kubelet.prepare(h.endpoint, [claim])
        repeat.append(time.perf_counter() - t0)
        h.kubelet.unprepare(h.endpoint, [claim])
    return fresh, repeat


def bench_checkpoint(nclaims: int) -> list[float]:
    dev = PreparedDevice("nic", "node", "eth1", "eth1", CONFIG)
    claims = {
        f"uid-{i}": PreparedClaim(f"uid-{i}", "ns", f"c{i}", [f"pod-{i}"], [dev]) for i in range(nclaims)
    }
    with tempfile.TemporaryDirectory(prefix="tdr-bench-") as d:
        store = Checkpoint(d)
        out = []
        for _ in range(100):
            t0 = time.perf_counter()
            store.save(claims)
            out.append(time.perf_counter() - t0)
        return out


def main() -> None:
    print(f"{'measurement (ms)':<44} {'n':>5} {'p50':>9} {'p99':>9} {'max':>9}")
    # with the CDI spec write (the default) and without it (--cdi-dir=)
    for cdi_dir, label in ((None, ""), ("", ", no CDI")):
        extra = {} if cdi_dir is None else {"cdi_dir": cdi_dir}
        h = Harness(inventory=[device(f"eth{i}") for i in range(8)], **extra)
        h.start_dra()
        logging.getLogger().setLevel(logging.ERROR)  # one log line per call would dominate the numbers
        try:
            for ndev in (1, 8):
                fresh, repeat = bench_prepare(h, ndev)
                print(row(f"NodePrepareResources, {ndev} dev, new claim{label}", fresh))
                print(row(f"NodePrepareResources, {ndev} dev, repeated{label}", repeat))
        finally:
            h.close()
    for nclaims in (1, 100, 1000):
        print(row(f"checkpoint write (fsync), {nclaims} claim(s)", bench_checkpoint(nclaims)))


if __name__ == "__main__":
    main()
