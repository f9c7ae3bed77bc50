"""Permutation importance on Arrow tables, with a known score and no model: the columns the
score reads rank first, a column it ignores scores exactly zero, values keep their types."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.evaluation.importance import permutation_importances, rows_taken


def _table(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Columns `strong`, `weak` (numbers) and `kind` (strings, some missing) drive the target;
    `noise` and `label` (strings) do not."""
    rng = np.random.default_rng(seed)
    strong, weak, noise = rng.normal(size=(3, rows))
    kind = rng.choice(["a", "b", None], rows).tolist()
    shift = np.array([1.0 if k == "a" else 0.0 for k in kind])
    target = 3.0 * strong + 0.5 * weak + 1.5 * shift
    table = pa.table(
        {
            "noise": noise,
            "weak": weak,
            "kind": pa.array(kind, pa.string()),
            "strong": strong,
            "label": rng.choice(["x", "y"], rows),
        }
    )
    return table, target


def _score(target: np.ndarray):
    """The negated mean squared error of the known function: higher is better."""

    def score(table: pa.Table) -> float:
        kind = pc.fill_null(pc.equal(table.column("kind"), "a"), False).to_numpy()
        found = 3.0 * table.column("strong").to_numpy() + 0.5 * table.column("weak").to_numpy()
        return -float(np.mean((found + 1.5 * kind - target) ** 2))

    return score


def test_columns_the_score_reads_rank_first_and_an_ignored_one_is_zero():
    table, target = _table(500, seed=1)
    baseline, found = permutation_importances(_score(target), table, repeats=4, seed=0)
    assert baseline == 0.0  # the score's own function: no error before shuffling
    assert [item.column for item in found[:3]] == ["strong", "kind", "weak"]
    for item in found[3:]:
        assert item.column in ("noise", "label")
        assert item.mean == 0.0 and item.std == 0.0 and item.repeats == (0.0,) * 4
    strong = found[0]
    assert len(strong.repeats) == 4 and strong.mean > 0 and strong.std >= 0
    assert strong.as_dict()["importance"] == strong.mean


def test_the_same_seed_gives_the_same_importances_and_another_seed_others():
    table, target = _table(200, seed=2)
    first = permutation_importances(_score(target), table, repeats=3, seed=5)
    again = permutation_importances(_score(target), table, repeats=3, seed=5)
    other = permutation_importances(_score(target), table, repeats=3, seed=6)
    assert first == again
    assert first[1][0].repeats != other[1][0].repeats


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_taking_rows_keeps_each_columns_type_and_values(rows, seed):
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "number": pa.array(rng.normal(size=rows)),
            "count": pa.array([None if i % 3 == 0 else i for i in range(rows)], pa.int64()),
            "text": pa.array(rng.choice(["a", "b", "c"], rows).tolist(), pa.string()),
        }
    )
    positions = np.stack([rng.permutation(rows) for _ in range(3)], axis=1)
    taken = rows_taken(table, positions.astype(np.float64))  # SHAP hands floats back
    assert taken.schema == table.schema
    for index, name in enumerate(table.column_names):
        expected = [table.column(name)[int(p)].as_py() for p in positions[:, index]]
        assert taken.column(name).to_pylist() == expected
