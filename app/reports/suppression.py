"""Small-cell suppression for published tables (pure: no database, no service).

A published table is a mapping of cells to counts, with the additive relations the table
is known to satisfy (`Relation`: the parts sum to the total). The rule:

1. *Primary*: every cell with `low <= n <= high` (1 to 10) is suppressed.
2. *Complementary*: as many more cells as needed so that no suppressed cell can be
   derived from the published ones through the relations.

`derivable` is the checker. It first propagates: a relation with exactly one unknown
(suppressed, not yet derived) cell gives that cell; each derived cell may unlock another
relation, to a fixpoint. Propagation alone misses what combining relations gives (e.g.
x + y = a and x + y + z = b give z, though no relation has one unknown), so the checker
then solves the relations exactly (Gauss-Jordan over the rationals): a suppressed cell is
derivable when it has one value in every solution. `suppress` adds, while the checker
finds a derivable cell, the smallest published non-zero cell of a relation that holds it
(published zeros only when a relation has no other, ties by the cells' order) and checks
again. The result never passes fewer cells than the primaries, and always passes the
checker.

What it does not claim: suppressed counts are known to be at least 0, and primaries to
lie in 1..10, so a reader can bound a suppressed cell (an interval), not compute it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

LOW = 1
HIGH = 10


@dataclass(frozen=True, slots=True)
class Relation(Generic[C]):
    """`sum(parts) == total`: an additive relation of the table."""

    total: C
    parts: tuple[C, ...]
    name: str = ""

    @property
    def cells(self) -> tuple[C, ...]:
        return (self.total, *self.parts)

    def holds(self, values: Mapping[C, int]) -> bool:
        return sum(values[part] for part in self.parts) == values[self.total]


@dataclass(frozen=True, slots=True)
class Derivation(Generic[C]):
    """A suppressed cell the published ones give away, and how."""

    cell: C
    # The relation that gave it by propagation (one unknown left), or None when only
    # solving several relations together gives it.
    relation: Relation[C] | None


@dataclass(frozen=True, slots=True)
class Suppression(Generic[C]):
    """The outcome: which cells to withhold (`suppressed` holds `primary`)."""

    primary: frozenset[C]
    suppressed: frozenset[C]
    # The complementary cells in the order they were added.
    complementary: tuple[C, ...] = field(default=())


def primary(values: Mapping[C, int], low: int = LOW, high: int = HIGH) -> frozenset[C]:
    """Every cell whose count is from `low` to `high`."""
    return frozenset(cell for cell, n in values.items() if low <= n <= high)


def propagate(relations: Sequence[Relation[C]], suppressed: Iterable[C]) -> list[Derivation[C]]:
    """The suppressed cells that propagation derives, in the order it derives them."""
    unknown = set(suppressed)
    derived: list[Derivation[C]] = []
    progress = True
    while progress:
        progress = False
        for relation in relations:
            hidden = [cell for cell in dict.fromkeys(relation.cells) if cell in unknown]
            if len(hidden) == 1:
                unknown.discard(hidden[0])
                derived.append(Derivation(hidden[0], relation))
                progress = True
    return derived


def determined(relations: Sequence[Relation[C]], suppressed: Iterable[C]) -> list[C]:
    """The suppressed cells that have one value in every solution of the relations (the
    published cells fixed), by Gauss-Jordan elimination over the rationals."""
    unknowns = list(dict.fromkeys(suppressed))
    index = {cell: i for i, cell in enumerate(unknowns)}
    matrix: list[list[Fraction]] = []
    for relation in relations:
        row = [Fraction(0)] * len(unknowns)
        for cell, sign in ((relation.total, -1), *((part, 1) for part in relation.parts)):
            if cell in index:
                row[index[cell]] += sign
        if any(row):
            matrix.append(row)
    pivots: list[int] = []  # the column of each reduced row's pivot
    rank = 0
    for column in range(len(unknowns)):
        pivot = next((r for r in range(rank, len(matrix)) if matrix[r][column]), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        lead = matrix[rank][column]
        matrix[rank] = [value / lead for value in matrix[rank]]
        for r in range(len(matrix)):
            if r != rank and matrix[r][column]:
                factor = matrix[r][column]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[rank], strict=True)]
        pivots.append(column)
        rank += 1
    # A pivot cell is fixed when its reduced row has no free cell: the row reads x = c.
    return [
        unknowns[column]
        for r, column in enumerate(pivots)
        if sum(1 for value in matrix[r] if value) == 1
    ]


def derivable(relations: Sequence[Relation[C]], suppressed: Iterable[C]) -> list[Derivation[C]]:
    """The checker: every suppressed cell the published ones give away (empty: sound).

    Propagation's findings come first, with the relation that gave each; then any cell
    only the relations solved together give (`relation` None)."""
    hidden = list(dict.fromkeys(suppressed))
    found = propagate(relations, hidden)
    seen = {derivation.cell for derivation in found}
    for cell in determined(relations, hidden):
        if cell not in seen:
            found.append(Derivation(cell, None))
    return found


def suppress(
    values: Mapping[C, int],
    relations: Sequence[Relation[C]],
    order: Sequence[C] | None = None,
    low: int = LOW,
    high: int = HIGH,
) -> Suppression[C]:
    """Primary suppression, then complementary suppression until the checker passes.

    `order` ranks the cells for ties (default: the order of `values`). Every relation must
    hold for `values` (a table that does not add up is refused: ValueError)."""
    for relation in relations:
        if not relation.holds(values):
            raise ValueError(f"the table does not satisfy {relation.name or relation}")
    rank = {cell: i for i, cell in enumerate(order if order is not None else values)}
    first = primary(values, low, high)
    hidden = set(first)
    added: list[C] = []
    while found := derivable(relations, hidden):
        leak = found[0]
        holding = [leak.relation] if leak.relation is not None else []
        holding += [r for r in relations if leak.cell in r.cells and r is not leak.relation]
        choice = _complement(values, holding, hidden, rank)
        if choice is None:
            # No relation holding the leak has a published cell left, yet it is derivable:
            # widen to every relation that still publishes a cell.
            choice = _complement(values, relations, hidden, rank)
        if choice is None:  # pragma: no cover - everything is suppressed, nothing derives
            raise AssertionError("no cell left to suppress")
        hidden.add(choice)
        added.append(choice)
    return Suppression(primary=first, suppressed=frozenset(hidden), complementary=tuple(added))


def _complement(
    values: Mapping[C, int],
    relations: Iterable[Relation[C]],
    hidden: set[C],
    rank: Mapping[C, int],
) -> C | None:
    """The smallest published non-zero cell of the first relation that has one (a zero
    only when the relation publishes nothing else), ties broken by `rank`."""
    for relation in relations:
        published = [cell for cell in relation.cells if cell not in hidden]
        if not published:
            continue
        nonzero = [cell for cell in published if values[cell] != 0]
        pool = nonzero or published
        return min(pool, key=lambda cell: (values[cell], rank.get(cell, len(rank))))
    return None
