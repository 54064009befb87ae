"""Device metadata files (KEP-5304): the layout of the kubelet plugin helper (paths in the container
and on the host, the CDI spec that mounts them, the DeviceMetadata content), the network data the
attach writes in place with the next generation, and their life beside the prepared claim."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dranet.services.dra import metadata as md
from dranet.services.dra.checkpoint import Checkpoint
from dranet.services.dra.driver import ClaimRef, Driver
from dranet.services.dra.model import PreparedClaim, PreparedDevice
from dranet.services.dra.prepare import prepare_claim

from tests.unit.test_dra_prepare import DRIVER, NODE, claim_json, result

UID = "0b6f4f5e-6a43-4a7e-9a9c-1e5f2a1c0d11"
ATTRS = {
    "dra.net/ifName": {"string": "eth1"},
    "dra.net/mtu": {"int": 1500},
    "dra.net/virtual": {"bool": True},
}
CONTAINER_DIR = "/var/run/kubernetes.io/dra-device-attributes"


def dev(name: str, request: str = "nic") -> PreparedDevice:
    return PreparedDevice(request=request, pool=NODE, device=name, ifname=name, config={}, attributes=ATTRS)


def claim(*devices: PreparedDevice, pod_claim_name: str | None = None, name: str = "c") -> PreparedClaim:
    return PreparedClaim(
        uid=UID,
        namespace="ns",
        name=name,
        pod_uids=["pod-1"],
        devices=list(devices or (dev("eth1"),)),
        pod_claim_name=pod_claim_name,
    )


def files(tmp_path: Path, host: Path | None = None) -> md.MetadataFiles:
    return md.MetadataFiles(DRIVER, tmp_path / "plugin" / md.HOST_SUBDIR, tmp_path / "cdi", host)


def read(path: Path) -> dict[str, Any]:
    return md.decode_first(path.read_bytes())


# ---------------------------------------------------------------- the layout


def test_container_paths_follow_the_helper_for_claims_and_for_claims_from_templates() -> None:
    direct = claim(name="my-claim")
    assert md.container_path(DRIVER, direct, "nic") == (
        f"{CONTAINER_DIR}/resourceclaims/my-claim/nic/dra.net-metadata.json"
    )
    # a generated claim's name is not in the pod spec: the pod's name for it is
    templated = claim(name="pod-nic-x7k9p", pod_claim_name="nic")
    assert md.container_path(DRIVER, templated, "nic") == (
        f"{CONTAINER_DIR}/resourceclaimtemplates/nic/nic/dra.net-metadata.json"
    )


def test_host_file_and_cdi_spec_name_kind_device_and_mount(tmp_path: Path) -> None:
    c = claim(name="my-claim")
    assert md.host_file("/p/dra-device-metadata", c, "nic") == Path(
        "/p/dra-device-metadata/ns_my-claim/nic/metadata.json"
    )
    assert md.cdi_filename(DRIVER, UID, "nic") == f"dra.net_metadata_{UID}_nic.json"
    assert md.cdi_id(DRIVER, UID, "nic") == f"dra.net/metadata={UID}_nic"
    spec = md.cdi_spec(DRIVER, c, "nic", "/host/x/metadata.json")
    assert spec == {
        "cdiVersion": "0.5.0",
        "kind": "dra.net/metadata",
        "devices": [
            {
                "name": f"{UID}_nic",
                "containerEdits": {
                    "mounts": [
                        {
                            "hostPath": "/host/x/metadata.json",
                            "containerPath": f"{CONTAINER_DIR}/resourceclaims/my-claim/nic/"
                            "dra.net-metadata.json",
                            "options": ["ro", "bind"],
                        }
                    ]
                },
            }
        ],
    }


def test_document_at_prepare_has_the_attributes_and_no_network_data() -> None:
    c = claim(dev("eth1", "nic/fast"), dev("eth2", "nic/fast"), pod_claim_name="nic")
    doc = md.document(DRIVER, c, c.devices, generation=1)
    assert doc == {
        "kind": "DeviceMetadata",
        "apiVersion": "metadata.resource.k8s.io/v1alpha1",
        "metadata": {"name": "c", "namespace": "ns", "uid": UID, "generation": 1},
        "podClaimName": "nic",
        # the request as allocated (a firstAvailable sub-request); the path uses the top level
        "requests": [
            {
                "name": "nic/fast",
                "devices": [
                    {"driver": DRIVER, "pool": NODE, "name": "eth1", "attributes": ATTRS},
                    {"driver": DRIVER, "pool": NODE, "name": "eth2", "attributes": ATTRS},
                ],
            }
        ],
    }
    assert "podClaimName" not in md.document(DRIVER, claim(), claim().devices, generation=1)


def test_the_stream_reader_skips_versions_it_does_not_know() -> None:
    newer = {"kind": "DeviceMetadata", "apiVersion": "metadata.resource.k8s.io/v1", "requests": []}
    ours = md.document(DRIVER, claim(), claim().devices, generation=3)
    data = json.dumps(newer).encode() + b"\n" + md.encode(ours)
    assert md.decode_first(data) == ours
    with pytest.raises(ValueError):
        md.decode_first(json.dumps(newer).encode())


def test_attributes_are_the_slice_s_typed_values() -> None:
    assert md.api_attributes({"dra.net/virtual": True, "dra.net/mtu": 9000, "dra.net/ifName": "eth1"}) == {
        "dra.net/ifName": {"string": "eth1"},
        "dra.net/mtu": {"int": 9000},
        "dra.net/virtual": {"bool": True},
    }


# ---------------------------------------------------------------- the files


def test_write_one_file_and_spec_per_request_and_the_ids_go_with_each_request_s_first_device(
    tmp_path: Path,
) -> None:
    f = files(tmp_path, host=Path("/node/plugin/dra-device-metadata"))
    c = claim(dev("eth1", "a"), dev("eth2", "a"), dev("eth3", "b"))
    f.write(c)
    assert f.ids(c) == {"eth1": f"dra.net/metadata={UID}_a", "eth3": f"dra.net/metadata={UID}_b"}
    for request, names in (("a", ["eth1", "eth2"]), ("b", ["eth3"])):
        doc = read(md.host_file(f.directory, c, request))
        assert doc["metadata"]["generation"] == 1
        assert [d["name"] for d in doc["requests"][0]["devices"]] == names
        spec = json.loads(f.cdi_path(UID, request).read_text())
        # the runtime resolves the host path in its own view of the node
        assert spec["devices"][0]["containerEdits"]["mounts"][0]["hostPath"] == (
            f"/node/plugin/dra-device-metadata/ns_c/{request}/metadata.json"
        )
    assert oct(md.host_file(f.directory, c, "a").stat().st_mode & 0o777) == "0o644"


def test_attach_writes_network_data_in_place_with_the_next_generation(tmp_path: Path) -> None:
    f = files(tmp_path)
    c = claim(dev("eth1"), dev("eth2"))
    f.write(c)
    path = md.host_file(f.directory, c, "nic")
    inode = path.stat().st_ino
    attached = {
        "pod_uid": "pod-1",
        "device": "eth1",
        "claim_uid": UID,
        "state": "attached",
        "network_data": {
            "interfaceName": "net1",
            "ips": ["10.0.0.2/24"],
            "hardwareAddress": "02:00:00:00:00:01",
        },
    }
    assert md.on_attachment(f, c, attached) == 2
    doc = read(path)
    assert doc["metadata"]["generation"] == 2
    eth1, eth2 = doc["requests"][0]["devices"]
    assert eth1["networkData"] == {
        "interfaceName": "net1",
        "ips": ["10.0.0.2/24"],
        "hardwareAddress": "02:00:00:00:00:01",
    }
    assert eth1["attributes"] == ATTRS and "networkData" not in eth2
    # the container holds a bind mount of this inode: a rename would never reach it
    assert path.stat().st_ino == inode
    # the worker's snapshot after a restart repeats it: nothing new, no new generation
    snapshot = {
        "pod_uid": "pod-1",
        "device": "eth1",
        "claim_uid": UID,
        "state": "attached",
        "pod_ifname": "net1",
        "ips": ["10.0.0.2/24"],
        "hardware_address": "02:00:00:00:00:01",
    }
    assert md.on_attachment(f, c, snapshot) == 2
    # the second device's attach keeps the first one's data
    second = {**attached, "device": "eth2", "network_data": {"interfaceName": "net2", "ips": []}}
    assert md.on_attachment(f, c, second) == 3
    eth1, eth2 = read(path)["requests"][0]["devices"]
    assert eth1["networkData"]["interfaceName"] == "net1" and eth2["networkData"] == {"interfaceName": "net2"}
    # a failure changes nothing; a detach clears that device's data
    assert md.on_attachment(f, c, {**attached, "state": "failed", "error": {"code": "x"}}) is None
    assert md.on_attachment(f, c, {**attached, "state": "detached"}) == 4
    eth1, eth2 = read(path)["requests"][0]["devices"]
    assert "networkData" not in eth1 and eth2["networkData"] == {"interfaceName": "net2"}
    # not a device of this claim: untouched
    assert md.on_attachment(f, c, {**attached, "device": "eth9"}) is None
    assert md.on_attachment(f, None, attached) is None


def test_a_file_left_by_an_earlier_claim_of_the_same_name_is_replaced(tmp_path: Path) -> None:
    f = files(tmp_path)
    old = PreparedClaim("old-uid", "ns", "c", ["p"], [dev("eth1")])
    f.write(old)
    f.update(old, "eth1", {"interfaceName": "stale"})
    f.write(claim())  # same namespace and name, another UID
    doc = read(md.host_file(f.directory, claim(), "nic"))
    assert doc["metadata"]["uid"] == UID and doc["metadata"]["generation"] == 1
    assert "networkData" not in doc["requests"][0]["devices"][0]


def test_update_of_a_missing_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(md.MetadataError, match=r"metadata\.json"):
        files(tmp_path).update(claim(), "eth1", {"interfaceName": "x"})


def test_sync_keeps_network_data_rewrites_lost_specs_and_removes_only_our_stale_ones(tmp_path: Path) -> None:
    f = files(tmp_path)
    kept, gone = claim(name="kept"), PreparedClaim("gone-uid", "ns", "gone", ["p"], [dev("eth2")])
    f.write(kept)
    f.write(gone)
    f.update(kept, "eth1", {"interfaceName": "net1"})
    for p in f.cdi_dir.iterdir():
        p.unlink()  # the CDI directory is a tmpfs: emptied at reboot
    (f.cdi_dir / "gpu.example.com_metadata_x_gpu.json").write_text("{}")  # another driver's
    assert f.sync([kept]) == []
    assert sorted(p.name for p in f.cdi_dir.iterdir()) == [
        f"dra.net_metadata_{UID}_nic.json",
        "gpu.example.com_metadata_x_gpu.json",
    ]
    assert sorted(os.listdir(f.directory)) == ["ns_kept"]
    doc = read(md.host_file(f.directory, kept, "nic"))
    assert doc["metadata"]["generation"] == 2 and doc["requests"][0]["devices"][0]["networkData"]


# ---------------------------------------------------------------- with the driver


def test_prepare_records_attributes_and_the_pod_claim_name() -> None:
    inventory = {
        "eth1": {"name": "eth1", "ifname": "eth1", "allocatable": True, "attributes": {"dra.net/mtu": 9000}}
    }
    cj = claim_json(results=[result("eth1")])
    cj["metadata"]["annotations"] = {"resource.kubernetes.io/pod-claim-name": "nic"}
    prepared = prepare_claim(cj, driver=DRIVER, node_name=NODE, inventory=inventory.get)
    assert prepared.pod_claim_name == "nic"
    assert prepared.devices[0].attributes == {"dra.net/mtu": {"int": 9000}}
    # the checkpoint keeps them: a restarted dra rewrites a lost file the same
    again = PreparedClaim.from_dict(json.loads(json.dumps(prepared.to_dict())))
    assert again.pod_claim_name == "nic" and again.devices[0].attributes == {"dra.net/mtu": {"int": 9000}}


class Claims:
    def __init__(self, *claims: dict[str, Any]) -> None:
        self.claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.claims[(namespace, name)]


def test_driver_prepare_answers_the_metadata_id_and_unprepare_removes_the_files(tmp_path: Path) -> None:
    inventory = {
        n: {"name": n, "ifname": n, "allocatable": True, "attributes": {"dra.net/ifName": n}}
        for n in ("eth1", "eth2")
    }
    cj = claim_json(uid=UID, name="c", results=[result("eth1"), result("eth2")])
    f = files(tmp_path)
    d = Driver(
        driver_name=DRIVER,
        node_name=NODE,
        claims=Claims(cj),
        inventory=inventory.get,
        checkpoint=Checkpoint(tmp_path / "dra"),
        detach=lambda _pod, _devices: None,
        metadata=f,
    )
    d.load()
    ref = ClaimRef(UID, "default", "c")
    out = d.prepare([ref])[UID]
    assert out.error == ""
    assert out.cdi_ids == {"eth1": [f"dra.net/metadata={UID}_nic"]}  # once per request
    prepared = d.get(UID)
    assert prepared is not None
    path = md.host_file(f.directory, prepared, "nic")
    assert read(path)["requests"][0]["devices"][1]["attributes"] == {"dra.net/ifName": {"string": "eth2"}}
    d.on_attachment(
        prepared, {"device": "eth2", "state": "attached", "network_data": {"interfaceName": "net2"}}
    )
    assert read(path)["requests"][0]["devices"][1]["networkData"] == {"interfaceName": "net2"}
    assert d.unprepare([ref]) == {UID: ""}
    assert not path.exists() and list(f.cdi_dir.iterdir()) == []
    d.on_attachment(prepared, {"device": "eth2", "state": "attached"})  # late: nothing comes back
    assert not path.parent.exists()


def test_driver_prepare_fails_with_the_reason_when_the_files_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cj = claim_json(uid=UID, name="c", results=[result("eth1")])
    d = Driver(
        driver_name=DRIVER,
        node_name=NODE,
        claims=Claims(cj),
        inventory={"eth1": {"name": "eth1", "ifname": "eth1", "allocatable": True}}.get,
        checkpoint=Checkpoint(tmp_path / "dra"),
        detach=lambda _pod, _devices: None,
        metadata=md.MetadataFiles(DRIVER, blocker / "meta", tmp_path / "cdi"),
    )
    d.load()
    err = d.prepare([ClaimRef(UID, "default", "c")])[UID].error
    assert "device metadata of request nic" in err and "check --cdi-dir" in err
    assert d.get(UID) is None
