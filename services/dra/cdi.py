"""CDI specs for prepared claims: how a claimed pod fails closed when the NRI plugin is not there.

containerd starts a sandbox without asking a plugin that is not connected (an upgrade, a crash
loop of nri), so a claimed pod could run without its NIC. The kubelet passes the CDI device IDs
that NodePrepareResources returned to the runtime with every container of the pod that uses the
claim, and the runtime applies the CDI spec whatever the state of NRI. Our spec adds one OCI
`createRuntime` hook per device, `dranet cdi-hook` (dranet/cdihook.py), which refuses to start the
container until the netns worker says the device is attached in the container's network namespace.
Late attach (nri's Synchronize) then repairs the sandbox, and the kubelet's retry starts the
container. A pod without a claim has no CDI device and no hook.

One spec file per claim, `<vendor>-nic_<claim UID>.json` with vendor `k8s.<driver name>`: the
claim UID in every device name means a cached spec never answers for another claim, and the
vendor prefix keeps other drivers' files apart. Written atomically at prepare, removed at
unprepare, and rewritten for every prepared claim when dra starts (the directory is usually a
tmpfs, emptied at reboot, while the kubelet still considers the claims prepared), which is also
why a spec is not fsync'd.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dranet.atomic import write_atomic

from .model import PreparedClaim

log = logging.getLogger(__name__)

CDI_VERSION = "0.6.0"  # device names may start with a digit (a claim UID): 0.5.0 or later
CLASS = "nic"
# createRuntime: run in the runtime's namespaces (the host, where the hook binary and the bus
# are), after the container's namespaces exist (so /proc/<pid>/ns/net is the pod's netns) and
# before the user's process starts; a failure makes the runtime delete the container.
HOOK_STAGE = "createRuntime"
DEFAULT_WAIT = 5.0  # seconds the hook waits for the attachment before it refuses the container


@dataclass(frozen=True)
class HookCommand:
    """How the runtime runs `dranet cdi-hook` on the host."""

    argv: tuple[str, ...]  # the executable and its leading arguments, e.g. (python, -m, dranet)
    runtime_dir: str  # the bus directory as the host sees it
    wait: float = DEFAULT_WAIT


def vendor(driver_name: str) -> str:
    return f"k8s.{driver_name}"


def kind(driver_name: str) -> str:
    return f"{vendor(driver_name)}/{CLASS}"


def device_name(claim_uid: str, device: str) -> str:
    return f"{claim_uid}-{device}"


def device_id(driver_name: str, claim_uid: str, device: str) -> str:
    """The fully qualified CDI name the kubelet passes to the runtime."""
    return f"{kind(driver_name)}={device_name(claim_uid, device)}"


def spec_filename(driver_name: str, claim_uid: str) -> str:
    return f"{vendor(driver_name)}-{CLASS}_{claim_uid}.json"


def hooked_devices(claim: PreparedClaim) -> list[str]:
    """The claim's devices that the hook waits for: every one that is moved (admin access only
    observes a device, so nothing is attached for it)."""
    return [d.device for d in claim.devices if not d.admin_access]


def device_ids(driver_name: str, claim: PreparedClaim) -> dict[str, list[str]]:
    """device name -> its CDI IDs for the prepare answer (none for an observe-only device)."""
    return {d: [device_id(driver_name, claim.uid, d)] for d in hooked_devices(claim)}


def build_spec(driver_name: str, claim: PreparedClaim, hook: HookCommand) -> dict[str, Any] | None:
    """The CDI spec of a claim, or None when no device of it needs one."""
    devices = hooked_devices(claim)
    if not devices:
        return None
    return {
        "cdiVersion": CDI_VERSION,
        "kind": kind(driver_name),
        "devices": [
            {
                "name": device_name(claim.uid, d),
                "containerEdits": {
                    "hooks": [
                        {
                            "hookName": HOOK_STAGE,
                            "path": hook.argv[0],
                            "args": [
                                *hook.argv,
                                "cdi-hook",
                                f"--runtime-dir={hook.runtime_dir}",
                                f"--claim={claim.uid}",
                                f"--device={d}",
                                f"--wait={hook.wait:g}",
                            ],
                            # the runtime kills a hook that hangs; ours gives up by itself before
                            "timeout": int(hook.wait) + 5,
                        }
                    ]
                },
            }
            for d in devices
        ],
    }


class CdiSpecs:
    """The claims' spec files in the runtime's CDI directory."""

    def __init__(self, directory: str | Path, driver_name: str, hook: HookCommand) -> None:
        self.dir = Path(directory)
        self.driver_name = driver_name
        self.hook = hook

    def path(self, claim_uid: str) -> Path:
        return self.dir / spec_filename(self.driver_name, claim_uid)

    def ids(self, claim: PreparedClaim) -> dict[str, list[str]]:
        return device_ids(self.driver_name, claim)

    def write(self, claim: PreparedClaim) -> None:
        """Write (or replace) the claim's spec. Raises OSError."""
        spec = build_spec(self.driver_name, claim, self.hook)
        if spec is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # 0644: the runtime reads it; nothing in it is secret. Not fsync'd: the rename is what the
        # runtime must never see half of, and after a machine crash sync() rewrites every spec
        # from the (durable) checkpoint at start; /var/run/cdi is a tmpfs anyway.
        data = json.dumps(spec, indent=1).encode() + b"\n"
        write_atomic(self.path(claim.uid), data, 0o644, durable=False)

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec; a missing file is fine. Raises OSError."""
        self.path(claim_uid).unlink(missing_ok=True)

    def sync(self, claims: Iterable[PreparedClaim]) -> list[str]:
        """Make the directory hold exactly the specs of `claims` among ours: rewrite each (lost at
        reboot, or written by an older build), remove the rest. Returns what failed."""
        errors = []
        keep = set()
        for claim in claims:
            keep.add(self.path(claim.uid).name)
            try:
                self.write(claim)
            except OSError as exc:
                errors.append(f"{self.path(claim.uid)}: {exc}")
        prefix = f"{vendor(self.driver_name)}-{CLASS}_"
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith(prefix) and name.endswith(".json") and name not in keep:
                try:
                    (self.dir / name).unlink(missing_ok=True)
                except OSError as exc:
                    errors.append(f"{self.dir / name}: {exc}")
        return errors
