"""The protobuf helpers that split the model in memory read and write what ``onnx`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sidecar.engines import proto

MODEL = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "model" / "bnn.onnx"
onnx = pytest.importorskip("onnx")  # the dev extra; the runtime never imports it
from onnx import numpy_helper  # noqa: E402


def test_initializers_decode_like_onnx() -> None:
    blob = MODEL.read_bytes()
    g = proto.parse_model(blob)
    ref = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(blob).graph.initializer}
    assert set(g.inits) == set(ref) and len(ref) > 20
    for name, arr in ref.items():
        got = g.init_array(name)
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr), name
    assert [n.op for n in g.nodes] == [n.op_type for n in onnx.load_from_string(blob).graph.node]


ARRAYS = [
    np.array([-3, 0, 127], np.int8),
    np.arange(12, dtype=np.int32).reshape(3, 4) - 5,
    np.array([1.5, -0.0, np.nan], np.float32),
    np.array([2**40, -1], np.int64),
    np.zeros((0, 3), np.uint8),
    np.array(7, np.int64),
]


@pytest.mark.parametrize("arr", ARRAYS)
def test_encode_tensor_round_trips(arr: np.ndarray) -> None:
    t = onnx.TensorProto()
    t.ParseFromString(proto.encode_tensor("t", arr))
    back = numpy_helper.to_array(t)
    assert t.name == "t" and back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr, equal_nan=arr.dtype.kind == "f")
    assert np.array_equal(proto.decode_tensor(proto.encode_tensor("t", arr))[1], arr, equal_nan=arr.dtype.kind == "f")


def test_non_raw_tensor_fields_decode() -> None:
    for arr in (np.array([[-1, 2], [3, -4]], np.int32), np.array([5, -6], np.int64), np.array([0.25, -2.0], np.float32),
                np.array([-7, 8], np.int8)):  # fmt: skip
        t = onnx.helper.make_tensor("t", onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape, arr.ravel().tolist())
        name, got = proto.decode_tensor(t.SerializeToString())
        assert name == "t" and got.dtype == arr.dtype and np.array_equal(got, arr)


def test_split_models_pass_the_onnx_checker() -> None:
    from sidecar.engines.onnx_split import Split

    for rows in (True, False):
        sp = Split(MODEL.read_bytes(), rows=rows)
        for blob in (sp.stage1, sp.full, sp.residual_model):
            m = onnx.load_from_string(blob)
            onnx.checker.check_model(m, full_check=True)
            assert {p.key for p in m.metadata_props} >= {"bnn.features", "bnn.threshold1"}


def test_malformed_bytes_are_value_errors() -> None:
    blob = MODEL.read_bytes()
    for bad in (blob[:-7], b"\xff" * 16, b""):
        with pytest.raises(ValueError):
            g = proto.parse_model(bad)
            [g.init_array(k) for k in g.inits]
