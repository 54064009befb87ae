"""The real runtime for end-to-end tests: one private containerd 2.1 with NRI for the session.

Brought up with localcluster.containerd (Debian packages fetched once into the cache,
$DRANET_CTRD_CACHE or /var/cache/dranet-ctrd) and torn down after, whatever the outcome.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from localcluster.containerd import Containerd, PackagesUnavailable
from localcluster.cri import CriClient


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    if os.geteuid() != 0:
        pytest.skip("the e2e tests start containerd and need root")
    tag = uuid.uuid4().hex[:8]
    # a bridge of its own, so that two test sessions on one machine never tear down each other's
    ctrd = Containerd(f"/tmp/tnr-ctrd-{tag}", bridge=f"tnr{tag}")
    try:
        ctrd.up()
    except PackagesUnavailable as exc:
        ctrd.down()
        pytest.skip(f"containerd's Debian packages could not be downloaded: {exc}")
    try:
        yield ctrd
    finally:
        ctrd.down()


@pytest.fixture
def cri(containerd: Containerd) -> Iterator[CriClient]:
    client = CriClient(str(containerd.cri_socket))
    yield client
    client.cleanup()
    client.close()
