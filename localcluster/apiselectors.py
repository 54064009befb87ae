"""Label and field selectors for the local API server stand-in (pure; development/test tool).

Implements the Kubernetes selector string syntax that list and watch requests carry:
label selectors (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) and
field selectors (``path=value``, ``path==value``, ``path!=value``) over a fixed set of field paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector string that cannot be parsed; the message says which part and why."""


@dataclass(frozen=True)
class _LabelRequirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the label, as in Kubernetes.
        return not present or value not in self.values


_KEY_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?)$")
_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, whole: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in selector {whole!r}")
    return key


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Parse a label selector; returns a predicate over an object's labels. Empty selects all."""
    requirements: list[_LabelRequirement] = []
    for part in _split_top_level(text or ""):
        m = _SET_RE.match(part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append(_LabelRequirement(_check_key(m.group(1), text), m.group(2), values))
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                norm = "=" if op == "==" else op
                requirements.append(_LabelRequirement(_check_key(key.strip(), text), norm, (value.strip(),)))
                break
        else:
            if part.startswith("!"):
                requirements.append(_LabelRequirement(_check_key(part[1:].strip(), text), "!exists"))
            else:
                requirements.append(_LabelRequirement(_check_key(part, text), "exists"))
    return lambda labels: all(r.matches(labels) for r in requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field path in an object ("" when absent), as field selectors see it."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return ""
        cur = cur[part]
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str, allowed: Collection[str]) -> Callable[[Mapping[str, Any]], bool]:
    """Parse a field selector over the allowed field paths; returns a predicate over whole objects."""
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ""):
        for op in ("!=", "==", "="):
            if op in part:
                path, _, value = part.partition(op)
                path = path.strip()
                if path not in allowed:
                    raise SelectorError(
                        f'field label not supported: {path} (supported: {", ".join(sorted(allowed))})'
                    )
                terms.append((path, op != "!=", value.strip()))
                break
        else:
            raise SelectorError(
                f"invalid selector: {text!r}; expected field=value, field==value or field!=value"
            )
    return lambda obj: all((field_value(obj, p) == v) == eq for p, eq, v in terms)
