"""Consumable capacity (KEP-5075) for the allocator stand-in: pure, as the scheduler does it.

A device with `allowMultipleAllocations: true` can be allocated to many requests at once; each
allocation consumes an amount of every capacity the device publishes, and the sum over all its
allocations never goes above the capacity's value. The amount is what the request asks
(`capacity.requests`), or the `requestPolicy.default`, or (no policy) the whole value; a policy
rounds it up to its next valid value (`validValues`: the smallest one at least as large;
`validRange`: `min`, then `min + k*step`), and an amount the policy cannot serve (above `max`, or
above every valid value) makes the device ineligible for that request. A request naming a capacity
the device does not have makes it ineligible too. On a device that does not allow multiple
allocations, capacity requests only filter (value >= request), as a CEL selector would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Number = int | float
Key = tuple[str, str, str]  # (driver, pool, device)


@dataclass(frozen=True)
class Capacity:
    """One published capacity with its request policy (numbers already parsed)."""

    value: Number
    default: Number | None = None
    valid_values: tuple[Number, ...] = ()
    range_min: Number | None = None
    range_max: Number | None = None
    range_step: Number | None = None

    @property
    def has_policy(self) -> bool:
        return self.default is not None or bool(self.valid_values) or self.range_min is not None


def parse_capacity(value: Mapping[str, Any], parse: Any) -> Capacity:
    """A `DeviceCapacity` ({value, requestPolicy}) through `parse` (the quantity parser)."""
    policy = value.get("requestPolicy") or {}
    valid_range = policy.get("validRange") or {}

    def opt(raw: Any) -> Number | None:
        return None if raw is None else parse(raw)

    return Capacity(
        value=parse(value.get("value", 0)),
        default=opt(policy.get("default")),
        valid_values=tuple(parse(x) for x in policy.get("validValues") or ()),
        range_min=opt(valid_range.get("min")),
        range_max=opt(valid_range.get("max")),
        range_step=opt(valid_range.get("step")),
    )


def full_name(name: str, driver: str) -> str:
    """A capacity name with its domain: a name without one is in the driver's domain."""
    return name if "/" in name else f"{driver}/{name}"


def adjusted(cap: Capacity, requested: Number | None) -> Number | None:
    """The amount an allocation consumes of cap for this request, or None when the policy cannot
    serve it (the device is then ineligible)."""
    if not cap.has_policy:
        return cap.value if requested is None else requested
    amount = requested if requested is not None else cap.default
    if amount is None:
        amount = cap.value
    if cap.valid_values:
        bigger = [x for x in cap.valid_values if x >= amount]
        return min(bigger) if bigger else None
    if cap.range_min is not None:
        amount = max(amount, cap.range_min)
        if cap.range_step:
            steps = (Decimal(str(amount)) - Decimal(str(cap.range_min))) / Decimal(str(cap.range_step))
            whole = int(steps.to_integral_value(rounding="ROUND_CEILING"))
            amount = cap.range_min + whole * cap.range_step
        if cap.range_max is not None and amount > cap.range_max:
            return None
    return amount


def consumption(
    capacities: Mapping[str, Capacity],
    requests: Mapping[str, Number],
    used: Mapping[str, Number],
    driver: str,
) -> dict[str, Number] | None:
    """What one more allocation consumes of a multi-allocatable device (published name -> amount),
    or None when it does not fit: a request for a capacity it lacks, an amount its policy refuses,
    or a sum above the value. used: what its current allocations consume, by published name."""
    by_full = {full_name(n, driver): n for n in capacities}
    asked: dict[str, Number] = {}
    for name, amount in requests.items():
        published = by_full.get(full_name(name, driver))
        if published is None:
            return None
        asked[published] = amount
    out: dict[str, Number] = {}
    for name, cap in capacities.items():
        share = adjusted(cap, asked.get(name))
        if share is None or used.get(name, 0) + share > cap.value:
            return None
        out[name] = share
    return out


def satisfies(capacities: Mapping[str, Capacity], requests: Mapping[str, Number], driver: str) -> bool:
    """A device that allows one allocation: every requested capacity present and large enough."""
    by_full = {full_name(n, driver): c for n, c in capacities.items()}
    return all(
        (cap := by_full.get(full_name(n, driver))) is not None and cap.value >= amount
        for n, amount in requests.items()
    )


def consumed_by_claims(
    claims: Iterable[Mapping[str, Any]], parse: Any, exclude_uid: str = ""
) -> dict[Key, dict[str, Number]]:
    """The capacity that allocated shares consume now, per device (claims other than exclude_uid)."""
    out: dict[Key, dict[str, Number]] = {}
    for c in claims:
        if (c.get("metadata") or {}).get("uid") == exclude_uid:
            continue
        alloc = (c.get("status") or {}).get("allocation") or {}
        for r in (alloc.get("devices") or {}).get("results") or []:
            if not r.get("shareID"):
                continue
            key = (r.get("driver", ""), r.get("pool", ""), r.get("device", ""))
            used = out.setdefault(key, {})
            for name, amount in (r.get("consumedCapacity") or {}).items():
                used[name] = used.get(name, 0) + parse(amount)
    return out


def format_quantity(amount: Number) -> str:
    """A number as a Kubernetes quantity string."""
    if isinstance(amount, float) and not amount.is_integer():
        return format(Decimal(str(amount)).normalize(), "f")
    return str(int(amount))


def share_result(consumed: Mapping[str, Number]) -> dict[str, Any]:
    """The fields a shared allocation adds to its result: a new shareID and what it consumes."""
    return {
        "shareID": str(uuid.uuid4()),
        "consumedCapacity": {n: format_quantity(a) for n, a in consumed.items()},
    }
