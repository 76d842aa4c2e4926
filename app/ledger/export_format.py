"""The CSV form of an event: exact column order and cell encoding (docs/integrity.md).

Every cell can be read back to the value that was hashed, so an auditor can recompute the
chain from an exported file: null is the empty cell, booleans are `true`/`false`, lists
are joined with `;` (their items never contain `;`), `details` is canonical JSON, and a
cell a spreadsheet could run as a formula gets a leading `'` (strip exactly one leading
`'` to read it back): one that starts with tab, carriage return or `'`, or whose first
character after any leading whitespace is `=`, `+`, `-`, `@` or one of their fullwidth
or small forms (U+FF1D, U+FF0B, U+FF0D, U+FF20; U+FE66, U+FE62, U+FE63, U+FE6B), which
spreadsheets read as the same operators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.canonical import canonical_json
from app.ledger.canonical import format_timestamp
from app.ledger.models import EVENT_FIELDS, LIST_FIELDS, TIMESTAMP_FIELDS

# Contract section 7, in order, then the fields that follow it: the event's fields.
CSV_COLUMNS: tuple[str, ...] = EVENT_FIELDS
# The operators a formula starts with (contract section 7), and the fullwidth and small
# forms spreadsheets fold to them.
FORMULA_CHARS: tuple[str, ...] = (
    *("=", "+", "-", "@"),
    *("\uff1d", "\uff0b", "\uff0d", "\uff20"),  # fullwidth
    *("\ufe66", "\ufe62", "\ufe63", "\ufe6b"),  # small
)
# Whitespace a spreadsheet skips before a formula: Unicode whitespace and zero-width
# characters (a login username or a justification can start with any of them).
LEADING_BLANKS = "\\s\u200b\u200c\u200d\u2060\ufeff"
# Guarded whatever follows: tab and carriage return (the contract's list), and `'` (so that
# one leading `'` can always be stripped to read a cell back).
GUARDED_FIRST = ("\t", "\r", "'")
_FORMULA = re.compile(f"[{LEADING_BLANKS}]*[{re.escape(''.join(FORMULA_CHARS))}]")


def needs_guard(text: str) -> bool:
    """Whether a spreadsheet could run the cell as a formula (or it starts with `'`)."""
    return text.startswith(GUARDED_FIRST) or _FORMULA.match(text) is not None


def protect(text: str) -> str:
    """Prefix `'` to a cell a spreadsheet would treat as a formula (and to a leading `'`)."""
    return "'" + text if needs_guard(text) else text


def cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if name in LIST_FIELDS:
        return protect(";".join(value))
    if name == "details":
        return protect(canonical_json(value))
    return protect(str(value))


def csv_row(event: Mapping[str, Any]) -> list[str]:
    """One event as CSV cells in `CSV_COLUMNS` order."""
    return [cell(name, event[name]) for name in CSV_COLUMNS]


def parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of `csv_row`: the hashed values back from the cells."""
    values: dict[str, Any] = {}
    for name in CSV_COLUMNS:
        text = row[name]
        if text.startswith("'"):
            text = text[1:]
        if name in LIST_FIELDS:
            values[name] = text.split(";") if text else []
        elif name == "details":
            values[name] = json.loads(text) if text else {}
        elif name == "seq":
            values[name] = int(text)
        elif name == "break_glass":
            values[name] = None if text == "" else text == "true"
        elif name in TIMESTAMP_FIELDS:
            values[name] = text
        else:
            values[name] = text or None
    return values
