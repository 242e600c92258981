"""MicroBatcher: size/age closing, columnar slicing, tags travel with the last record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sidecar.batching import MicroBatcher, slice_batch
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

SAMPLES = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "samples"


@pytest.fixture(scope="module")
def real() -> FlowBatch:
    stats = ReadStats()
    b = FlowBatch.concat(list(read_path(SAMPLES / "ctu-sme-11.conn.log.labeled.gz", "auto", stats)))
    assert len(b) == 766
    return b


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _uids(bs: list[FlowBatch]) -> list[str]:
    return [u for b in bs for u in b["uid"].tolist()]


def test_closes_at_n_records_and_keeps_order(real: FlowBatch) -> None:
    clk = Clock()
    mb = MicroBatcher(100, 50, clock=clk)
    out = []
    for start in range(0, 766, 37):  # odd piece sizes: pieces get sliced across batches
        out += mb.add(slice_batch(real, start, min(766, start + 37)))
    assert [len(c.batch) for c in out] == [100] * 7
    assert mb.pending == 66
    rest = mb.flush()
    assert rest is not None and len(rest.batch) == 66
    got = [c.batch for c in out] + [rest.batch]
    assert _uids(got) == real["uid"].tolist()
    for name in ("ts", "orig_p", "duration", "orig_flags"):
        np.testing.assert_array_equal(np.concatenate([b[name] for b in got]), real[name])
    assert all(isinstance(b.cols["ts"], np.ndarray) for b in got)
    assert mb.flush() is None


def test_closes_t_ms_after_first_record(real: FlowBatch) -> None:
    clk = Clock()
    mb = MicroBatcher(1000, 50, clock=clk)
    assert mb.deadline() is None and mb.poll() is None
    assert mb.add(slice_batch(real, 0, 10)) == []
    assert mb.deadline() == pytest.approx(100.05)
    clk.t += 0.03
    assert mb.add(slice_batch(real, 10, 20)) == []  # a later record does not extend the deadline
    assert mb.poll() is None
    clk.t += 0.0199
    assert mb.poll() is None
    clk.t += 0.0002
    c = mb.poll()
    assert c is not None and len(c.batch) == 20 and c.opened == pytest.approx(100.0)
    assert mb.pending == 0 and mb.deadline() is None


def test_tags_go_with_the_batch_holding_their_last_record(real: FlowBatch) -> None:
    clk = Clock()
    mb = MicroBatcher(100, 50, clock=clk)
    assert mb.add(slice_batch(real, 0, 60), tag="a") == []
    out = mb.add(slice_batch(real, 60, 250), tag="b")  # piece b ends in the third batch
    assert [c.tags for c in out] == [["a"], []]
    assert mb.pending == 50
    # an empty tagged batch while records are open waits for them ...
    assert mb.add(FlowBatch.empty(), tag="c") == []
    rest = mb.flush()
    assert rest is not None and rest.tags == ["b", "c"] and len(rest.batch) == 50
    # ... and completes at once when nothing is open
    done = mb.add(FlowBatch.empty(), tag="d")
    assert len(done) == 1 and done[0].tags == ["d"] and len(done[0].batch) == 0
    assert mb.add(FlowBatch.empty()) == []


def test_one_big_batch_is_split_into_views(real: FlowBatch) -> None:
    mb = MicroBatcher(256, 50, clock=Clock())
    out = mb.add(real, tag="x")
    assert [len(c.batch) for c in out] == [256, 256]
    assert all(c.tags == [] for c in out)
    assert np.shares_memory(out[0].batch["duration"], real["duration"])
    rest = mb.flush()
    assert rest is not None and rest.tags == ["x"] and len(rest.batch) == 254


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(0, 50)
    with pytest.raises(ValueError):
        MicroBatcher(10, 0)


def test_a_batch_never_mixes_source_formats(real: FlowBatch) -> None:
    """Zeek + Suricata on one box: the feature code reads the batch's source (Zeek's unset-duration
    rule) and the scorer counts per source, so records of two formats must not share a batch. Zeek
    pieces interleaved with real eve pieces get exactly the verdicts of the Zeek log scored alone;
    in one mixed batch, the Zeek records with an unset duration would not."""
    from sidecar.scorer import make_scorer

    model = SAMPLES.parent / "model" / "bnn.onnx"
    eve = FlowBatch.concat(list(read_path(SAMPLES.parent.parent.parent / "tests" / "data" / "lab" / "eve"
                                          / "benign.eve.json.gz", "auto", ReadStats())))
    mb = MicroBatcher(1024, 50.0, clock=Clock())
    closed = []
    for k, i in enumerate(range(0, len(real), 100)):  # 100 Zeek records, then 20 eve records, ...
        closed += mb.add(slice_batch(real, i, min(i + 100, len(real))))
        closed += mb.add(slice_batch(eve, 20 * k, 20 * k + 20))
    last = mb.flush()
    closed += [last] if last is not None else []
    assert [c.batch.source for c in closed] == ["zeek-tsv", "eve"] * 8
    assert _uids([c.batch for c in closed if c.batch.source == "zeek-tsv"]) == real["uid"].tolist()

    sc, alone = make_scorer(model, "onnx"), make_scorer(model, "onnx").score(real)
    zeek = [sc.score(c.batch) for c in closed if c.batch.source == "zeek-tsv"]
    for k in ("score", "malicious", "cls", "stage"):
        np.testing.assert_array_equal(np.concatenate([getattr(v, k) for v in zeek]), getattr(alone, k))
    # the hazard this guards against: the same records in one mixed batch score differently
    unset = np.flatnonzero(np.isnan(real["duration"]))
    assert len(unset) == 6
    mixed = make_scorer(model, "onnx").score(FlowBatch.concat([real, eve]))
    assert mixed.flows.source == "mixed"
    assert not np.array_equal(mixed.score[unset], alone.score[unset])


def test_pieces_of_two_sources_of_one_format_do_not_share_a_batch(real: FlowBatch) -> None:
    mb = MicroBatcher(1024, 50.0, clock=Clock())
    closed = mb.add(slice_batch(real, 0, 10), key="zeek-a")
    closed += mb.add(slice_batch(real, 10, 20), key="zeek-a")
    closed += mb.add(slice_batch(real, 20, 25), key="zeek-b")
    assert [(c.key, len(c.batch)) for c in closed] == [("zeek-a", 20)]
    last = mb.flush()
    assert last is not None and (last.key, len(last.batch)) == ("zeek-b", 5)
