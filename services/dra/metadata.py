"""Device metadata files (KEP-5304): each container that uses a claimed NIC reads the device's
attributes and its network data from a file, in the layout of the kubelet plugin helper
(k8s.io/dynamic-resource-allocation/kubeletplugin, EnableDeviceMetadata).

Per claim request, one file on the host and one CDI spec that bind-mounts it read-only:
- host file: <plugin data dir>/dra-device-metadata/<namespace>_<claim>/<request>/metadata.json
- CDI spec: <CDI dir>/<driver>_metadata_<claim UID>_<request>.json, kind <driver>/metadata,
  device <claim UID>_<request>; its ID goes with the first device of the request in the prepare
  answer, so the kubelet gives it to exactly the containers that use the request;
- in the container: /var/run/kubernetes.io/dra-device-attributes/resourceclaims/<claim>/<request>/
  <driver>-metadata.json, or .../resourceclaimtemplates/<pod claim name>/... for a claim made from
  a template (the pod spec names it, the generated claim name is not predictable).
<request> is the top-level request name (a firstAvailable sub-request is recorded in the content).

The content is a JSON stream holding one DeviceMetadata object per API version the driver writes
(only metadata.resource.k8s.io/v1alpha1 exists): the claim's name, namespace, UID, a generation,
podClaimName, and per request its devices (driver, pool, name, the attributes as the ResourceSlice
publishes them, and networkData). Prepare writes generation 1 with no networkData: the interface's
name, MAC and addresses in the pod are known once the netns worker attached it (RunPodSandbox,
after prepare). The attach notification then rewrites the file with networkData and the next
generation, as the helper's UpdateRequestMetadata does. The rewrite is in place (truncate and
write), not a rename: the runtime bind-mounted the file's inode, and a renamed file would never
reach the container.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dranet.atomic import write_atomic

from .model import PreparedClaim, PreparedDevice
from .status import network_of

log = logging.getLogger(__name__)

API_VERSION = "metadata.resource.k8s.io/v1alpha1"
KIND = "DeviceMetadata"
CONTAINER_DIR = "/var/run/kubernetes.io/dra-device-attributes"
CLAIMS_SUBDIR = "resourceclaims"
TEMPLATES_SUBDIR = "resourceclaimtemplates"
FILE_SUFFIX = "-metadata.json"
HOST_SUBDIR = "dra-device-metadata"
HOST_FILE = "metadata.json"
CDI_VERSION = "0.5.0"  # mounts, and device names that start with a digit (a claim UID)
POD_CLAIM_NAME_ANNOTATION = "resource.kubernetes.io/pod-claim-name"


class MetadataError(Exception):
    """A metadata file cannot be written or read; the message names the file and the reason."""


# ---------------------------------------------------------------- the layout (pure)


def api_attributes(plain: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Inventory attributes (qualified name -> plain value) as a ResourceSlice publishes them."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in sorted(plain.items()):
        if isinstance(value, bool):  # before int: a bool is an int in Python
            out[name] = {"bool": value}
        elif isinstance(value, int):
            out[name] = {"int": value}
        elif isinstance(value, str):
            out[name] = {"string": value}
    return out


def pod_claim_name(claim: Mapping[str, Any]) -> str | None:
    """The pod's name for a claim made from a template (the resourceclaim controller's annotation)."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(POD_CLAIM_NAME_ANNOTATION)
    return str(value) if value is not None else None


def requests_of(claim: PreparedClaim) -> dict[str, list[PreparedDevice]]:
    """Top-level request name -> its devices, in allocation order."""
    out: dict[str, list[PreparedDevice]] = {}
    for d in claim.devices:
        out.setdefault(d.request_name, []).append(d)
    return out


def container_path(driver: str, claim: PreparedClaim, request: str) -> str:
    if claim.pod_claim_name:
        return f"{CONTAINER_DIR}/{TEMPLATES_SUBDIR}/{claim.pod_claim_name}/{request}/{driver}{FILE_SUFFIX}"
    return f"{CONTAINER_DIR}/{CLAIMS_SUBDIR}/{claim.name}/{request}/{driver}{FILE_SUFFIX}"


def claim_dir(base: str | Path, namespace: str, name: str) -> Path:
    return Path(base) / f"{namespace}_{name}"


def host_file(base: str | Path, claim: PreparedClaim, request: str) -> Path:
    return claim_dir(base, claim.namespace, claim.name) / request / HOST_FILE


def cdi_device_name(claim_uid: str, request: str) -> str:
    return f"{claim_uid}_{request}"


def cdi_kind(driver: str) -> str:
    return f"{driver}/metadata"


def cdi_id(driver: str, claim_uid: str, request: str) -> str:
    return f"{cdi_kind(driver)}={cdi_device_name(claim_uid, request)}"


