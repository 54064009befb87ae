"""A smoke of containerd 1.7 (Debian trixie's 1.7.24, NRI and CDI switched on in its config) in
every `make test`, while the suite itself runs on 2.1: the NRI plugin registers, gets a pod's netns
at RunPodSandbox, and detaches at StopPodSandbox, which on 1.7 carries no netns path (the plugin
remembers it). test_nri_runtime.py's tests on a 1.7 instance of their own. The whole e2e suite runs
on 1.7 with DRANET_CONTAINERD=1.7 (then this module skips: it would repeat itself).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from localcluster.containerd import DEFAULT_VERSION, Containerd, PackagesUnavailable
from tests.e2e.test_nri_runtime import (
    harness,
    test_late_attach_after_the_plugin_was_down,
    test_registers_and_reads_the_request_timeout,
    test_run_pod_sandbox_gets_the_pods_netns_and_stop_detaches,
)

pytestmark = [pytest.mark.e2e]
__all__ = [
    "containerd",
    "harness",
    "test_late_attach_after_the_plugin_was_down",
    "test_registers_and_reads_the_request_timeout",
    "test_run_pod_sandbox_gets_the_pods_netns_and_stop_detaches",
]


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    """Overrides the session's containerd for this module's tests (and the `cri` fixture)."""
    if DEFAULT_VERSION == "1.7":
        pytest.skip("DRANET_CONTAINERD=1.7: the whole suite runs on 1.7")
    tag = uuid.uuid4().hex[:8]
    ctrd = Containerd(f"/tmp/tnr-c17-{tag}", bridge=f"t17{tag}", subnet="10.226.0.0/24", version="1.7")
    try:
        ctrd.up()
    except PackagesUnavailable as exc:
        ctrd.down()
        pytest.skip(f"containerd 1.7's Debian packages could not be downloaded: {exc}")
    try:
        yield ctrd
    finally:
        ctrd.down()
