"""The volume-spike count: distinct records one actor touched in the trailing window.

One algorithm on both databases (the ledger's volume summary, read under the append lock),
checked here against an independent count straight from the events, at the window's
edges; with work that does not grow with the actor's activity; and rebuilt from the log
exactly as appends keep it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.append_store import WindowReads
from app.ledger.models import Event, VolumeTouch
from app.ledger.service import NewEvent, Touch, VolumeRule
from tests.conftest import NOV_3_MORNING, record_access

HOUR = timedelta(hours=1)


def independent_count(
    session: Session, touches: Sequence[Touch], window: timedelta, limit: int
) -> list[int]:
    """The count as the rule states it, from every access event in the log: for each touch
    at t, the distinct records its actor touched in (t - window, t] (logged accesses, and
    the touches before it in the list by instant then position), itself included, up to
    `limit`."""
    logged = session.execute(
        select(Event.actor, Event.record_type, Event.record_id, Event.occurred_at).where(
            Event.kind.in_(["decision", "report"])
        )
    ).all()
    counts = []
    for i, (actor, record_type, record_id, at) in enumerate(touches):
        records = {(record_type, record_id)}
        for who, kind, rid, when in logged:
            if who == actor and at - window < when <= at:
                records.add((kind, rid))
        for j, (who, kind, rid, when) in enumerate(touches):
            if who == actor and at - window < when and (when, j) < (at, i):
                records.add((kind, rid))
        counts.append(min(len(records), limit))
    return counts


def counted(context: AppContext, session: Session, touches: Sequence[Touch]) -> list[int]:
    locked = context.ledger.lock(session, counted={(t[0], t[3]) for t in touches})
    return locked.window_counts(touches)


def test_counts_agree_with_an_independent_count_at_the_edges(
    session: Session, context: AppContext
) -> None:
    rng = random.Random(5)
    now = NOV_3_MORNING
    actors = ["sgt.miller", "spc.ortiz", "lt.hayes"]
    ids = [f"GRN-{i}" for i in range(14)]
    # In the window, on its edges (its start is excluded, its end included), at bucket
    # boundaries, before it, and after the instants asked about (reports come late).
    offsets = [
        timedelta(0), HOUR, HOUR - timedelta(microseconds=1), HOUR + timedelta(microseconds=1),
        2 * HOUR, timedelta(minutes=7), -timedelta(minutes=3), timedelta(minutes=59, seconds=59),
    ]  # fmt: skip
    for _ in range(90):
        record_access(session, context, occurred_at=now - rng.choice(offsets),
                      actor=rng.choice(actors), record_id=rng.choice(ids),
                      kind=rng.choice(["decision", "report"]))  # fmt: skip
    # Not an access: an event with the same actor and record must not count.
    context.ledger.append(session, now, [NewEvent(
        kind="admin", occurred_at=now, actor="spc.ortiz", record_type="detainee_case",
        record_id="GRN-NOT-ACCESSED",
    )])  # fmt: skip
    session.flush()
    # A low limit (this test's own context), so that it is reached.
    window, limit = context.ledger.volume.window, 6
    context.ledger.volume = VolumeRule(window, limit)
    instants = [now - offset for offset in offsets] + [now + timedelta(minutes=30)]
    for round_ in range(3):
        touches = [
            (rng.choice([*actors, "nobody.known"]), "detainee_case",
             rng.choice([*ids, "GRN-NOT-ACCESSED"]), rng.choice(instants))
            for _ in range(40)
        ]  # fmt: skip
        if round_ == 0:  # a group of decisions: one instant
            touches = [(a, k, r, now) for a, k, r, _ in touches]
        ours = counted(context, session, touches)
        assert ours == independent_count(session, touches, window, limit)
        assert max(ours) > 1  # the log was counted, not only the list
        assert limit in ours  # and the limit was reached


def test_the_rows_read_do_not_grow_with_the_actors_activity(
    session: Session, context: AppContext
) -> None:
    """An actor who touched one record 2,000 times this hour, and one who touched 2,000
    distinct records: a decision reads at most the limit's rows for each bucket."""
    now = NOV_3_MORNING
    busy = [
        NewEvent(kind="report", occurred_at=now - timedelta(seconds=i + 1), actor=actor,
                 record_type="detainee_case", record_id=record(i), decision="allow")
        for actor, record in (("same.record", lambda _: "GRN-1"),
                              ("many.records", lambda i: f"GRN-{i}"))
        for i in range(2000)
    ]  # fmt: skip
    context.ledger.append(session, now, busy)
    session.flush()
    limit = context.ledger.volume.limit
    for actor, expected in (("same.record", 1), ("many.records", limit), ("quiet", 1)):
        locked = context.ledger.lock(session, counted={(actor, now)})
        [count] = locked.window_counts([(actor, "detainee_case", "GRN-1", now)])
        assert count == expected
        opened = locked._opened
        read = [len(rows) for rows in [*opened.latest.values(), *opened.earliest.values()]]
        assert 1 <= len(read) <= 2  # the bucket of `now`, and the one before if needed
        assert max(read) <= limit


