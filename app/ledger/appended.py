"""The leaves this process appended and committed, kept until a checkpoint covers them.

Before it signs, the checkpoint publisher makes sure that every event since the last
checkpoint was written by the service (`transparency.first_unauthentic`): its leaf in the
tree is the hash of its canonical bytes, and the leaf carries the service's authenticator.
Asking that of the database means reading each new event back and encoding it again, which
under a steady ingest was a sixth of the server's CPU (bench/ingest.py) for rows this very
process had just encoded. So the append remembers each leaf it computed, and once its
transaction has committed, the publisher compares the tree's stored leaf with the one
remembered instead of rebuilding it from the row; it still checks every leaf's
authenticator. Whatever is not remembered (another worker's rows, rows written behind the
service's back, a restarted process) or does not match is checked from the row as before.

What the shortcut gives up: a row of this process rewritten in the second between its
commit and the next checkpoint (which takes dropping the table's UPDATE trigger) is
checkpointed with the leaf the service wrote, not refused. The checkpoint then commits to
the event as the service logged it, and `verify` reports the row that no longer matches
its leaf, by seq.

Remembered leaves are a hint, never a source: the tree's stored hashes are what is signed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

# At most this many leaves are remembered (some 150 bytes each, 30 MB in all): a checkpoint
# every second drops them long before; when checkpoints stop growing (a refused event),
# later appends are checked from their rows again.
MAX_REMEMBERED: Final = 200_000
_PENDING: Final = "access-audit: leaves appended in this transaction"


class AppendedLeaves:
    """seq -> leaf hash of the events this process appended, in committed transactions."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._leaves: dict[int, bytes] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def pending(self, session: Session, first_seq: int, leaves: Sequence[bytes]) -> None:
        """Remember `leaves` (of seqs `first_seq`…) once `session`'s transaction commits;
        forget them if it does not."""
        session.info.setdefault(_PENDING, []).append((self, first_seq, list(leaves)))

    def _add(self, first_seq: int, leaves: Sequence[bytes]) -> None:
        with self._lock:
            if len(self._leaves) + len(leaves) > self._limit:
                return
            for seq, leaf in enumerate(leaves, first_seq):
                self._leaves[seq] = leaf

    def run(self, first: int, last: int) -> tuple[int, list[bytes] | None]:
        """The longest run of seqs from `first` (at most to `last`) that are all remembered
        or all not: (its last seq, its leaves in order, or None for a run not remembered)."""
        with self._lock:
            if not self._leaves:  # a process that appended nothing since: one run
                return last, None
            known = self._leaves.get(first)
            if known is None:
                end = first
                while end < last and end + 1 not in self._leaves:
                    end += 1
                return end, None
            leaves = [known]
            while first + len(leaves) <= last:
                leaf = self._leaves.get(first + len(leaves))
                if leaf is None:
                    break
                leaves.append(leaf)
            return first + len(leaves) - 1, leaves

    def forget_through(self, seq: int) -> None:
        """Drop the leaves of seqs up to `seq` (a checkpoint covers them)."""
        with self._lock:
            if self._leaves and min(self._leaves) <= seq:
                self._leaves = {s: leaf for s, leaf in self._leaves.items() if s > seq}

    def __len__(self) -> int:
        return len(self._leaves)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    # Fires for the outermost transaction's commit (and a savepoint's release; a savepoint
    # later rolled back leaves a stale hint, which the stored tree contradicts).
    for leaves, first_seq, hashes in session.info.pop(_PENDING, ()):
        leaves._add(first_seq, hashes)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back or closed: what was pending is not in the log
        session.info.pop(_PENDING, None)
