"""Several private containerds on one machine (parallel test sessions, the node stand-in's): taking
one down leaves the others' containers running. They share the shim binary of the package cache."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from dranet._generated import cri_pb2
from localcluster.containerd import Containerd
from localcluster.cri import CriClient

pytestmark = [pytest.mark.e2e]


def shims_of(ctrd: Containerd) -> set[int]:
    """Pids of the shims serving this containerd (their command line names its socket)."""
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if str(ctrd.cri_socket) in (p / "cmdline").read_bytes().decode(errors="replace").split("\0"):
                    out.add(int(p.name))
            except OSError:
                continue
    return out


def test_down_of_another_containerd_leaves_our_containers_running(
    containerd: Containerd, cri: CriClient
) -> None:
    sandbox = cri.run_pod_sandbox(f"survivor-{uuid.uuid4().hex[:6]}")
    container = cri.create_container(sandbox, "c")
    cri.start_container(container)
    ours = shims_of(containerd)
    assert ours, "no shim found for our containerd"
    tag = uuid.uuid4().hex[:6]
    other = Containerd(
        Path(tempfile.mkdtemp(prefix="tnr-o-", dir="/tmp")), bridge=f"tno{tag}", subnet="10.226.0.0/24"
    )
    try:
        other.up()
        other_cri = CriClient(str(other.cri_socket))
        try:
            other_sandbox = other_cri.run_pod_sandbox("other")
            other_cri.start_container(other_cri.create_container(other_sandbox, "c"))
        finally:
            other_cri.close()
    finally:
        other.down()
    assert shims_of(containerd) == ours
    assert cri.container_status(container).state == cri_pb2.CONTAINER_RUNNING
