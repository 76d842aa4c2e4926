"""The log's side of the witness protocol (C2SP tlog-witness): each new checkpoint goes to
every witness of AUDIT_WITNESSES with the consistency proof from the size that witness
last cosigned; the cosignatures that verify against the witness's vkey are kept in
`tree_cosignatures` and served on the checkpoint.

One thread per witness and process, on its own timeout: a witness that is down, slow or
refusing never delays an append or another witness, and is only retried on the next
round. On PostgreSQL the workers take turns per witness (an advisory lock held for the
submission), so a witness gets one submission per round, not one per worker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Final

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.clock import Clock, rounds
from app.config import WitnessSetting
from app.db import Database
from app.ledger import transparency
from app.ledger.merkle import consistency_proof
from app.ledger.models import TreeCheckpoint, TreeCosignature
from app.ledger.note import COSIGNATURE_V1, NoteError, Verifier, open_note

log = logging.getLogger("access_audit")

SIZE_TYPE: Final = "text/x.tlog.size"
WITNESS_LOCK_KEY: Final = 0x77746E  # "wtn", with the witness's own 32-bit number


@dataclass(frozen=True)
class WitnessPeer:
    """A configured witness: its submission prefix and its cosignature key."""

    url: str
    verifier: Verifier

    @classmethod
    def from_setting(cls, setting: WitnessSetting) -> WitnessPeer:
        verifier = Verifier.from_vkey(setting.vkey)
        if verifier.kind != COSIGNATURE_V1:
            raise NoteError(f"witness {verifier.name}: a witness vkey is of type 0x04")
        return cls(setting.url.rstrip("/"), verifier)

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def lock_number(self) -> int:
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big") >> 1


def cosigned_size(session: Session, witness: str) -> int | None:
    """The largest size `witness` cosigned for this log, if any."""
    return session.scalar(
        select(func.max(TreeCosignature.size)).where(TreeCosignature.witness == witness)
    )


@dataclass(frozen=True, slots=True)
class WitnessStatus:
    """How far a witness lags the latest checkpoint (for /metrics and /readyz)."""

    name: str
    url: str
    cosigned_size: int | None
    lag_events: int
    lag_seconds: float


def statuses(session: Session, peers: Sequence[WitnessPeer]) -> list[WitnessStatus]:
    latest = transparency.latest_checkpoint(session)
    found = []
    for peer in peers:
        size = cosigned_size(session, peer.name)
        lag_events = lag_seconds = 0.0
        if latest is not None and (size is None or size < latest.size):
            lag_events = latest.size - (size or 0)
            cosigned = None if size is None else transparency.checkpoint_of_size(session, size)
            since = _first_signed(session) if cosigned is None else cosigned.signed_at
            lag_seconds = max(0.0, (latest.signed_at - since).total_seconds()) if since else 0.0
        found.append(WitnessStatus(peer.name, peer.url, size, int(lag_events), lag_seconds))
    return found


def _first_signed(session: Session) -> datetime | None:
    return session.scalar(select(func.min(TreeCheckpoint.signed_at)))


class Submitter:
    """Submits the latest checkpoint to one witness every `interval` seconds (a thread)."""

    def __init__(
        self,
        database: Database,
        peer: WitnessPeer,
        *,
        interval: float,
        timeout: float,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._peer = peer
        self._interval = interval
        self._clock = clock
        self._monotonic = monotonic
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._witness_size: int | None = None  # what the witness last said it cosigned
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run in the background; with the served app's `loop`, cosignatures are stored in
        the process's turn to write (`Database.write_from_thread`)."""
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name=f"witness {self._peer.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        for _ in rounds(self._stop, self._interval, self._monotonic):
            try:
                self.submit_once()
            except Exception as exc:  # never let a witness take the thread down
                log.warning("witness %s: %s: %s", self._peer.name, type(exc).__name__, exc)

    def submit_once(self) -> bool:
        """Submit the latest checkpoint if this witness has not cosigned it; True when a
        new cosignature was kept."""
        with self._database.reader() as session:
            if session.get_bind().dialect.name == "postgresql":
                turn = func.pg_try_advisory_xact_lock(WITNESS_LOCK_KEY, self._peer.lock_number)
                if not session.scalar(select(turn)):
                    return False  # another worker is submitting to this witness
            latest = transparency.latest_checkpoint(session)
            if latest is None:
                return False
            kept = cosigned_size(session, self._peer.name)
            if kept is not None and kept >= latest.size:
                return False
            if self._witness_size is None:
                self._witness_size = kept or 0
            with httpx.Client(timeout=self._timeout) as http:
                for _ in range(2):  # once more after a 409 that says where the witness is
                    line = self._add(http, session, latest, self._witness_size)
                    if line is not None:
                        break
                else:
                    return False
        values = {"size": latest.size, "witness": self._peer.name, "line": line,
                  "received_at": self._clock()}  # fmt: skip
        self._database.write_from_thread(
            partial(transparency.insert_new, model=TreeCosignature, values=values), self._loop
        )
        self._witness_size = latest.size
        return True

    def _add(
        self, http: httpx.Client, session: Session, checkpoint: TreeCheckpoint, old: int
    ) -> str | None:
        """One add-checkpoint request; the verified cosignature line, or None."""
        name = self._peer.name
        if old > checkpoint.size:
            text = "witness %s cosigned %d events, more than the latest checkpoint's %d: a fork?"
            log.error(text, name, old, checkpoint.size)
            return None
        proof = consistency_proof(
            transparency.hash_reader(session, checkpoint.size), old, checkpoint.size
        )
        body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        response = http.post(
            f"{self._peer.url}/add-checkpoint", content=(body + "\n" + checkpoint.note).encode()
        )
        if response.status_code == 409 and response.headers.get("content-type", "").startswith(
            SIZE_TYPE
        ):
            said = response.text.strip()
            if said.isdigit():
                self._witness_size = int(said)
            return None
        if response.status_code != 200:
            log.error("witness %s refused the checkpoint of %d: %d %s", name, checkpoint.size,
                      response.status_code, response.text.strip()[:200])  # fmt: skip
            self._witness_size = None  # ask the log's records again next round
            return None
        for line in response.text.splitlines(keepends=True):
            try:
                open_note(checkpoint.note + line, [self._peer.verifier])
            except NoteError:
                continue  # another key's line, or a bad one: ignored, as the spec says
            return line
        log.error("witness %s answered without a valid cosignature of its key", name)
        return None
