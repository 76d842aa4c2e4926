"""Group commit for POST /v1/decisions: decisions that wait are written together.

Every decision must be in the log before it is answered, and appends are serialised (one
chain, one head). Written one transaction per request, the serial part of each decision is
its lock, its reads, its insert and its commit, with threadpool hops in between; under load
that, not the evaluator, bounds throughput. So the decisions of one process queue up
(`app.grouping`), and each group is judged at one instant and appended in one transaction,
in the order it arrived (`Access.decide`). This is the one place outside the request
session that commits a request's work.

Nothing is answered before its group is committed. If the group cannot be written because
the log is unavailable, every request of the group gets that error (503), never an allow.
If it fails for any other reason, one of its items may be the cause: each is then written
alone, so that a bad item fails alone and the others are answered as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import InterfaceError, OperationalError

from app.access.schemas import DecisionResult
from app.access.service import Access, Ask
from app.db import Database
from app.errors import LedgerUnavailable, Unauthorized
from app.grouping import GroupQueue

log = logging.getLogger("access_audit")

# A bound on one transaction's size (and on how long its first request waits for the rest).
MAX_GROUP: Final = 256
# Failures that say the log cannot be written now, whichever decisions are in the group.
UNAVAILABLE: Final = (LedgerUnavailable, OperationalError, InterfaceError)


class DecisionQueue:
    """The decisions of one process, written in groups."""

    def __init__(self, database: Database, access: Access) -> None:
        self.database = database
        self.access = access
        # One group in flight at a time (`submit`'s default), on either database: the
        # next group forms while this one is written. Two in flight on PostgreSQL (one
        # group's reads overlapping the other's locked append) made smaller groups that
        # cost more CPU a decision and were slower at 16 connections and at 64
        # (bench/decisions.py on 2 cores: 587 against 705/s and 1,034 against 1,045/s;
        # 1.45 against 1.06 ms of server CPU a decision at 16). On SQLite a second group
        # would only wait for the write turn.
        self._groups = GroupQueue[Ask, DecisionResult](MAX_GROUP)

    async def decide(self, ask: Ask) -> DecisionResult:
        """Queue `ask`, and return its result once the group it joined is committed."""

        async def run(asks: Sequence[Ask]) -> list[DecisionResult | Exception]:
            async with self.database.write_turn():
                return await run_in_threadpool(self._write, asks)

        return await self._groups.submit(self, ask, run)

    def _write(self, asks: Sequence[Ask]) -> list[DecisionResult | Exception]:
        try:
            return self._commit(asks)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            if len(asks) == 1:
                return [exc]
            log.warning(
                "a group of %d decisions failed (%s); writing each alone",
                len(asks),
                type(exc).__name__,
            )
        return [self._alone(ask) for ask in asks]

    def _alone(self, ask: Ask) -> DecisionResult | Exception:
        try:
            return self._commit([ask])[0]
        except Exception as exc:
            return exc

    def _commit(self, asks: Sequence[Ask]) -> list[DecisionResult | Exception]:
        """Write one group in one transaction: answers in order, a refusal for a caller
        that may no longer decide."""
        with self.database.writer() as session:
            admitted = self.access.admitted(session, asks)
            taken = [ask for ask, ok in zip(asks, admitted, strict=True) if ok]
            results = iter(self.access.decide(session, taken))
            session.commit()
        return [
            next(results) if ok else Unauthorized("invalid or expired token") for ok in admitted
        ]
