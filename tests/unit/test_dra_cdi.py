"""CDI specs of prepared claims: the content the runtime applies, and their life beside the claim."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from dranet.services.dra import cdi
from dranet.services.dra.model import PreparedClaim, PreparedDevice

DRIVER = "dra.net"
UID = "0b6f4f5e-6a43-4a7e-9a9c-1e5f2a1c0d11"
HOOK = cdi.HookCommand(argv=("/usr/bin/python3", "-m", "dranet"), runtime_dir="/run/dranet", wait=5.0)


def claim(uid: str = UID, *devices: tuple[str, bool]) -> PreparedClaim:
    devs = [
        PreparedDevice(request="nic", pool="node-a", device=name, ifname=name, config={}, admin_access=admin)
        for name, admin in (devices or (("eth1", False),))
    ]
    return PreparedClaim(uid=uid, namespace="ns", name="c", pod_uids=["pod-1"], devices=devs)


def test_ids_are_qualified_and_carry_the_claim_uid() -> None:
    c = claim(UID, ("eth1", False), ("eth2", False))
    assert cdi.device_ids(DRIVER, c) == {
        "eth1": [f"k8s.dra.net/nic={UID}-eth1"],
        "eth2": [f"k8s.dra.net/nic={UID}-eth2"],
    }
    assert cdi.spec_filename(DRIVER, UID) == f"k8s.dra.net-nic_{UID}.json"


def test_spec_has_one_device_per_moved_device_each_with_its_create_runtime_hook() -> None:
    spec = cdi.build_spec(DRIVER, claim(UID, ("eth1", False), ("eth2", False)), HOOK)
    assert spec is not None
    assert spec["cdiVersion"] == "0.6.0"  # device names start with the UID, maybe a digit: >= 0.5.0
    assert spec["kind"] == "k8s.dra.net/nic"
    assert "containerEdits" not in spec  # nothing for containers that do not use the claim's devices
    assert [d["name"] for d in spec["devices"]] == [f"{UID}-eth1", f"{UID}-eth2"]
    hooks = spec["devices"][1]["containerEdits"]["hooks"]
    assert hooks == [
        {
            "hookName": "createRuntime",
            "path": "/usr/bin/python3",
            "args": [
                "/usr/bin/python3",
                "-m",
                "dranet",
                "cdi-hook",
                "--runtime-dir=/run/dranet",
                f"--claim={UID}",
                "--device=eth2",
                "--wait=5",
            ],
            "timeout": 10,  # the runtime's bound is above the hook's own
        }
    ]
    assert set(spec["devices"][0]["containerEdits"]) == {"hooks"}  # no other edit: no env, no mounts


def test_observe_only_devices_get_no_cdi_device_and_a_claim_of_only_those_no_spec() -> None:
    mixed = claim(UID, ("eth1", True), ("eth2", False))
    assert cdi.device_ids(DRIVER, mixed) == {"eth2": [f"k8s.dra.net/nic={UID}-eth2"]}
    spec = cdi.build_spec(DRIVER, mixed, HOOK)
    assert spec is not None and [d["name"] for d in spec["devices"]] == [f"{UID}-eth2"]
    admin_only = claim(UID, ("eth1", True))
    assert cdi.device_ids(DRIVER, admin_only) == {}
    assert cdi.build_spec(DRIVER, admin_only, HOOK) is None


def test_names_fit_the_cdi_grammar() -> None:
    # vendor: letters, digits, '-', '.'; class: letters, digits, '-', '_';
    # device: letters, digits, '-', '_', '.', ':'
    vendor, _, rest = cdi.device_id(DRIVER, UID, "pci-0000-3b-00.0").partition("/")
    klass, _, name = rest.partition("=")
    assert vendor.replace("-", "").replace(".", "").isalnum()
    assert klass.replace("-", "").replace("_", "").isalnum()
    assert name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def test_write_is_atomic_readable_and_remove_is_idempotent(tmp_path: Path) -> None:
    specs = cdi.CdiSpecs(tmp_path / "cdi", DRIVER, HOOK)
    c = claim()
    specs.write(c)
    path = specs.path(UID)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert json.loads(path.read_text()) == cdi.build_spec(DRIVER, c, HOOK)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the runtime reads it
    specs.write(c)  # a repeated prepare replaces it
    specs.remove(UID)
    specs.remove(UID)
    assert list(path.parent.iterdir()) == []


def test_sync_rewrites_prepared_claims_and_removes_only_our_stale_specs(tmp_path: Path) -> None:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "k8s.dra.net-nic_gone-claim.json").write_text("{}")  # a claim unprepared while dra was down
    (d / "k8s.gpu.example.com-gpu_x.json").write_text("{}")  # another driver's: never touched
    (d / "vendor.json").write_text("{}")
    specs = cdi.CdiSpecs(d, DRIVER, HOOK)
    assert specs.sync([claim("c-1"), claim("c-2")]) == []
    assert sorted(p.name for p in d.iterdir()) == [
        "k8s.dra.net-nic_c-1.json",
        "k8s.dra.net-nic_c-2.json",
        "k8s.gpu.example.com-gpu_x.json",
        "vendor.json",
    ]


def test_sync_of_a_missing_directory_with_no_claims_creates_nothing(tmp_path: Path) -> None:
    assert cdi.CdiSpecs(tmp_path / "absent", DRIVER, HOOK).sync([]) == []
    assert not (tmp_path / "absent").exists()


def test_write_failure_is_an_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        cdi.CdiSpecs(blocker / "cdi", DRIVER, HOOK).write(claim())
