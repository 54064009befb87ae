"""Benchmark: ResourceSlice writes while one link flaps 100 times in 10 s.

A test network namespace with 200 veth pairs (400 devices, four slices) is scanned by the real
inventory (netlink events, coalesced) and published by the real SlicePublisher to the local API
server. After the first publish, one link goes down and up again every 100 ms (100 flaps in 10 s);
each flap changes the device's `state` attribute. Prints the slice writes (create, update, delete)
made from the first flap until the publisher settles, and how many slices each write touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dranet.services.discovery.devices import ScanOptions
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.inventory import Inventory, InventoryConfig
from dranet.services.discovery.publisher import SlicePublisher
from kubernetes import client, config
from pyroute2 import NetNS

from dranet.observability.metrics import value
from localcluster.apiserver import LocalAPIServer

N, FLAPS, PERIOD = 200, 100, 0.1


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def writes() -> dict[str, float]:
    name = "dranet_discovery_slice_writes_total"
    return {verb: value(name, verb=verb) for verb in ("create", "update", "delete")}


def main() -> int:
    if os.geteuid() != 0:
        print("bench_slice_flaps: needs root (network namespaces)")
        return 0
    ns = f"tbf-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="tbf-"))
    ip("netns", "add", ns)
    server = LocalAPIServer()
    server.start()
    try:
        batch = "\n".join(f"link add fl{i:03d} type veth peer name flp{i:03d}" for i in range(N))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        ip("-n", ns, "link", "set", "fl000", "up")
        ip("-n", ns, "link", "set", "flp000", "up")
        kc = server.write_kubeconfig(tmp / "kubeconfig")
        api = config.new_client_from_config(config_file=str(kc))
        client.CoreV1Api(api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=ns)))
        publisher = SlicePublisher(lambda: api, ns, "dra.net")
        (tmp / "sys").mkdir()
        inv = Inventory(
            InventoryConfig(
                sysfs_root=tmp / "sys",
                options=ScanOptions(filter=DeviceFilter("true")),
                netns=ns,
                coalesce=0.05,
            ),
            on_change=lambda devices, _gen: publisher.set_devices(devices),
        )
        publisher.start()
        inv.start()
        deadline = time.monotonic() + 60

        def slices() -> list[dict[str, Any]]:
            return list(
                client.ResourceV1Api(api).list_resource_slice(field_selector=f"spec.nodeName={ns}").items
            )

        while sum(len(s.spec.devices) for s in slices()) < 2 * N:
            if time.monotonic() > deadline:
                raise SystemExit("slices not published within 60 s")
            time.sleep(0.05)
        time.sleep(1.0)
        before = writes()
        with NetNS(ns) as ipr:  # one netlink socket: the flaps keep their pace on a loaded machine
            index = ipr.link_lookup(ifname="fl000")[0]
            start = time.monotonic()
            for i in range(FLAPS):
                ipr.link("set", index=index, state="down")
                time.sleep(max(0.0, start + (i + 0.5) * PERIOD - time.monotonic()))
                ipr.link("set", index=index, state="up")
                time.sleep(max(0.0, start + (i + 1) * PERIOD - time.monotonic()))
            flapping = time.monotonic() - start
        time.sleep(5.0)  # let the publisher settle
        after = writes()
        delta = {k: int(after[k] - before[k]) for k in after}
        published = slices()
        count = sum(len(s.spec.devices) for s in published)
        print(f"{FLAPS} flaps of one link in {flapping:.1f} s, {count} devices in {len(published)} slices")
        print(f"slice writes: {sum(delta.values())} ({', '.join(f'{k} {v}' for k, v in delta.items())})")
        inv.stop()
        publisher.stop()
    finally:
        server.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
