"""What changed between two policy versions, rule by rule.

Each leaf of the policy content is a rule (`mission.window_end`,
`facilities.greene.live_from`, `actions.read_case.purposes`, ...); a table added or
removed is one change; a list of names (purposes, categories, required training) says
which items it gained and lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def diff_content(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The changes from `old` to `new`, in the order of the policy's sections."""
    changes: list[dict[str, Any]] = []
    _walk((), old, new, changes)
    return changes


def _walk(
    path: tuple[str, ...], old: Mapping[str, Any], new: Mapping[str, Any], out: list[dict[str, Any]]
) -> None:
    keys = list(old) + [key for key in new if key not in old]
    for key in keys:
        where = (*path, key)
        if key not in new:
            out.append(_change(where, "removed", was=old[key]))
        elif key not in old:
            out.append(_change(where, "added", now=new[key]))
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            _walk(where, old[key], new[key], out)
        elif old[key] != new[key]:
            change = _change(where, "changed", was=old[key], now=new[key])
            if isinstance(old[key], list) and isinstance(new[key], list):
                change["added"] = [item for item in new[key] if item not in old[key]]
                change["removed"] = [item for item in old[key] if item not in new[key]]
            out.append(change)


def _change(
    where: tuple[str, ...], change: str, was: Any = None, now: Any = None
) -> dict[str, Any]:
    return {"section": where[0], "path": ".".join(where), "change": change, "was": was, "now": now}
