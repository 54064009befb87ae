"""The one error type of the configuration model."""

from __future__ import annotations


class ConfigError(ValueError):
    """A claim configuration that cannot be used, with the field at fault and why.

    ``field`` is the path of the offending field as a user writes it in the claim, e.g.
    ``interface.mtu`` or ``routes[1].gateway``; it is ``""`` when the document as a whole is wrong.
    ``reason`` says what is wrong and what is allowed, so the user can fix the claim.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Keep the two attributes when the error is pickled (e.g. across a process pool).
        return (type(self), (self.field, self.reason))
