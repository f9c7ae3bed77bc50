"""Parquet reading: dictionary columns (pandas `category`) decoded, half floats widened, a name
held twice refused by name; read whole and in record batches alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcli.data.tables import TableSource, iter_batches, read_table
from mlcli.errors import DataError


def _read(path, streamed: bool) -> pa.Table:
    source = TableSource(paths=(path,), format="parquet")
    if streamed:
        return pa.Table.from_batches(list(iter_batches(source, batch_rows=7)))
    return read_table(source)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.one_of(st.none(), st.sampled_from(["red", "", "gr\u00fcn", "a/b", "\U0001f535"])),
        min_size=1,
        max_size=40,
    ),
    index_type=st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64()]),
)
def test_dictionary_columns_are_read_as_their_values(tmp_path, streamed, values, index_type):
    dictionary = pa.array(values, pa.string()).dictionary_encode()
    column = dictionary.cast(pa.dictionary(index_type, pa.string()))
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"colour": column, "n": np.arange(len(values))}), path)
    table = _read(path, streamed)
    assert table.schema.field("colour").type == pa.string()
    assert table.column("colour").to_pylist() == values


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_pandas_categories_and_half_floats(tmp_path, streamed):
    frame = pd.DataFrame(
        {
            "colour": pd.Categorical(["red", "blue", None, "red"]),
            "size": pd.Categorical([3, 1, 3, 2]),
            "half": np.array([0.5, 1.5, np.nan, 2.0], dtype=np.float16),
        }
    )
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    table = _read(path, streamed)
    assert not any(pa.types.is_dictionary(t) for t in table.schema.types)
    assert table.column("colour").to_pylist() == ["red", "blue", None, "red"]
    assert table.column("size").to_pylist() == [3, 1, 3, 2]
    assert table.schema.field("half").type == pa.float32()


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("names", [["a", "a"], ["x", "b", "x", "b", "c"], ["é/1", "é/1"]])
def test_a_name_held_twice_is_a_data_error_naming_it(tmp_path, streamed, names):
    path = tmp_path / "twice.parquet"
    pq.write_table(pa.table([pa.array([1, 2])] * len(names), names=names), path)
    repeated = ", ".join(repr(n) for n in sorted(set(n for n in names if names.count(n) > 1)))
    with pytest.raises(DataError, match=rf"^{path}: the table names {repeated} more than once"):
        _read(path, streamed)
