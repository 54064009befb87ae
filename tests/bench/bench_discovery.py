"""Benchmark: discovery and publication of 1,000 veth interfaces in a test network namespace.

Runs the real discovery service process (scanning the test netns through its --netns test flag)
against the local API server and prints: scan time, time to all slices accepted, the process's
RSS, and the latency from a link change to the updated slice. Needs root. Asserts nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dranet.services.discovery.devices import ScanOptions, build_devices
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.netlinkscan import scan
from dranet.services.discovery.sysfs import Sysfs
from kubernetes import client, config

from dranet.netlink.rtnl import open_in_netns
from localcluster.apiserver import LocalAPIServer

N = int(os.environ.get("BENCH_DISCOVERY_LINKS", "1000"))
CHANGES = 10


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    if os.geteuid() != 0:
        print("bench_discovery: needs root (network namespaces)")
        return 0
    ns = f"tdi-bench-{secrets.token_hex(3)}"
    wire = ns + "w"
    tmp = Path(tempfile.mkdtemp(prefix="tdi-bench-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "add", wire], check=True)
    server = LocalAPIServer()
    proc = None
    rows: list[tuple[str, str]] = []
    try:
        batch = tmp / "links.batch"
        batch.write_text(
            "".join(f"link add v{i} netns {ns} type veth peer name p{i} netns {wire}\n" for i in range(N))
        )
        t = time.perf_counter()
        subprocess.run(["ip", "-batch", str(batch)], check=True)
        rows.append(
            (f"create {N} veth pairs (kernel, not ours)", f"{(time.perf_counter() - t) * 1000:.0f} ms")
        )
        (tmp / "sys").mkdir()

        # In-process scan timings (netlink dump + device assembly), median of 5.
        sock = open_in_netns(ns)
        opts = ScanOptions(filter=DeviceFilter("true"))
        sysfs = Sysfs(tmp / "sys")
        cold, warm = [], []
        for _ in range(5):
            cache: dict[Any, Any] = {}
            t = time.perf_counter()
            devices = build_devices(scan(sock), sysfs, opts, cache)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_devices(scan(sock), sysfs, opts, cache)
            warm.append(time.perf_counter() - t)
        sock.close()
        rows.append(
            (f"full scan, {len(devices)} devices (median of 5)", f"{statistics.median(cold) * 1000:.1f} ms")
        )
        rows.append(
            ("rescan with warm sysfs cache (median of 5)", f"{statistics.median(warm) * 1000:.1f} ms")
        )

        server.start()
        kc = server.write_kubeconfig(tmp / "kubeconfig")
        api = config.new_client_from_config(config_file=str(kc))
        client.CoreV1Api(api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=ns)))
        res = client.ResourceV1Api(api)

        def slices() -> list[dict[str, Any]]:
            raw: Any = res.list_resource_slice(field_selector=f"spec.nodeName={ns}", _preload_content=False)
            return list(json.loads(raw.data)["items"])

        def published() -> int:
            return sum(len(o["spec"]["devices"]) for o in slices())

        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dranet.cli",
                "discovery",
                "--runtime-dir",
                str(tmp / "run"),
                "--state-dir",
                str(tmp / "state"),
                "--node-name",
                ns,
                "--kubeconfig",
                str(kc),
                "--sysfs-root",
                str(tmp / "sys"),
                "--filter",
                "true",
                "--netns",
                ns,
                "--publish-without-plugin",  # no dra and no kubelet here
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "discovery.log", "wb"),
        )
        while published() < N:
            if time.perf_counter() - t0 > 60:
                raise SystemExit("slices not published within 60 s; see " + str(tmp / "discovery.log"))
            time.sleep(0.005)
        t_all = time.perf_counter() - t0
        log = [json.loads(x) for x in (tmp / "discovery.log").read_text().splitlines() if x.startswith("{")]
        serving = next(e for e in log if e.get("msg") == "serving")
        first_scan = next(e for e in log if e.get("msg") == "inventory changed")
        published_ev = next(e for e in log if e.get("msg") == "ResourceSlices published")

        def ts(e: dict[str, Any]) -> float:
            return time.mktime(time.strptime(e["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + float(e["ts"][19:-1])

        rows.append(("service: first scan inside the service", f"{first_scan['scan_ms']:.1f} ms"))
        rows.append(
            (
                "service: serving -> all slices written (log)",
                f"{(ts(published_ev) - ts(serving)) * 1000:.0f} ms",
            )
        )
        rows.append(("process start -> all slices accepted (incl. Python start)", f"{t_all * 1000:.0f} ms"))
        rows.append(("slices / devices published", f"{len(slices())} / {published()}"))
        time.sleep(0.5)
        rows.append(("discovery RSS after publishing", f"{rss_mib(proc.pid):.1f} MiB"))

        # Link change -> updated slice: change v<i>'s MTU and wait until the API shows it.
        lat = []
        for k in range(CHANGES):
            name, mtu = f"v{k * 97 % N}", 1400 - k
            t = time.perf_counter()
            subprocess.run(["ip", "-n", ns, "link", "set", name, "mtu", str(mtu)], check=True)
            while True:
                found = [d for o in slices() for d in o["spec"]["devices"] if d["name"] == name]
                if found and found[0]["attributes"]["dra.net/mtu"] == {"int": mtu}:
                    break
                if time.perf_counter() - t > 10:
                    raise SystemExit(f"change of {name} not published within 10 s")
                time.sleep(0.002)
            lat.append(time.perf_counter() - t)
        rows.append(
            (f"link change -> slice updated, median of {CHANGES}", f"{statistics.median(lat) * 1000:.0f} ms")
        )
        rows.append((f"link change -> slice updated, max of {CHANGES}", f"{max(lat) * 1000:.0f} ms"))
        rows.append(("discovery RSS at the end", f"{rss_mib(proc.pid):.1f} MiB"))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        server.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", wire], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"discovery benchmark ({N} veth in a test netns, coalescing window 50 ms)")
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
