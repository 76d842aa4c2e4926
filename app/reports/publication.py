"""The monthly transparency report (contract 16): what a state publishes under its
open-records law.

Every count comes from the oversight reports themselves (`Reports.summary_report`,
`denials_report`, `flags_report`) over the month's facility-local days, so the public
table and the reports API cannot disagree. The table is suppressed by
`app.reports.suppression` (counts 1-10, and as many more as needed so that none can be
derived), then signed the way export manifests are (Ed25519 by the service's key over the
canonical JSON of the report without `signature`) and anchored to the earliest tree
checkpoint that holds every event it counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.errors import Invalid
from app.ledger import transparency
from app.ledger.canonical import format_timestamp
from app.ledger.export_format import protect
from app.ledger.service import Ledger
from app.ledger.signing import manifest_message
from app.policy.book import PolicyBook, in_force
from app.policy.evaluator import CompiledPolicy
from app.policy.reasons import Flag, ReasonCode
from app.reports import repository
from app.reports.exports import Exports
from app.reports.schemas import (
    DenialsQuery,
    EventFilters,
    FlagsQuery,
    SummaryQuery,
    TransparencyQuery,
    TransparencyReport,
)
from app.reports.service import Reports, period
from app.reports.suppression import HIGH, LOW, Relation, suppress
from app.vocabulary import ACCESS_KINDS

REASON_COLUMNS = tuple(f"denied_{code.value}" for code in ReasonCode)
COLUMNS: tuple[str, ...] = (
    "accesses",
    "allowed",
    "denied",
    *REASON_COLUMNS,
    "break_glass",
    "guard_sworn_enforcement_attempts",
    "flags_reviewed",
    "flags_open",
)
RULE = (
    f"counts from {LOW} to {HIGH} are suppressed (null in JSON, `suppressed` in CSV); "
    "further cells are suppressed so that none can be derived from the others and the "
    "totals through the relations listed"
)
RELATIONS = [
    "each column: the `facility` rows and the `elsewhere` row sum to the `all` row",
    "each row: allowed + denied = accesses",
]
SUPPRESSED_CSV = "suppressed"
ELSEWHERE_NAME = "Elsewhere (no facility of the policy)"
ALL_NAME = "All facilities"

Cell = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Published:
    """One generated report: its signed JSON body and its CSV bytes."""

    report: TransparencyReport
    csv: bytes


def month_days(month: str) -> tuple[date, date]:
    """The first and last day of `YYYY-MM`."""
    first = date(int(month[:4]), int(month[5:]), 1)
    if (first.year, first.month) == (9999, 12):
        return first, date(9999, 12, 31)
    return first, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def versions_in_force(book: PolicyBook, start: datetime, end: datetime) -> list[CompiledPolicy]:
    """Every policy version that judged some instant of [start, end), in the order they
    took effect (the folder's when the log holds none)."""
    timeline = book.timeline
    if not timeline:
        return [book.initial]
    activations = [(a.seq, a.effective_from) for a in timeline]
    instants = [
        start,
        *sorted(a.effective_from for a in timeline if start < a.effective_from < end),
    ]
    chosen: dict[str, CompiledPolicy] = {}
    by_seq = {a.seq: a for a in timeline}
    for instant in instants:
        seq = in_force(activations, instant)
        if seq is not None:
            activation = by_seq[seq]
            chosen.setdefault(activation.version, activation.policy)
    return list(chosen.values())


def table_relations(rows: int) -> list[Relation[Cell]]:
    """The additive relations of a table of `rows` rows whose last is the total row."""
    total = rows - 1
    relations: list[Relation[Cell]] = [
        Relation((total, column), tuple((i, column) for i in range(total)), f"column {column}")
        for column in COLUMNS
    ]
    relations += [
        Relation((i, "accesses"), ((i, "allowed"), (i, "denied")), f"row {i}: allowed + denied")
        for i in range(rows)
    ]
    return relations


def csv_body(rows: Sequence[dict[str, Any]]) -> bytes:
    """The table as CSV: scope, facility, name, then the columns; a suppressed cell reads
    `suppressed`; the name cells carry the exports' formula guard."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["scope", "facility", "name", *COLUMNS])
    for row in rows:
        cells = [SUPPRESSED_CSV if row["cells"][c] is None else row["cells"][c] for c in COLUMNS]
        facility = "" if row["facility"] is None else protect(row["facility"])
        writer.writerow([row["scope"], facility, protect(row["name"]), *cells])
    return buffer.getvalue().encode("utf-8")


class TransparencyReports:
    """`GET /v1/reports/transparency`: count, suppress, sign, anchor."""

    def __init__(self, book: PolicyBook, reports: Reports, exports: Exports, ledger: Ledger):
        self.book = book
        self.reports = reports
        self.exports = exports
        self.ledger = ledger

    def month(self, session: Session, query: TransparencyQuery) -> Published:
        """The signed report of `query.month` (422 naming `month` when it is in the future)."""
        self.book.refresh(session)
        timezone = self.reports.policy.timezone
        first, last = month_days(query.month)
        start, end = period(first, last, timezone)
        assert start is not None
        assert end is not None
        now = self.reports.clock()
        if start > now:
            raise Invalid(["query", "month"], f"{query.month} has not begun yet")
        versions = versions_in_force(self.book, start, end)
        facilities: dict[str, str] = {}
        for policy in versions:
            for key, facility in policy.facilities.items():
                facilities[key] = facility.name
        keys = list(facilities)
        counts = self._counts(session, first, last, keys)
        # The log's head, read after the counts: every event counted is at or below it.
        as_of = repository.head_seq(session)
        first_seq, last_seq = repository.seq_bounds(
            session,
            self.reports.criteria(EventFilters(since=first, until=last), ACCESS_KINDS),
        )
        names = [*(facilities[k] for k in keys), ELSEWHERE_NAME, ALL_NAME]
        scopes = [*("facility" for _ in keys), "elsewhere", "all"]
        values: dict[Cell, int] = {
            (i, column): counts[i][column] for i in range(len(names)) for column in COLUMNS
        }
        outcome = suppress(values, table_relations(len(names)), order=list(values))
        rows = [
            {
                "scope": scopes[i],
                "facility": keys[i] if i < len(keys) else None,
                "name": names[i],
                "cells": {
                    c: None if (i, c) in outcome.suppressed else values[(i, c)] for c in COLUMNS
                },
            }
            for i in range(len(names))
        ]
        body_csv = csv_body(rows)
        tree = self.exports.covering_tree(session, as_of) if as_of else None
        signer = self.ledger.signer
        body: dict[str, Any] = {
            "report": "transparency",
            "month": query.month,
            "time_zone": timezone.key,
            "since": format_timestamp(start),
            "until": format_timestamp(end),
            "complete": end <= now,
            "policy_versions": [policy.version for policy in versions],
            "generated_at": format_timestamp(now),
            "columns": list(COLUMNS),
            "rows": rows,
            "suppression": {
                "rule": RULE,
                "low": LOW,
                "high": HIGH,
                "relations": RELATIONS,
                "suppressed_cells": len(outcome.suppressed),
            },
            "first_seq": first_seq,
            "last_seq": last_seq,
            "as_of_seq": as_of,
            "tree_size": tree.size if tree is not None else None,
            "checkpoint": transparency.with_cosignatures(session, tree) if tree else None,
            "csv_sha256": hashlib.sha256(body_csv).hexdigest(),
            "key_id": signer.key_id,
        }
        signature = signer.sign(manifest_message(body))
        return Published(TransparencyReport(**body, signature=signature), body_csv)

    def _counts(
        self, session: Session, first: date, last: date, keys: Sequence[str]
    ) -> list[dict[str, int]]:
        """The cells of every facility row, then `elsewhere`, then `all`."""
        span: dict[str, Any] = {"since": first, "until": last}
        reports = self.reports
        by_facility = ["facility"]
        summary = reports.summary_report(session, SummaryQuery(**span, group_by=by_facility))
        glass = reports.summary_report(
            session, SummaryQuery(**span, flag=Flag.break_glass, group_by=by_facility)
        )
        rows: list[dict[str, int]] = []
        for key in [*keys, None]:
            scope: dict[str, Any] = {"facility": key} if key is not None else {}

            def summed(report: Any, field: str, key: str | None = key) -> int:
                return sum(
                    getattr(group, field)
                    for group in report.groups
                    if key is None or group.key["facility"] == key
                )

            denials = reports.denials_report(session, DenialsQuery(**span, **scope))
            flags = reports.flags_report(session, FlagsQuery(**span, **scope, limit=1))
            accesses = summed(summary, "count")
            denied = summed(summary, "denied")
            reasons = {f"denied_{item.reason}": item.count for item in denials.by_reason}
            rows.append({
                "accesses": accesses,
                "allowed": accesses - denied,
                "denied": denied,
                **{column: reasons.get(column, 0) for column in REASON_COLUMNS},
                "break_glass": summed(glass, "count"),
                "guard_sworn_enforcement_attempts": denials.mission_creep.attempts,
                "flags_reviewed": flags.reviewed,
                "flags_open": flags.open,
            })  # fmt: skip
        total = rows.pop()
        elsewhere = {c: total[c] - sum(row[c] for row in rows) for c in COLUMNS}
        return [*rows, elsewhere, total]
