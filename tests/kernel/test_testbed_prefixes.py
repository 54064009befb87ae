"""Every kernel test module names its throw-away nodes with a prefix of its own (conftest.py's
`testbed`), so that a network namespace left behind on this shared machine says whose it is."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = re.compile(r"""\b(?:testbed|Testbed)\(\s*["']([^"']+)["']""")


def test_each_module_has_its_own_testbed_prefix() -> None:
    users: dict[str, set[str]] = defaultdict(set)
    for path in sorted(HERE.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for prefix in PREFIX.findall(path.read_text()):
            users[prefix].add(path.name)
    assert users, "no testbed prefix found: has the fixture been renamed?"
    shared = {p: sorted(files) for p, files in users.items() if len(files) > 1}
    assert shared == {}, f"testbed prefixes used by more than one module: {shared}"
