from __future__ import annotations

import numpy as np
import pytest

from sidecar.errors import SchemaError
from sidecar.flow import FIELDS, FlowBatch, flags_from_letters, schema_table


def test_from_columns_missing_is_not_zero() -> None:
    b = FlowBatch.from_columns({"uid": ["a", "b"], "duration": [1.5, None], "orig_p": [80, None]}, "t")
    assert len(b) == 2
    assert np.isnan(b["duration"][1]) and b["duration"][0] == 1.5
    assert b["orig_p"].tolist() == [80, -1]
    assert np.isnan(b["orig_bytes"]).all()
    rows = list(b.iter_rows())
    assert rows[1]["duration"] is None and rows[1]["orig_p"] is None and rows[0]["orig_p"] == 80


def test_schema_checks_dtype_and_length() -> None:
    b = FlowBatch.empty("x")
    cols = dict(b.cols)
    cols["duration"] = np.zeros(0, dtype=np.float32)
    with pytest.raises(SchemaError):
        FlowBatch(cols, "x")
    cols = {f.name: np.full(2, f.missing, dtype=f.dtype) for f in FIELDS}
    cols["ts"] = np.zeros(3)
    with pytest.raises(SchemaError):
        FlowBatch(cols, "x")


def test_concat_and_take() -> None:
    a = FlowBatch.from_columns({"uid": ["a"]}, "s", label=["benign"])
    b = FlowBatch.from_columns({"uid": ["b", "c"]}, "s", label=["x", "y"])
    c = FlowBatch.concat([a, b])
    assert c["uid"].tolist() == ["a", "b", "c"] and c.label is not None and c.label.tolist()[2] == "y"
    assert c.take(np.array([2, 0]))["uid"].tolist() == ["c", "a"]


def test_flags_and_table() -> None:
    assert flags_from_letters("SA") == 2 | 16
    assert "orig_bytes" in schema_table()
