"""Long life in the shipped shape (run by `make bench`): 2,000 pod sandboxes through the real
runtime, one in ten with a claimed NIC, with the driver as the DaemonSet's pod on the node
stand-in (localcluster.node, tests/longlife.py). Prints RunPodSandbox p50/p99 for pods with
and without a claim, and each service's (and containerd's) fds, threads and RSS at the start and
the end. Asserts nothing about time.

    bench_longlife.py [PODS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.longlife

from localcluster.node import DaemonSetCluster, kustomized_docs
from tests.longlife import LongLife, percentiles, usage_table

PODS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def main() -> int:
    if os.geteuid() != 0:
        print("skipped: the node stand-in runs containerd and network namespaces: needs root")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="tll-", dir="/tmp"))
    cluster = DaemonSetCluster(workdir, nic_count=4, log=lambda s: None)
    try:
        cluster.start()
        cluster.wait_slices(timeout=60)
        for doc in kustomized_docs():
            if doc["kind"] == "DeviceClass":
                cluster.create("resource.k8s.io/v1", "deviceclasses", doc)
        life = LongLife(cluster)
        start = life.usage()
        t = time.perf_counter()
        while life.pods < PODS:
            life.drive(min(200, PODS - life.pods))
            print(f"  {life.pods} pods, {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - t
        end = life.usage()
        every = life.claimed_every
        print(f"{life.pods} pod sandboxes in {elapsed:.0f} s, one in {every} with a claimed NIC\n")
        print(f"{'RunPodSandbox':<14} {'pods':>5} {'p50 ms':>8} {'p99 ms':>8}")
        for kind, samples in life.run_sandbox.items():
            p50, p99 = percentiles(samples)
            print(f"{kind:<14} {len(samples):>5} {p50:>8.1f} {p99:>8.1f}")
        print("\nat the start (no pod yet) and after the last pod:")
        print(usage_table(start, end))
        print(f"\nfailed pods: {len(life.errors)} of {life.pods}")
        for e in life.errors[:20]:
            print(f"  {e}")
    finally:
        errors = cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for e in errors:
            print(f"teardown: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
