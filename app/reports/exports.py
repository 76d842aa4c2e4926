"""CSV exports: the events CSV streamed from a server-side cursor, the summary CSV, and the
signed manifest that lets an auditor prove a file offline.

Every export is an `export` event appended in a short transaction of its own once the body
has been produced (`completed: false` when the client went away or the stream failed);
its details carry the filters, the row count, the SHA-256 of the exact bytes and the
first and last `seq`, which is what the manifest signs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from app.canonical import canonical_json
from app.clock import Clock
from app.db import Database
from app.errors import Conflict, NotFound
from app.ledger import transparency
from app.ledger.canonical import format_timestamp
from app.ledger.export_format import (
    CSV_COLUMNS,
    FORMULA_CHARS,
    GUARDED_FIRST,
    LEADING_BLANKS,
    cell,
    csv_row,
)
from app.ledger.models import TreeCheckpoint
from app.ledger.service import Ledger, NewEvent
from app.ledger.signing import manifest_message
from app.ledger.transparency import TransparencyLog
from app.reports import repository
from app.reports.schemas import (
    CheckpointRead,
    EventFilters,
    ExportProofs,
    Manifest,
    SummaryQuery,
)
from app.reports.service import Reports
from app.vocabulary import Kind

BATCH_ROWS = 1000

# The CSV lines of exported rows. The rows come as the database renders them cheaply
# (repository.stream_export_rows: timestamps as text, lists and details as JSON text). A
# row none of whose cells needs quoting or a formula guard is joined straight into its
# line; any other row goes through the reference encoder, `csv_row` and `csv.writer`. Both
# give the same bytes (tests/test_exports.py); the straight path is 4x faster, which is
# what lets a large export keep up with the database.
JSON_CELLS = ("actor_roles", "reasons", "flags", "details")
# A cell that might need the guard (any that starts with a blank, an operator or `'`) takes
# the reference path, which decides (`export_format.needs_guard`).
FORMULA_AFTER_COMMA = re.compile(
    f"[,][{LEADING_BLANKS}{re.escape(''.join((*FORMULA_CHARS, *GUARDED_FIRST)))}]"
)
CELLS_BEFORE_DETAILS = len(CSV_COLUMNS) - 1
# Positions in a row without its first cell (`seq`).
ROLES, REASONS, FLAGS, BREAK_GLASS = (
    CSV_COLUMNS.index(name) - 1 for name in ("actor_roles", "reasons", "flags", "break_glass")
)
_read_json = json.JSONDecoder().decode


def csv_lines(rows: Sequence[Sequence[Any]]) -> str:
    """The CSV lines (each ended by CR LF) of exported rows, in order."""
    lines = []
    for row in rows:
        line = _plain_line(row)
        lines.append(line if line is not None else _reference_line(row))
    return "".join(lines)


def _list_cell(json_text: str) -> str:
    if json_text == "[]":
        return ""
    if "\\" in json_text:  # an escaped character: let the JSON reader decode it
        return ";".join(_read_json(json_text))
    # `["a", "b"]` as written by json.dumps (SQLite) and by PostgreSQL's jsonb output.
    return json_text[2:-2].replace('", "', ";")


def _plain_line(row: Sequence[Any]) -> str | None:
    """The row's line when no cell needs quoting or a formula guard, else None."""
    cells = ["" if value is None else value for value in row[1:CELLS_BEFORE_DETAILS]]
    for position in (ROLES, REASONS, FLAGS):
        cells[position] = _list_cell(cells[position])
    if cells[BREAK_GLASS] != "":
        cells[BREAK_GLASS] = "true" if cells[BREAK_GLASS] else "false"
    text = str(row[0]) + "," + ",".join(cells)
    if (
        text.count(",") != CELLS_BEFORE_DETAILS - 1
        or '"' in text
        or "\n" in text
        or "\r" in text
        or FORMULA_AFTER_COMMA.search(text)
    ):
        return None
    details = row[CELLS_BEFORE_DETAILS]
    if details == "{}":
        return text + ",{}\r\n"
    # Canonical JSON starts with `{` (no guard) and escapes control characters; it only
    # needs its quotes doubled.
    return text + ',"' + canonical_json(_read_json(details)).replace('"', '""') + '"\r\n'


def _reference_line(row: Sequence[Any]) -> str:
    """The row's line through the reference encoding of app/ledger/export_format.py."""
    event = dict(zip(CSV_COLUMNS, row, strict=True))
    for name in JSON_CELLS:
        event[name] = _read_json(event[name])
    if event["break_glass"] is not None:
        event["break_glass"] = bool(event["break_glass"])
    buffer = io.StringIO()
    csv.writer(buffer).writerow(csv_row(event))
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Exporter:
    """Who asks for an export (recorded in its `export` event)."""

    actor: str
    actor_roles: list[str]
    source: str
    source_ip: str | None = None