def cdi_filename(driver: str, claim_uid: str, request: str) -> str:
    return f"{driver}_metadata_{claim_uid}_{request}.json"


def cdi_spec(driver: str, claim: PreparedClaim, request: str, host_path: str) -> dict[str, Any]:
    """The CDI spec that bind-mounts one request's file (host_path as the runtime sees it)."""
    return {
        "cdiVersion": CDI_VERSION,
        "kind": cdi_kind(driver),
        "devices": [
            {
                "name": cdi_device_name(claim.uid, request),
                "containerEdits": {
                    "mounts": [
                        {
                            "hostPath": host_path,
                            "containerPath": container_path(driver, claim, request),
                            "options": ["ro", "bind"],
                        }
                    ]
                },
            }
        ],
    }


def document(
    driver: str,
    claim: PreparedClaim,
    devices: list[PreparedDevice],
    *,
    generation: int,
    network: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One request's DeviceMetadata (v1alpha1). network: device name -> networkData."""
    network = network or {}
    entries = []
    for d in devices:
        entry: dict[str, Any] = {"driver": driver, "pool": d.pool, "name": d.device}
        if d.attributes:
            entry["attributes"] = dict(d.attributes)
        if network.get(d.device):
            entry["networkData"] = dict(network[d.device])
        entries.append(entry)
    meta: dict[str, Any] = {
        "name": claim.name,
        "namespace": claim.namespace,
        "uid": claim.uid,
        "generation": generation,
    }
    doc: dict[str, Any] = {"kind": KIND, "apiVersion": API_VERSION, "metadata": meta}
    if claim.pod_claim_name is not None:
        doc["podClaimName"] = claim.pod_claim_name
    # the request as allocated: "req/sub" for a firstAvailable sub-request, as the helper records it
    doc["requests"] = [{"name": devices[0].request if devices else "", "devices": entries}]
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """The file: a JSON stream of the document once per API version written (one version)."""
    return json.dumps(doc, indent=2).encode() + b"\n"


def decode_first(data: bytes) -> dict[str, Any]:
    """The first object of the stream whose apiVersion this build reads. Raises ValueError."""
    decoder = json.JSONDecoder()
    text = data.decode()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            raise ValueError(f"no {API_VERSION} {KIND} object in the stream")
        obj, pos = decoder.raw_decode(text, pos)
        if isinstance(obj, dict) and obj.get("apiVersion") == API_VERSION and obj.get("kind") == KIND:
            return obj


def network_data(interface_name: str, ips: Iterable[str], hardware_address: str) -> dict[str, Any]:
    """networkData as the API spells it (ResourceClaim status's NetworkDeviceData)."""
    out: dict[str, Any] = {}
    if interface_name:
        out["interfaceName"] = interface_name
    ips = [str(i) for i in ips]
    if ips:
        out["ips"] = ips
    if hardware_address:
        out["hardwareAddress"] = hardware_address
    return out


# ---------------------------------------------------------------- the files (I/O)


@dataclass(frozen=True)
class MetadataFiles:
    """The metadata files of the prepared claims and their CDI specs.

    directory: where dra writes the files (<plugin data dir>/dra-device-metadata); host_directory:
    the same directory as the runtime resolves the CDI spec's hostPath (differs only when dra's
    view of the node's filesystem is not the runtime's, as on the node stand-in); cdi_dir: the
    runtime's CDI spec directory."""

    driver: str
    directory: Path
    cdi_dir: Path
    host_directory: Path | None = None

    def _host_path(self, claim: PreparedClaim, request: str) -> str:
        return str(host_file(self.host_directory or self.directory, claim, request))

    def cdi_path(self, claim_uid: str, request: str) -> Path:
        return self.cdi_dir / cdi_filename(self.driver, claim_uid, request)

    def ids(self, claim: PreparedClaim) -> dict[str, str]:
        """device name -> the metadata CDI ID its answer carries: the first device of each request."""
        return {
            devs[0].device: cdi_id(self.driver, claim.uid, req) for req, devs in requests_of(claim).items()
        }

    def write(self, claim: PreparedClaim) -> None:
        """Generation 1 of every request's file (no networkData yet) and its CDI spec. The claim's
        own file already there (dra restarted) is kept: it may hold the attach's network data; one
        of an earlier claim of the same name is replaced. Raises MetadataError."""
        for request, devices in requests_of(claim).items():
            path = host_file(self.directory, claim, request)
            try:
                if _uid_in(path) != claim.uid:
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                    _write_in_place(path, encode(document(self.driver, claim, devices, generation=1)))
                spec = cdi_spec(self.driver, claim, request, self._host_path(claim, request))
                self.cdi_dir.mkdir(parents=True, exist_ok=True)
                # the runtime's CDI cache must never read half a spec: replaced, not rewritten
                data = json.dumps(spec, indent=1).encode() + b"\n"
                write_atomic(self.cdi_path(claim.uid, request), data, 0o644, durable=False)
            except OSError as exc:
                raise MetadataError(f"cannot write the device metadata of request {request}: {exc}") from None

    def update(self, claim: PreparedClaim, device: str, network: Mapping[str, Any] | None) -> int:
        """Set (or clear, network None) one device's networkData in its request's file, with the
        next generation, as UpdateRequestMetadata does. Returns the file's generation (unchanged, and
        nothing written, when the device's networkData is already that). Raises MetadataError."""
        prepared = next((d for d in claim.devices if d.device == device), None)
        if prepared is None:
            raise MetadataError(f"device {device} is not one of claim {claim.namespace}/{claim.name}'s")
        request = prepared.request_name
        path = host_file(self.directory, claim, request)
        try:
            prev = decode_first(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MetadataError(f"cannot read {path} to update it: {exc}") from None
        devices = requests_of(claim)[request]
        known: dict[str, Mapping[str, Any]] = {}
        for req in prev.get("requests") or []:
            for entry in req.get("devices") or []:
                if entry.get("networkData"):
                    known[str(entry.get("name"))] = entry["networkData"]
        generation = int((prev.get("metadata") or {}).get("generation") or 0)
        if dict(known.get(device) or {}) == dict(network or {}):
            return generation  # e.g. the worker's snapshot after a restart: nothing new
        if network:
            known[device] = network
        else:
            known.pop(device, None)
        generation += 1
        doc = document(self.driver, claim, devices, generation=generation, network=known)
        try:
            _write_in_place(path, encode(doc))
        except OSError as exc:
            raise MetadataError(f"cannot write {path}: {exc}") from None
        return generation

    def remove(self, claim: PreparedClaim) -> None:
        """Remove the claim's files and specs; missing ones are fine. Raises OSError."""
        d = claim_dir(self.directory, claim.namespace, claim.name)
        if d.exists():
            shutil.rmtree(d)
        for request in requests_of(claim):
            self.cdi_path(claim.uid, request).unlink(missing_ok=True)

    def sync(self, claims: Iterable[PreparedClaim]) -> list[str]:
        """At start: every prepared claim has its files and specs (the CDI directory is a tmpfs),
        and ours of claims no longer prepared are gone. Returns what failed."""
        errors: list[str] = []
        claims = list(claims)
        keep_dirs = {claim_dir(self.directory, c.namespace, c.name).name for c in claims}
        keep_specs = {cdi_filename(self.driver, c.uid, r) for c in claims for r in requests_of(c)}
        for claim in claims:
            try:
                self.write(claim)
            except MetadataError as exc:
                errors.append(f"claim {claim.namespace}/{claim.name}: {exc}")
        for name in _listdir(self.directory, errors):
            if name not in keep_dirs:
                try:
                    shutil.rmtree(self.directory / name)
                except OSError as exc:
                    errors.append(f"{self.directory / name}: {exc}")
        prefix = f"{self.driver}_metadata_"
        for name in _listdir(self.cdi_dir, errors):
            if name.startswith(prefix) and name.endswith(".json") and name not in keep_specs:
                try:
                    (self.cdi_dir / name).unlink(missing_ok=True)
                except OSError as exc:
                    errors.append(f"{self.cdi_dir / name}: {exc}")
        return errors


def _uid_in(path: Path) -> str | None:
    """The claim UID a metadata file was written for; None when there is no readable file."""
    try:
        return str((decode_first(path.read_bytes()).get("metadata") or {}).get("uid"))
    except (OSError, ValueError):
        return None


def _listdir(path: Path, errors: list[str]) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        errors.append(f"{path}: {exc}")
        return []


def _write_in_place(path: Path, data: bytes) -> None:
    """Truncate and write in one write(2): the runtime bind-mounted this inode into containers."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_DETACHED_STATES = {"detached", "released", "removed"}


def on_attachment(files: MetadataFiles, claim: PreparedClaim | None, body: Mapping[str, Any]) -> int | None:
    """One attachment of the netns worker's "attachments" topic (or of its snapshot): "attached"
    writes the device's networkData (what the worker set in the pod: name, addresses, MAC), a
    detach clears it, anything else (a failure) changes nothing. Returns the file's generation,
    None when the notification is not about a device of claim. Raises MetadataError."""
    device = str(body.get("device") or "")
    if claim is None or not any(d.device == device for d in claim.devices):
        return None
    state = str(body.get("state") or "").lower()
    if state in _DETACHED_STATES:
        return files.update(claim, device, None)
    if state != "attached" or body.get("error"):
        return None
    nd = network_of(body)
    return files.update(claim, device, network_data(nd["interfaceName"], nd["ips"], nd["hardwareAddress"]))
