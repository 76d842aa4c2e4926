"""read_together: reads sent together (one round trip on PostgreSQL) answer as one by one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.context import AppContext
from app.db import JSONList, UTCDateTime, read_together
from app.ledger import repository as ledger_repository
from app.ledger.service import NewEvent

AT = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)


def test_each_read_answers_with_its_own_rows_in_order(
    session: Session, context: AppContext
) -> None:
    context.ledger.append(session, AT, [NewEvent(kind="note", actor="sgt.miller")] * 3)
    numbers = text("SELECT n FROM (SELECT 1 AS n UNION ALL SELECT 2) AS t ORDER BY n")
    rows = read_together(
        session,
        [ledger_repository.HEAD_READ, (numbers, {}), (text("SELECT 1 WHERE 1 = 0"), {})],
    )
    head = ledger_repository.head(session)
    assert rows == [[head], [(1,), (2,)], []]


def test_parameters_are_bound_by_their_types(session: Session) -> None:
    """A parameter takes its type's conversion, on each database's variant of the type: a
    list for a JSON column is JSON (on PostgreSQL, not an array)."""
    as_json = text("SELECT CAST(:v AS TEXT)").bindparams(bindparam("v", type_=JSONList))
    as_time = text("SELECT CAST(:t AS TEXT)").bindparams(bindparam("t", type_=UTCDateTime()))
    [[(json_text,)], [(time_text,)]] = read_together(
        session, [(as_json, {"v": ["a", 1]}), (as_time, {"t": AT})]
    )
    assert json_text.replace(" ", "") == '["a",1]'
    assert time_text.startswith("2026-11-03 14:00:00")


def test_a_failed_read_raises_as_sqlalchemy_would(session: Session) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite answers 1/0 with NULL")
    nested = session.begin_nested()
    with pytest.raises(DBAPIError):
        read_together(session, [(text("SELECT 1"), {}), (text("SELECT 1 / 0"), {})])
    nested.rollback()
    assert read_together(session, [(text("SELECT 2"), {})]) == [[(2,)]]
