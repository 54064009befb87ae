"""The hostile-peer suite prints what it tried and what was refused at the end of the run."""

from __future__ import annotations

from typing import Any

from hostile import TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.attempts:
        for line in TALLY.lines():
            terminalreporter.write_line(line)
