"""The worker's errors: a kernel step that failed, and the one translation into a bus error.

Every kernel step runs through `run_step`, so a failure names its step and the kernel's reason
(and, for errors a claim's config can cause, what to change). Everything leaving the worker goes
through `as_bus_error`, which gives it a stable bus code.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TypeVar

from dranet.services.netns.model import RequestError

from dranet.bus.messages import BusError

T = TypeVar("T")
Hook = Callable[[str, str], None]  # (step, device): tests inject failures and pauses here

# What a user can do about the kernel errors a claim's config can cause.
_HINTS: dict[tuple[str, int | None], str] = {
    ("move", errno.EEXIST): (
        " (interface.name: the pod's network namespace already has an interface with that name,"
        " e.g. the CNI's eth0; choose another interface.name)"
    ),
    ("move", errno.ERANGE): " (interface.mtu: outside what this device supports)",
    ("move", errno.EADDRNOTAVAIL): " (interface.hardwareAddr: the device refuses this MAC address)",
}


class StepError(Exception):
    """A kernel step failed; the message names the step and the kernel's reason."""

    def __init__(self, step: str, device: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = _HINTS.get((step, getattr(exc, "errno", None)), "")
        super().__init__(f"{device}: step {step!r} failed: {reason}{hint}")
        self.step = step
        self.device = device
        self.errno: int | None = getattr(exc, "errno", None)


def run_step(step: str, device: str, fn: Callable[[], T], hook: Hook | None = None) -> T:
    """Run one kernel step (after the test hook, when there is one); an OSError becomes StepError."""
    try:
        if hook is not None:
            hook(step, device)
        return fn()
    except OSError as exc:
        raise StepError(step, device, exc) from None


def as_bus_error(exc: BaseException, device: str = "", step: str = "") -> BusError:
    """The bus error for any failure. device prefixes a refused request's message; step names the
    step that was running when exc is not already a StepError (an unexpected error inside it)."""
    if isinstance(exc, BusError):
        return exc
    if isinstance(exc, RequestError):
        return BusError(exc.code, f"{device}: {exc}" if device else str(exc))
    if step and not isinstance(exc, StepError):
        exc = StepError(step, device, exc)
    if isinstance(exc, StepError):
        return BusError("kernel_error", str(exc))
    if isinstance(exc, OSError):
        return BusError("kernel_error", f"{exc.strerror or exc}")
    return BusError("internal", f"{type(exc).__name__}: {exc}")
