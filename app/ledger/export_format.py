"""The CSV form of an event: exact column order and cell encoding (docs/integrity.md).

Every cell can be read back to the value that was hashed, so an auditor can recompute the
chain from an exported file: null is the empty cell, booleans are `true`/`false`, lists
are joined with `;` (their items never contain `;`), `details` is canonical JSON, and a
cell that starts with `=`, `+`, `-`, `@`, tab, carriage return or `'` gets a leading `'`
so spreadsheets do not run it (strip exactly one leading `'` to read it back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.canonical import canonical_json
from app.ledger.canonical import format_timestamp
from app.ledger.models import EVENT_FIELDS, LIST_FIELDS, TIMESTAMP_FIELDS

# Contract section 7, in order, then the fields that follow it: the event's fields.
CSV_COLUMNS: tuple[str, ...] = EVENT_FIELDS
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


def protect(text: str) -> str:
    """Prefix `'` to a cell a spreadsheet would treat as a formula (and to a leading `'`)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


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
