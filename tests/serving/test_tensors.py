"""TF Serving's TensorProtos read into model columns: every accepted dtype and shape gives the
values the client sent (hypothesis), a column may be keyed by its signature input name, and
each value the model cannot take is refused with the column and row named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tensorflow_serving", reason="needs the grpc extra")

from mlcli._tensorflow import import_tensorflow
from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import TargetSchema
from mlcli.serving.payloads import (
    BadRequestError,
    PayloadTooLargeError,
    signature_outputs,
)
from mlcli.serving.tensors import metadata_fields, read_inputs, write_outputs

tf = import_tensorflow()
SIGNATURE = ServingSignature(
    inputs={"capital-gain": "float32", "grade": "int64", "color": "string"},
    target=TargetSchema(column="y", task="binary", classes=["no", "yes"]),
)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _tensor(values: Any, dtype: Any = None, *, column: bool = False) -> Any:
    array = np.asarray(values, dtype=dtype)
    return tf.make_tensor_proto(array.reshape(-1, 1) if column else array)


def _inputs(rows: int = 2, **overrides: Any) -> dict[str, Any]:
    inputs = {
        "capital-gain": _tensor([1.5] * rows, np.float32),
        "grade": _tensor([3] * rows, np.int64),
        "color": _tensor(["red"] * rows, object),
    }
    inputs.update(overrides)
    return {name: tensor for name, tensor in inputs.items() if tensor is not None}


def _read(inputs: dict[str, Any], max_rows: int = 100) -> dict[str, np.ndarray]:
    return read_inputs(inputs, SIGNATURE, max_rows=max_rows).columns


finite32 = st.floats(width=32, allow_infinity=False)  # NaN included: a missing number


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(finite32, min_size=1, max_size=20),
    dtype=st.sampled_from([np.float32, np.float64]),
    column=st.booleans(),
)
def test_numbers_of_either_float_dtype_and_shape_arrive_as_sent(values, dtype, column):
    rows = len(values)
    columns = _read(_inputs(rows, **{"capital-gain": _tensor(values, dtype, column=column)}))
    got = columns["capital-gain"]
    assert got.shape == (rows, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got.reshape(-1), np.asarray(values, np.float32))


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=12), min_size=1, max_size=20))
def test_utf8_strings_arrive_as_text(texts):
    columns = _read(_inputs(len(texts), color=_tensor([t.encode() for t in texts], object)))
    assert columns["color"].reshape(-1).tolist() == texts


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=20),
    dtype=st.sampled_from([np.int32, np.int64, np.float64]),
)
def test_integers_arrive_as_int64_from_int_tensors_or_whole_floats(values, dtype):
    columns = _read(_inputs(len(values), grade=_tensor(values, dtype)))
    assert columns["grade"].dtype == np.int64
    assert columns["grade"].reshape(-1).tolist() == values


def test_booleans_and_integers_in_a_string_column_read_as_a_csv_would():
    columns = _read(_inputs(2, color=_tensor([True, False])))
    assert columns["color"].reshape(-1).tolist() == ["true", "false"]
    columns = _read(_inputs(2, color=_tensor([7, -1], np.int64)))
    assert columns["color"].reshape(-1).tolist() == ["7", "-1"]


def test_a_column_may_be_keyed_by_its_signature_input_name():
    name = SIGNATURE.names["capital-gain"]
    assert name != "capital-gain"
    inputs = _inputs(**{"capital-gain": None, name: _tensor([2.0, 4.0], np.float32)})
    assert _read(inputs)["capital-gain"].reshape(-1).tolist() == [2.0, 4.0]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("missing", {"color": None}, "lacks input(s) 'color'"),
    ("dtype", {"capital-gain": _tensor(["x", "y"], object)}, "found DT_STRING"),
    ("shape", {"grade": _tensor([[1, 2], [3, 4]], np.int64)}, "shape [rows] or [rows, 1]"),
    ("beyond float32", {"capital-gain": _tensor([1.0, 1e39])}, "'capital-gain', row 1"),
    (
        "infinite",
        {"capital-gain": _tensor([math.inf, 1.0], np.float32)},
        "row 0: expected a finite",
    ),
    ("not UTF-8", {"color": _tensor([b"ok", b"\xff"], object)}, "'color', row 1: expected UTF-8"),
    ("fraction", {"grade": _tensor([1.0, 2.5])}, "'grade', row 1: expected an integer"),
    ("float for text", {"color": _tensor([1.0, 2.0], np.float32)}, "found DT_FLOAT"),
    ("rows differ", {"grade": _tensor([1, 2, 3], np.int64)}, "differ in rows"),
]


@pytest.mark.parametrize(("overrides", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_value_the_model_cannot_take_is_refused_with_its_column(overrides, needle):
    with pytest.raises(BadRequestError, match=None) as raised:
        _read(_inputs(**overrides))
    assert type(raised.value) is BadRequestError
    assert needle in str(raised.value)


def test_values_that_do_not_fill_the_shape_are_refused_not_repeated():
    short = tf.make_tensor_proto([1.5], dtype=tf.float32, shape=[2])  # TF would repeat 1.5
    with pytest.raises(BadRequestError, match="shape says 2 values, the tensor holds 1"):
        _read(_inputs(**{"capital-gain": short}))


def test_rows_are_counted_from_the_shapes_before_any_value_is_read():
    many = tf.make_tensor_proto([0.0], dtype=tf.float32, shape=[101])
    with pytest.raises(PayloadTooLargeError, match="101 rows, the limit is 100"):
        _read(_inputs(101, **{"capital-gain": many}))
    with pytest.raises(BadRequestError, match="empty"):
        _read(_inputs(0))


def test_outputs_are_the_signatures_and_the_filter_picks_among_them():
    named = signature_outputs(np.array([[0.25], [0.75]], np.float32), SIGNATURE)
    both = write_outputs(named, [])
    assert set(both) == {"label", "probabilities"}
    assert tf.make_ndarray(both["label"]).tolist() == [b"no", b"yes"]
    np.testing.assert_allclose(tf.make_ndarray(both["probabilities"]), [[0.75, 0.25], [0.25, 0.75]])
    assert set(write_outputs(named, ["label"])) == {"label"}
    with pytest.raises(BadRequestError, match="output_filter names 'scores'"):
        write_outputs(named, ["scores"])


def test_metadata_fields_are_the_signature_def_and_mlclis_own():
    fields = metadata_fields("m", "1", SIGNATURE, ["signature_def", "mlcli"])
    signature_def = fields["signature_def"].signature_def["serving_default"]
    assert set(signature_def.inputs) == set(SIGNATURE.inputs)
    assert signature_def.inputs["grade"].dtype == tf.int64.as_datatype_enum
    assert list(fields["mlcli"]["classes"]) == ["no", "yes"]
    for fields_asked, needle in (([], "metadata_field is empty"), (["x"], "'x' is not supported")):
        with pytest.raises(BadRequestError, match=needle):
            metadata_fields("m", "1", SIGNATURE, fields_asked)
