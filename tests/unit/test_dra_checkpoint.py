"""The dra checkpoint: atomic, checksummed, versioned; corruption is detected and quarantined."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from dranet.services.dra import checkpoint as cp
from dranet.services.dra.model import PreparedClaim, PreparedDevice

from dranet.observability.metrics import value


def claim(uid: str = "uid-1", pod: str = "pod-1") -> PreparedClaim:
    dev = PreparedDevice(
        request="nic", pool="node-a", device="eth1", ifname="eth1", config={"interface": {"name": "net1"}}
    )
    return PreparedClaim(uid=uid, namespace="ns", name=f"c-{uid}", pod_uids=[pod], devices=[dev])


def test_round_trip(tmp_path: Path) -> None:
    store = cp.Checkpoint(tmp_path)
    claims = {"uid-1": claim(), "uid-2": claim("uid-2", "pod-2")}
    store.save(claims)
    assert cp.Checkpoint(tmp_path).load() == claims
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temp file left behind


def test_missing_file_is_empty(tmp_path: Path) -> None:
    store = cp.Checkpoint(tmp_path / "absent")
    assert store.load() == {}
    assert store.corruption is None


def test_format_is_versioned_and_checksummed(tmp_path: Path) -> None:
    store = cp.Checkpoint(tmp_path)
    store.save({"uid-1": claim()})
    doc = json.loads(store.path.read_text())
    assert doc["version"] == cp.VERSION
    assert doc["checksum"] == cp.checksum(doc["payload"])
    assert doc["payload"]["claims"]["uid-1"]["pod_uids"] == ["pod-1"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: text.replace('"eth1"', '"eth9"', 1), "checksum mismatch"),
        (lambda text: text.replace('"pod-1"', '"pod-2"'), "checksum mismatch"),
        (lambda text: json.dumps({**json.loads(text), "version": 99}), "unknown version"),
        (lambda text: "[]", "top level"),
    ],
)
def test_corrupt_file_is_quarantined_and_reported(tmp_path: Path, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    store = cp.Checkpoint(tmp_path)
    store.save({"uid-1": claim()})
    store.path.write_text(mutate(store.path.read_text()))
    before = value("dranet_dra_checkpoint_corrupt_total")
    fresh = cp.Checkpoint(tmp_path)
    assert fresh.load() == {}  # never silently used
    assert fresh.corruption is not None and reason in fresh.corruption["reason"]
    aside = Path(fresh.corruption["moved_to"])
    assert aside.exists() and aside.name.startswith("checkpoint.json.corrupt-")
    assert not fresh.path.exists()
    assert value("dranet_dra_checkpoint_corrupt_total") == before + 1
    # the next save starts a good file again
    fresh.save({"uid-2": claim("uid-2")})
    assert list(cp.Checkpoint(tmp_path).load()) == ["uid-2"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = cp.Checkpoint(tmp_path)
    store.save({"uid-1": claim()})

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cp.os, "replace", boom)
    with pytest.raises(OSError):
        store.save({"uid-2": claim("uid-2")})
    monkeypatch.undo()
    assert list(cp.Checkpoint(tmp_path).load()) == ["uid-1"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


def test_entries_with_unknown_fields_are_read(tmp_path: Path) -> None:
    """A checkpoint written by a newer (or older) build: fields this one does not know are ignored."""
    original = claim()
    entry = original.to_dict()
    entry["written_by"] = "dranet 9.9"
    entry["devices"][0]["cdi_device_ids"] = ["dra.net/claim=uid-1-eth1"]
    payload = {"claims": {"uid-1": entry}}
    doc = {"version": cp.VERSION, "checksum": cp.checksum(payload), "payload": payload}
    (tmp_path / cp.FILENAME).write_text(json.dumps(doc))
    store = cp.Checkpoint(tmp_path)
    assert store.load() == {"uid-1": original}
    assert store.corruption is None
