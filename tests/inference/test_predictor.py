"""The one path that runs a saved model on raw columns: Arrow tables in batches, and the
compiled call over numpy columns that the server uses; both equal Keras's own call."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest


def _keras_call(loaded, table: pa.Table) -> np.ndarray:
    """The saved model called by Keras itself on the table's model inputs."""
    import keras

    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import to_tensors

    inputs = to_tensors(model_inputs(table, loaded.schema, source="test"), loaded.schema)
    return keras.ops.convert_to_numpy(loaded.model(inputs, training=False))


@pytest.fixture(scope="module")
def table(trained_runs) -> pa.Table:
    rows = pa_csv.read_csv(trained_runs["data"]).slice(0, 45)
    colors = ["never-seen"] * 5 + rows.column("color").to_pylist()[5:]
    return rows.set_column(rows.column_names.index("color"), "color", pa.array(colors))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_outputs_in_batches_equal_keras_own_call(trained_runs, table, task):
    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    loaded = open_run(trained_runs[task])
    expected = _keras_call(loaded, table)
    width = 3 if task == "multiclass" else 1
    assert expected.shape == (45, width)
    for batch_rows in (8, 4096):  # several batches, one batch
        found = Predictor(loaded.model, loaded.schema, batch_rows=batch_rows).outputs(
            table, source="test"
        )
        np.testing.assert_allclose(found, expected, atol=1e-6)


def test_the_column_call_equals_the_outputs(trained_runs, table):
    from mlcli.inference.predictor import Predictor
    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.runs.loading import open_run

    loaded = open_run(trained_runs["multiclass"])
    predictor = Predictor(loaded.model, loaded.schema)
    columns = model_inputs(table, loaded.schema, source="test")
    call = predictor.column_call()
    np.testing.assert_allclose(call(columns), predictor.outputs(table, source="test"), atol=1e-6)
    one = {name: values[:1] for name, values in columns.items()}  # any number of rows
    assert call(one).shape == (1, 3)


def test_an_empty_table_gives_no_rows_of_the_models_width(trained_runs, table):
    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    loaded = open_run(trained_runs["multiclass"])
    outputs = Predictor(loaded.model, loaded.schema).outputs(table.slice(0, 0), source="test")
    assert outputs.shape == (0, 3)


def test_a_missing_column_is_a_data_error_naming_it(trained_runs, table):
    from mlcli.errors import DataError
    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    loaded = open_run(trained_runs["binary"])
    with pytest.raises(DataError, match="'review'"):
        Predictor(loaded.model, loaded.schema).outputs(table.drop(["review"]), source="t.csv")
