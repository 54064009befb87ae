"""Our kubelet protos against the kubelet's official ones: same package, services, methods, fields.

The official protos come from Debian's golang-github-kubernetes-kubelet-dev (1.32.x: pluginregistration
v1 and DRA v1beta1); fetch them with tests/conformance/fetch_kubelet_protos.sh. DRA v1 is compared
with the official v1beta1 (the kubelet's v1 is the same wire format plus Device.share_id = 5).
The health service (not in that package) is checked against the documented wire numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
import kubelet_protos

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
needs_official = pytest.mark.skipif(
    kubelet_protos.source_root() is None,
    reason=f"official kubelet protos not present: {kubelet_protos.FETCH_HINT}",
)

F = descriptor_pb2.FieldDescriptorProto


def wire(fd: descriptor_pb2.FileDescriptorProto, package: str | None = None) -> dict[str, Any]:
    """What matters on the wire, with type names made relative to the package."""
    pkg = fd.package

    def rel(name: str) -> str:
        return name.replace(f".{pkg}.", ".")

    def msg(m: descriptor_pb2.DescriptorProto) -> dict[str, Any]:
        return {
            "fields": {
                f.name: (f.number, F.Type.Name(f.type), F.Label.Name(f.label), rel(f.type_name))
                for f in m.field
            },
            "nested": {n.name: msg(n) for n in m.nested_type},
            "map_entry": m.options.map_entry,
            "enums": {e.name: {v.name: v.number for v in e.value} for e in m.enum_type},
        }

    return {
        "package": package or pkg,
        "messages": {m.name: msg(m) for m in fd.message_type},
        "enums": {e.name: {v.name: v.number for v in e.value} for e in fd.enum_type},
        "services": {
            s.name: {
                m.name: (rel(m.input_type), rel(m.output_type), m.client_streaming, m.server_streaming)
                for m in s.method
            }
            for s in fd.service
        },
    }


def ours(tmp: Path, fname: str) -> descriptor_pb2.FileDescriptorProto:
    return kubelet_protos.descriptor(tmp, PROTO_DIR, fname)


@needs_official
def test_pluginregistration_matches_official(tmp_path: Path) -> None:
    official = wire(kubelet_protos.official_descriptor(tmp_path, "pluginregistration"))
    mine = wire(ours(tmp_path, "pluginregistration.proto"))
    assert mine == official
    assert mine["package"] == "pluginregistration"


@needs_official
def test_dra_v1beta1_matches_official(tmp_path: Path) -> None:
    official = wire(kubelet_protos.official_descriptor(tmp_path, "dra_v1beta1"))
    mine = wire(ours(tmp_path, "dra_v1beta1.proto"))
    assert mine == official
    assert mine["package"] == "k8s.io.kubelet.pkg.apis.dra.v1beta1"


@needs_official
def test_dra_v1_is_v1beta1_plus_share_id(tmp_path: Path) -> None:
    official = wire(
        kubelet_protos.official_descriptor(tmp_path, "dra_v1beta1"), package="k8s.io.kubelet.pkg.apis.dra.v1"
    )
    v1 = ours(tmp_path, "dra_v1.proto")
    mine = wire(v1)
    assert mine["package"] == "k8s.io.kubelet.pkg.apis.dra.v1"
    share = mine["messages"]["Device"]["fields"].pop("share_id")
    assert share == (5, "TYPE_STRING", "LABEL_OPTIONAL", "")
    device = next(m for m in v1.message_type if m.name == "Device")
    assert next(f for f in device.field if f.name == "share_id").proto3_optional
    assert mine == official


def test_health_v1alpha1_wire_numbers(tmp_path: Path) -> None:
    mine = wire(ours(tmp_path, "dra_health_v1alpha1.proto"))
    assert mine["package"] == "v1alpha1"
    assert mine["services"] == {
        "DRAResourceHealth": {
            "NodeWatchResources": (".NodeWatchResourcesRequest", ".NodeWatchResourcesResponse", False, True)
        }
    }
    assert mine["enums"] == {"HealthStatus": {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}}
    msgs = mine["messages"]
    assert msgs["NodeWatchResourcesRequest"]["fields"] == {}
    assert msgs["NodeWatchResourcesResponse"]["fields"] == {
        "devices": (1, "TYPE_MESSAGE", "LABEL_REPEATED", ".DeviceHealth")
    }
    assert msgs["DeviceIdentifier"]["fields"] == {
        "pool_name": (1, "TYPE_STRING", "LABEL_OPTIONAL", ""),
        "device_name": (2, "TYPE_STRING", "LABEL_OPTIONAL", ""),
    }
    assert msgs["DeviceHealth"]["fields"] == {
        "device": (1, "TYPE_MESSAGE", "LABEL_OPTIONAL", ".DeviceIdentifier"),
        "health": (2, "TYPE_ENUM", "LABEL_OPTIONAL", ".HealthStatus"),
        "last_updated_time": (3, "TYPE_INT64", "LABEL_OPTIONAL", ""),
        "health_check_timeout_seconds": (4, "TYPE_INT64", "LABEL_OPTIONAL", ""),
        "message": (5, "TYPE_STRING", "LABEL_OPTIONAL", ""),
    }


def test_our_protos_are_self_contained(tmp_path: Path) -> None:
    for name in (
        "pluginregistration.proto",
        "dra_v1.proto",
        "dra_v1beta1.proto",
        "dra_health_v1alpha1.proto",
    ):
        fd = ours(tmp_path, name)
        assert list(fd.dependency) == [], f"{name} must not import other protos"