def test_the_summary_reads_walk_its_indexes(session: Session, context: AppContext) -> None:
    """Each bucket is one walk of an index that ends at the limit (no scan of the table)."""
    store = context.ledger.store
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        for sql in (store._LATEST, store._EARLIEST):  # type: ignore[attr-defined]
            plan = connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", ("sgt.miller", 3600, 1, 51)
            ).all()
            details = " ".join(str(row[-1]) for row in plan)
            assert "USING INDEX ix_volume_touches_" in details, details
            assert "TEMP B-TREE" not in details, details  # walked in order, not sorted
        return
    nested = session.begin_nested()
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    for sql in (store._LATEST, store._EARLIEST):  # type: ignore[attr-defined]
        plan = (
            connection.exec_driver_sql("EXPLAIN " + sql, (["sgt.miller"], [1], 3600, 51))
            .scalars()
            .all()
        )
        assert any("ix_volume_touches_" in line for line in plan), plan
        assert not any("Sort" in line for line in plan), plan
    nested.rollback()


def test_the_summary_rebuilt_from_the_log_is_the_one_kept_at_append(
    session: Session, context: AppContext
) -> None:
    rng = random.Random(9)
    for i in range(200):
        record_access(session, context, occurred_at=NOV_3_MORNING - timedelta(minutes=7 * i),
                      actor=rng.choice(["a.one", "a.two"]), record_id=f"GRN-{rng.randrange(30)}",
                      kind=rng.choice(["decision", "report"]))  # fmt: skip
    context.ledger.append(session, NOV_3_MORNING, [NewEvent(kind="login", actor="a.one")])
    session.flush()

    def summary() -> list[tuple[object, ...]]:
        return [tuple(row) for row in session.execute(
            select(VolumeTouch.__table__).order_by(*VolumeTouch.__table__.primary_key.columns)
        )]  # fmt: skip

    kept = summary()
    assert kept
    context.ledger.prepare(session)  # no width registered yet: built from the log
    assert summary() == kept
    widths = session.execute(text("SELECT width, built_through_seq FROM volume_widths")).all()
    head = session.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1))
    assert [tuple(w) for w in widths] == [(3600, head)]


def test_reads_name_only_the_buckets_they_need(context: AppContext) -> None:
    """A window (t - w, t] lies in the bucket of t and the one before."""
    at = datetime.fromisoformat("2025-11-03T16:30:00+00:00")
    bucket = int(at.timestamp()) // 3600
    ledger = context.ledger
    reads: list[WindowReads] = []

    class Spy:
        def open(self, session: object, timeout: float, keys: object, windows: WindowReads):
            reads.append(windows)
            raise RuntimeError("stop")

    ledger.store = Spy()  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        ledger.lock(None, counted={("a.one", at)})  # type: ignore[arg-type]
    assert set(reads[0].latest) == {("a.one", bucket - 1)}
    assert set(reads[0].earliest) == {("a.one", bucket)}
