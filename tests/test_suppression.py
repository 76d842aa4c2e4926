"""Small-cell suppression (app/reports/suppression.py): primary, complementary, the checker."""

from __future__ import annotations

import random

import pytest

from app.reports.suppression import (
    Relation,
    derivable,
    determined,
    primary,
    propagate,
    suppress,
)

Cell = tuple[int, str]


def _grid(rows: list[dict[str, int]]) -> dict[Cell, int]:
    """A table of facility rows; appends the total row."""
    columns = list(rows[0])
    total = {c: sum(row[c] for row in rows) for c in columns}
    return {(i, c): row[c] for i, row in enumerate([*rows, total]) for c in columns}


def _relations(rows: int, columns: list[str]) -> list[Relation[Cell]]:
    """Column sums to the last row, and a + b = t in every row."""
    total = rows - 1
    found: list[Relation[Cell]] = [
        Relation((total, c), tuple((i, c) for i in range(total))) for c in columns
    ]
    found += [Relation((i, "t"), ((i, "a"), (i, "b"))) for i in range(rows)]
    return found


def test_primary_suppresses_exactly_the_counts_from_1_to_10() -> None:
    values = {"zero": 0, "one": 1, "ten": 10, "eleven": 11, "big": 500}
    assert primary(values) == {"one", "ten"}


def test_a_single_suppressed_cell_in_a_relation_is_derivable() -> None:
    relation = Relation("total", ("x", "y", "z"))
    found = derivable([relation], {"y"})
    assert [d.cell for d in found] == ["y"]
    assert found[0].relation is relation
    assert derivable([relation], {"y", "z"}) == []


def test_propagation_follows_a_chain() -> None:
    # y alone in r1 -> known; then z is alone in r2 -> known; w stays hidden with v.
    r1 = Relation("t1", ("x", "y"))
    r2 = Relation("t2", ("y", "z"))
    r3 = Relation("t3", ("v", "w"))
    found = propagate([r2, r3, r1], {"y", "z", "v", "w"})
    assert [d.cell for d in found] == ["y", "z"]
    assert [d.relation for d in found] == [r1, r2]


def test_the_checker_catches_what_only_relations_together_give() -> None:
    # No relation has one unknown, yet (x + y + z) - (x + y) gives z.
    r1 = Relation("a", ("x", "y"))
    r2 = Relation("b", ("x", "y", "z"))
    assert propagate([r1, r2], {"x", "y", "z"}) == []
    assert determined([r1, r2], {"x", "y", "z"}) == ["z"]
    assert [(d.cell, d.relation) for d in derivable([r1, r2], {"x", "y", "z"})] == [("z", None)]


def test_the_checker_catches_a_hand_made_derivable_table() -> None:
    # A 2x3 table (a + b = t) with totals, where the publisher hid only the small cells.
    values = _grid([{"a": 5, "b": 20, "t": 25}, {"a": 30, "b": 40, "t": 70}])
    relations = _relations(3, ["a", "b", "t"])
    hidden = primary(values)
    assert hidden == {(0, "a")}
    # Row 0: t - b gives a; column a: the total minus row 1 gives it too.
    assert [d.cell for d in derivable(relations, hidden)] == [(0, "a")]


def test_a_bridge_between_two_hidden_cycles_is_derivable() -> None:
    # Rows x columns, margins known. Two 2x2 cycles of hidden cells joined by one cell:
    # every relation holds at least two hidden cells, but the bridge is fixed.
    def cell(r: int, c: int) -> str:
        return f"{r}{c}"

    relations = [Relation(f"R{r}", tuple(cell(r, c) for c in range(4))) for r in range(4)]
    relations += [Relation(f"C{c}", tuple(cell(r, c) for r in range(4))) for c in range(4)]
    cycle_a = {cell(0, 0), cell(0, 1), cell(1, 0), cell(1, 1)}
    cycle_b = {cell(2, 2), cell(2, 3), cell(3, 2), cell(3, 3)}
    bridge = cell(1, 2)
    hidden = cycle_a | cycle_b | {bridge}
    assert propagate(relations, hidden) == []
    assert determined(relations, hidden) == [bridge]
    assert [d.cell for d in derivable(relations, hidden)] == [bridge]


def test_complementary_suppression_hides_the_smallest_other_cell() -> None:
    values = _grid([{"a": 5, "b": 20, "t": 25}, {"a": 30, "b": 40, "t": 70}])
    relations = _relations(3, ["a", "b", "t"])
    outcome = suppress(values, relations)
    assert outcome.primary == {(0, "a")}
    assert outcome.suppressed >= outcome.primary
    assert derivable(relations, outcome.suppressed) == []
    # Column a gives (0, a) first: its smallest other cell is (1, a) = 30; then row 0 gives
    # it (b = 20), then row 1 gives (1, a) (b = 40): a 2x2 cycle, which nothing solves.
    assert outcome.complementary == ((1, "a"), (0, "b"), (1, "b"))
    assert outcome.suppressed == {(0, "a"), (0, "b"), (1, "a"), (1, "b")}


def test_ties_are_broken_by_the_cells_order() -> None:
    values = {"t": 55, "x": 5, "y": 25, "z": 25}
    relation = Relation("t", ("x", "y", "z"))
    assert suppress(values, [relation]).suppressed == {"x", "y"}
    assert suppress(values, [relation], order=["t", "x", "z", "y"]).suppressed == {"x", "z"}


def test_a_table_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="does not satisfy"):
        suppress({"t": 3, "x": 1, "y": 1}, [Relation("t", ("x", "y"))])


def test_nothing_small_nothing_hidden() -> None:
    values = _grid([{"a": 0, "b": 20, "t": 20}, {"a": 30, "b": 0, "t": 30}])
    assert suppress(values, _relations(3, ["a", "b", "t"])).suppressed == set()


COLUMNS = ["t", "a", "b", *(f"c{i}" for i in range(8))]


def _random_table(rng: random.Random, facilities: int) -> dict[Cell, int]:
    """A table of facility rows (a + b = t, other columns free) and its total row."""
    rows = []
    for _ in range(facilities):
        a = rng.choice([0, rng.randint(1, 10), rng.randint(11, 300)])
        b = rng.choice([0, rng.randint(1, 10), rng.randint(11, 60)])
        row = {"t": a + b, "a": a, "b": b}
        for column in COLUMNS[3:]:
            row[column] = rng.choice([0, 0, rng.randint(1, 12), rng.randint(11, 80)])
        rows.append(row)
    total = {c: sum(row[c] for row in rows) for c in COLUMNS}
    return {(i, c): row[c] for i, row in enumerate([*rows, total]) for c in COLUMNS}


@pytest.mark.parametrize("seed", range(60))
def test_random_tables_always_pass_the_checker(seed: int) -> None:
    rng = random.Random(seed)
    facilities = rng.randint(1, 6)
    values = _random_table(rng, facilities)
    relations = _relations(facilities + 1, COLUMNS)
    outcome = suppress(values, relations)
    assert outcome.primary == primary(values)
    assert outcome.suppressed >= outcome.primary
    assert derivable(relations, outcome.suppressed) == []
    # Deterministic: the same table gives the same cells.
    assert suppress(dict(values), relations).suppressed == outcome.suppressed
