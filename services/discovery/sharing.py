"""Shared NICs (KEP-5075 consumable capacity): which devices many pods share, and their capacity.

The operator marks shared NICs with --shared-filter, a CEL expression over the same `attributes`
as --filter. A shared device is published with `allowMultipleAllocations: true` and capacities:
`dra.net/interfaces` (how many child interfaces it serves; each share takes exactly one) and,
when --shared-bandwidth is set, `dra.net/bandwidth` (each share takes --shared-bandwidth-step
unless its request asks more, rounded up to a whole step). The pods get macvlan or ipvlan children
of it (dranet/config/child.py); the NIC itself stays on the host. Pure, apart from the CEL filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .filter import DeviceFilter
from .model import AttrValue

INTERFACES = "dra.net/interfaces"
BANDWIDTH = "dra.net/bandwidth"
DEFAULT_INTERFACES = 64  # children per shared NIC: macvlan has no hard limit, keep the scheduler's sums small


class SharingError(ValueError):
    """The sharing flags cannot give a valid capacity (the API server would refuse the slice)."""


_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(text: str, flag: str) -> int:
    """A whole quantity ("10G", "500M", "1Gi") as a number."""
    digits = text.rstrip("kMGTi")
    suffix = text[len(digits) :]
    try:
        value = Decimal(digits) * _SUFFIXES[suffix]
    except (ArithmeticError, KeyError, ValueError):
        raise SharingError(f"{flag} {text!r} is not a quantity such as 10G, 500M or 1Gi") from None
    if value <= 0 or value != value.to_integral_value():
        raise SharingError(f"{flag} {text!r} must be a positive whole quantity")
    return int(value)


@dataclass(frozen=True)
class Sharing:
    """What the operator shares and how much each share takes."""

    filter: DeviceFilter | None = None  # None: no device is shared
    interfaces: int = DEFAULT_INTERFACES
    bandwidth: str = ""  # e.g. "10G"; "" publishes no bandwidth capacity
    bandwidth_step: str = "100M"

    @classmethod
    def from_flags(cls, expression: str, interfaces: int, bandwidth: str, step: str) -> Sharing:
        """Checked at start: a flag that would make every slice invalid is refused with the reason."""
        if interfaces < 1:
            raise SharingError(f"--shared-interfaces {interfaces} must be at least 1")
        if bandwidth and _bytes(step, "--shared-bandwidth-step") * 2 > _bytes(
            bandwidth, "--shared-bandwidth"
        ):
            raise SharingError(
                f"--shared-bandwidth {bandwidth} must be at least two steps of --shared-bandwidth-step {step}"
            )
        text = expression.strip()
        return cls(DeviceFilter(text) if text and text != "false" else None, interfaces, bandwidth, step)

    def shared(self, attributes: Mapping[str, AttrValue], device: str = "") -> bool:
        return self.filter is not None and self.filter.allows(attributes, device=device)

    def capacity(self) -> dict[str, Any]:
        """The capacities of a shared device, in the API's form (with their request policies)."""
        out: dict[str, Any] = {
            INTERFACES: {
                "value": str(self.interfaces),
                "requestPolicy": {"default": "1", "validValues": ["1"]},
            }
        }
        if self.bandwidth:
            step = self.bandwidth_step
            out[BANDWIDTH] = {
                "value": self.bandwidth,
                "requestPolicy": {"default": step, "validRange": {"min": step, "step": step}},
            }
        return out