class EventsExport:
    """One export of the events CSV: the body a chunk at a time, then its audit event.

    The HTTP stream and `access-audit export` both drive it: `next_chunk()` until None,
    then `finish()`; `abandon()` records an export that stopped early (idempotent).
    """

    def __init__(self, exports: Exports, filters: EventFilters, by: Exporter) -> None:
        self.exports = exports
        self.filters = filters.model_dump(mode="json", exclude_none=True)
        # Validates the filters (since after until is a 422) before any byte is sent.
        self.criteria = exports.reports.criteria(filters)
        self.by = by
        self.export_id = str(uuid.uuid4())
        self.rows = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.recorded = False
        self._digest = hashlib.sha256()
        self._body = self._produce()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None once it is complete."""
        return next(self._body, None)

    def finish(self) -> None:
        """Record the completed export."""
        self._record(completed=True)

    def abandon(self) -> None:
        """Release the cursor and record the export as incomplete, unless already recorded."""
        if self.recorded:
            return
        self._body.close()
        self._record(completed=False)

    def _produce(self) -> Generator[bytes]:
        header = io.StringIO()
        csv.writer(header).writerow(CSV_COLUMNS)
        yield self._take(header.getvalue())
        with self.exports.database.reader() as session:
            batches = repository.stream_export_rows(session, self.criteria, BATCH_ROWS)
            for batch in batches:
                if self.first_seq is None:
                    self.first_seq = batch[0].seq
                self.last_seq = batch[-1].seq
                self.rows += len(batch)
                yield self._take(csv_lines(batch))

    def _take(self, text: str) -> bytes:
        chunk = text.encode("utf-8")
        self._digest.update(chunk)
        return chunk

    def _record(self, completed: bool) -> None:
        if self.recorded:
            return
        self.recorded = True
        details = {
            "export_id": self.export_id,
            "format": "events.csv",
            "filters": self.filters,
            "rows": self.rows,
            "sha256": self.sha256,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "completed": completed,
        }
        seal_at = self.last_seq if completed else None
        self.exports.record(self.by, self.export_id, "export_events", details, seal_at)


class Exports:
    """The events CSV, the summary CSV, their `export` events and signed manifests."""

    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        reports: Reports,
        clock: Clock,
        log: TransparencyLog,
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.reports = reports
        self.clock = clock
        self.log = log

    def events(self, filters: EventFilters, by: Exporter) -> EventsExport:
        """An events export, ready to stream (filters already validated)."""
        return EventsExport(self, filters, by)

    def record(
        self,
        by: Exporter,
        export_id: str,
        action: str,
        details: dict[str, Any],
        seal_at: int | None = None,
    ) -> None:
        """Append the `export` event in a short writer transaction of its own.

        When the export's last row is still the head of the log (`seal_at`), the head is
        signed first, so the manifest's checkpoint carries exactly the last row's hash.
        """
        with self.database.transaction() as session:
            now = self.clock()
            if seal_at is not None:
                head = self.ledger.lock(session).head
                covering = repository.checkpoint_covering(session, seal_at)
                if (
                    head is not None
                    and head[0] == seal_at
                    and (covering is None or covering.seq != seal_at)
                ):
                    self.ledger.sign_head(session)
            event = NewEvent(
                kind=Kind.export.value,
                occurred_at=now,
                actor=by.actor,
                actor_roles=by.actor_roles,
                action=action,
                record_type="export",
                record_id=export_id,
                source=by.source,
                source_ip=by.source_ip,
                details=details,
            )
            self.ledger.append(session, now, [event])

    def summary(self, session: Session, query: SummaryQuery, by: Exporter) -> tuple[str, bytes]:
        """The summary report as CSV (one column per grouping, then count, denied,
        flagged), recorded as an export; returns its id and body."""
        export_id = str(uuid.uuid4())
        report = self.reports.summary_report(session, query)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([*report.group_by, "count", "denied", "flagged"])
        for group in report.groups:
            keys = [cell(name, group.key[name]) for name in report.group_by]
            writer.writerow([*keys, group.count, group.denied, group.flagged])
        body = buffer.getvalue().encode("utf-8")
        details = {
            "export_id": export_id,
            "format": "summary.csv",
            "filters": query.model_dump(mode="json", exclude_none=True),
            "rows": len(report.groups),
            "sha256": hashlib.sha256(body).hexdigest(),
            "first_seq": None,
            "last_seq": None,
            "completed": True,
        }
        self.record(by, export_id, "export_summary", details)
        return export_id, body

    def manifest(self, session: Session, export_id: str) -> Manifest:
        """The signed manifest of a completed export.

        Its checkpoint is the earliest signed head at or after the export's last row (so
        that, when one sits exactly on it, the last row's hash is the signed one); if none
        exists yet the current head is signed on demand.
        """
        event = repository.export_event(session, export_id)
        if event is None:
            raise NotFound(f"no export {export_id!r}")
        details = event.details
        if not details.get("completed"):
            raise Conflict(f"export {export_id} did not complete; it has no manifest")
        last_seq = details.get("last_seq")
        found = repository.checkpoint_covering(session, last_seq)
        if found is not None:
            checkpoint = CheckpointRead(
                seq=found.seq,
                hash=found.hash,
                signed_at=format_timestamp(found.signed_at),
                key_id=found.key_id,
                signature=found.signature,
            )
        else:
            with self.database.transaction() as writer:
                head = self.ledger.sign_head(writer)
            if head is None:  # the export event itself is in the log, so it is never empty
                raise NotFound("the log is empty")
            checkpoint = CheckpointRead(
                seq=head["seq"],
                hash=head["hash"],
                signed_at=format_timestamp(head["signed_at"]),
                key_id=head["key_id"],
                signature=head["signature"],
            )
        tree = self.covering_tree(session, last_seq) if last_seq is not None else None
        signer = self.ledger.signer
        body: dict[str, Any] = {
            "export_id": export_id,
            "filters": details.get("filters", {}),
            "rows": details["rows"],
            "sha256": details["sha256"],
            "first_seq": details.get("first_seq"),
            "last_seq": last_seq,
            "checkpoint": checkpoint.model_dump(),
            "tree_checkpoint": (
                transparency.with_cosignatures(session, tree) if tree is not None else None
            ),
            "signed_at": format_timestamp(self.clock()),
            "key_id": signer.key_id,
        }
        return Manifest(**body, signature=signer.sign(manifest_message(body)))

    def covering_tree(self, session: Session, last_seq: int) -> TreeCheckpoint:
        """The earliest tree checkpoint that holds `last_seq`, signed now if none does yet
        (the next one is at most AUDIT_CHECKPOINT_SECONDS away, but an auditor asking
        for the manifest need not wait for it)."""
        found = transparency.covering_checkpoint(session, last_seq)
        if found is None:
            with self.database.transaction() as writer:
                self.log.publish(writer)
                # Signed just now, by us or by the publisher in between, after `session`'s
                # snapshot began (SQLite keeps one per read transaction): read it here.
                stored = transparency.covering_checkpoint(writer, last_seq)
                if stored is not None:
                    found = TreeCheckpoint(
                        size=stored.size, root=stored.root, note=stored.note,
                        signed_at=stored.signed_at,
                    )  # fmt: skip
        if found is None:  # the export's rows are not all in a tree the service will sign
            raise Conflict("no checkpoint can be signed over the export's rows: run verify")
        return found

    def proofs(self, session: Session, export_id: str) -> ExportProofs:
        """Every row of a completed events export proven against the manifest's tree."""
        event = repository.export_event(session, export_id)
        if event is None:
            raise NotFound(f"no export {export_id!r}")
        details = event.details
        if not details.get("completed") or details.get("format") != "events.csv":
            raise Conflict(f"export {export_id} is not a completed events export")
        last_seq = details.get("last_seq")
        if last_seq is None:
            raise Conflict(f"export {export_id} has no rows to prove")
        criteria = self.reports.criteria(EventFilters(**details.get("filters", {})))
        seqs = repository.export_seqs(session, criteria, last_seq)
        if len(seqs) != details["rows"]:
            raise Conflict(f"export {export_id}'s rows are not in the log as they were exported")
        tree = self.covering_tree(session, last_seq)
        proof = transparency.rows_proof(session, seqs, tree)
        return ExportProofs(export_id=export_id, **dataclasses.asdict(proof))

    def write_events_csv(
        self,
        filters: EventFilters,
        out: BinaryIO,
        progress: Callable[[int], None] | None = None,
    ) -> EventsExport:
        """`access-audit export`: the same CSV and the same `export` event, into a file."""
        export = self.events(filters, Exporter(actor="system", actor_roles=[], source="cli"))
        try:
            while (chunk := export.next_chunk()) is not None:
                out.write(chunk)
                if progress is not None:
                    progress(export.rows)
            out.flush()
            export.finish()
        except BaseException:
            export.abandon()
            raise
        return export
