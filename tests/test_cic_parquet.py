"""The CICFlowMeter Parquet reader on the real CSE-CIC-IDS2018 Parquet files (shared data).

Counts are checked against an independent count with plain pyarrow; the gzip wrapper cut in half
must be a counted skip; the 36-feature ``sample_flows`` file is skipped whole (it lacks the packet
and byte columns); ports are missing (-1 / NaN features), never 0.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import logging
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require

from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.sources.base import ReadStats
from sidecar.train.data import dataset_of, default_paths, parquet_paths, read_cic, user_paths

HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None
RAW = (
    "Bruteforce-Wednesday-14-02-2018_TrafficForML_CICFlowMeter.parquet.gz",
    "DDoS1-Tuesday-20-02-2018_TrafficForML_CICFlowMeter.parquet.gz",
)
SAMPLE = "sample_flows.parquet.gz"


@pytest.fixture(scope="module")
def folder(shared: Path) -> Path:
    require(HAVE_PYARROW, "pyarrow (the 'train' extra)", "BNN_REQUIRE_PYARROW")
    d = shared / "cic-ids2018" / "more" / "houssaynimaryame-cloud-intrusion-detection-cicids2018"
    assert d.is_dir(), d
    return d


def _table(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(gzip.decompress(path.read_bytes())))


def _read(path: Path, batch_size: int = 65536) -> tuple[list[Any], ReadStats]:
    stats = ReadStats()
    return list(read_cic(path, stats, batch_size=batch_size)), stats


@pytest.mark.parametrize("name", RAW)
def test_label_counts_match_pyarrow(folder: Path, name: str) -> None:
    t = _table(folder / name)
    labels = t.column("Label").to_pylist()  # independent: pyarrow decodes the dictionary itself
    want = Counter(labels)
    batches, stats = _read(folder / name, batch_size=2500)  # several batches, the last one short
    got = Counter(lab for b in batches for lab in b.label)
    assert got == want
    assert stats.read == stats.emitted == t.num_rows and not stats.skipped
    assert len(batches) == math.ceil(t.num_rows / 2500)
    for b in batches:
        assert b.source == "cic-parquet"
        assert (b["resp_p"] == -1).all() and (b["orig_p"] == -1).all()
        assert np.isnan(b["ts"]).all()


def test_brief_counts(folder: Path) -> None:
    """The label counts the data README gives (a second, human-written reference)."""
    got = {n: Counter(lab for b in _read(folder / n)[0] for lab in b.label) for n in RAW}
    assert got[RAW[0]] == {"Benign": 3000, "SSH-Bruteforce": 3000, "FTP-BruteForce": 53}
    assert got[RAW[1]] == {"Benign": 3000, "DDoS attacks-LOIC-HTTP": 3000}


def test_canonical_columns_equal_raw_values(folder: Path) -> None:
    t = _table(folder / RAW[0])
    (b,), _ = _read(folder / RAW[0])
    raw = {c: np.asarray(t.column(c).to_numpy(), dtype=np.float64) for c in t.column_names if c != "Label"}
    np.testing.assert_array_equal(b["duration"], raw["Flow Duration"] * 1e-6)
    np.testing.assert_array_equal(b["orig_bytes"], raw["Fwd Packets Length Total"])
    np.testing.assert_array_equal(b["resp_bytes"], raw["Bwd Packets Length Total"])
    np.testing.assert_array_equal(b["orig_pkts"], raw["Total Fwd Packets"])
    np.testing.assert_array_equal(b["resp_pkts"], raw["Total Backward Packets"])
    # float32 values are widened as stored (1944/25 reads back as 77.76000213623047)
    mean = b.extra["Fwd Pkt Len Mean"]
    assert mean.dtype == np.float64
    np.testing.assert_array_equal(mean, raw["Fwd Packet Length Mean"])
    np.testing.assert_array_equal(b.extra["Init Fwd Win Byts"], raw["Init Fwd Win Bytes"])
    protos = Counter(b["proto"].tolist())
    want = Counter({6: "tcp", 17: "udp"}.get(int(p), str(int(p))) for p in raw["Protocol"].tolist())
    assert protos == want


def test_port_features_missing_not_zero(folder: Path) -> None:
    (b,), _ = _read(folder / RAW[1])
    X = extract(b)
    for nm in ("log_resp_port", "resp_port_well_known"):
        assert np.isnan(X[:, FEATURE_NAMES.index(nm)]).all(), nm
    for nm in ("log_duration", "log_orig_pkts", "log_resp_pkts", "log_orig_bytes", "log_resp_bytes"):
        assert np.isfinite(X[:, FEATURE_NAMES.index(nm)]).all(), nm  # the columns the features need are read
    syn = X[:, FEATURE_NAMES.index("flag_syn")]
    np.testing.assert_array_equal(syn, (b.extra["SYN Flag Cnt"] > 0).astype(np.float32))


def test_sample_flows_skipped_whole(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar.sources.cic_parquet"):
        batches, stats = _read(folder / SAMPLE)
    n = _table(folder / SAMPLE).num_rows
    assert batches == []
    assert stats.read == n and stats.emitted == 0 and dict(stats.skipped) == {"missing-columns": n}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "Tot Fwd Pkts" in msgs[0] and SAMPLE in msgs[0]


def test_gzip_cut_in_half_is_counted(folder: Path, tmp_path: Path) -> None:
    data = (folder / RAW[0]).read_bytes()
    cut = tmp_path / RAW[0]
    cut.write_bytes(data[: len(data) // 2])
    batches, stats = _read(cut)
    assert batches == [] and stats.emitted == 0
    assert dict(stats.skipped) == {"truncated-input": 1}


def test_parquet_cut_and_garbage_are_counted(folder: Path, tmp_path: Path) -> None:
    data = gzip.decompress((folder / RAW[1]).read_bytes())
    half = tmp_path / "half.parquet"
    half.write_bytes(data[: len(data) // 2])  # footer gone
    junk = tmp_path / "junk.parquet.gz"
    junk.write_bytes(gzip.compress(b"Flow Duration,Label\n1,Benign\n"))
    for p in (half, junk):
        batches, stats = _read(p)
        assert batches == [] and dict(stats.skipped) == {"bad-parquet": 1}, p


def test_plain_parquet_inf_nan_and_category_label(folder: Path, tmp_path: Path) -> None:
    """A plain .parquet with a null, an Infinity and a NaN: three counted inf-nan skips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = _table(folder / RAW[1]).slice(0, 10)
    i = t.column_names.index("Flow Bytes/s")
    col = t.column(i).to_numpy().copy()
    col[2], col[5] = np.inf, np.nan
    t = t.set_column(i, "Flow Bytes/s", pa.array(col))
    j = t.column_names.index("Fwd Packet Length Mean")
    t = t.set_column(j, "Fwd Packet Length Mean", pa.array([None if k == 7 else v for k, v in
                                                            enumerate(t.column(j).to_pylist())], pa.float32()))
    assert pa.types.is_dictionary(t.schema.field("Label").type)
    p = tmp_path / "x.parquet"
    pq.write_table(t, p)
    (b,), stats = _read(p)
    assert stats.read == 10 and stats.emitted == 7 and dict(stats.skipped) == {"inf-nan": 3}
    assert list(b["uid"]) == [f"x.parquet:{k}" for k in (1, 2, 4, 5, 7, 9, 10)]
    want = [lab for k, lab in enumerate(t.column("Label").to_pylist()) if k not in (2, 5, 7)]
    assert list(b.label) == want


def test_parquet_is_opt_in_for_the_shared_layout(shared: Path, tmp_path: Path) -> None:
    # the shipped model's data set is the CSVs only (measured: the port-less Parquet rows hurt);
    # `train --parquet` adds the shared Parquet files, and a user's own folder is read whole
    assert not [p for p in default_paths(shared) if ".parquet" in p.name]
    pq = parquet_paths(shared)
    assert sorted(p.name for p in pq) == sorted([*RAW, SAMPLE])
    assert {dataset_of(p) for p in pq} == {"cse-cic-ids2018"}
    mine = tmp_path / "mine"
    (mine / "day1").mkdir(parents=True)
    shutil.copy(pq[0], mine / "day1" / pq[0].name)
    shutil.copy(shared / "cic-ids2018" / "more" / "mahdieslaminet-Intrusion-detection-system" / "ids2018_sample.csv.gz",
                mine / "b.csv.gz")
    (mine / "notes.txt").write_text("not data\n")
    assert [p.name for p in user_paths(mine)] == ["b.csv.gz", pq[0].name]


def test_missing_pyarrow_is_input_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    from sidecar.errors import InputError
    from sidecar.sources import cic_parquet

    real = builtins.__import__

    def no_pyarrow(name: str, *a: Any, **k: Any) -> Any:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(InputError, match="train"):
        list(cic_parquet.read_path(tmp_path / "x.parquet", ReadStats()))


@pytest.mark.parametrize(
    "rel",
    ["cic-ids2018/SQL Injection.csv.gz", "cic-ids2017-improved/Web_Attack_-_XSS_18.csv.gz"],
)
def test_same_batch_as_csv_reader(shared: Path, tmp_path: Path, rel: str) -> None:
    """A real CIC CSV written as Parquet (pyarrow's own CSV parser and type inference) reads back
    as the CSV reader reads the CSV: ports, IPs, timestamps, amounts, labels, extra columns."""
    require(HAVE_PYARROW, "pyarrow (the 'train' extra)", "BNN_REQUIRE_PYARROW")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from sidecar.sources import cic_csv
    from sidecar.sources.cic_parquet import PARQUET_ALIASES

    src = shared / rel
    out = tmp_path / (src.name + ".parquet")
    pq.write_table(pacsv.read_csv(io.BytesIO(gzip.decompress(src.read_bytes()))), out)
    s1, s2 = ReadStats(), ReadStats()
    (a,), (b,) = list(cic_csv.read_path(src, s1)), list(read_cic(out, s2))
    assert (s1.read, s1.emitted, s1.skipped) == (s2.read, s2.emitted, s2.skipped)
    for k, col in a.cols.items():
        if k == "uid" and a["uid"][0].startswith(src.name):  # no Flow ID: file:line vs file:row
            continue
        if col.dtype.kind == "f":
            np.testing.assert_array_equal(col, b[k], err_msg=k)
        else:
            assert list(col) == list(b[k]), k
    assert a.label is not None and b.label is not None and list(a.label) == list(b.label)
    renamed = {PARQUET_ALIASES.get(k, k): v for k, v in a.extra.items()}  # CIC-IDS2017 packet-length names
    assert renamed.keys() == b.extra.keys()
    for k, v in renamed.items():
        np.testing.assert_array_equal(v, b.extra[k], err_msg=k)
    if "2017" in rel:
        assert np.isfinite(b["ts"]).all() and (b["resp_p"] >= 0).all() and all(b["orig_h"])


def test_string_typed_numbers_follow_csv_rules(folder: Path, tmp_path: Path) -> None:
    """A numeric column stored as text (as a CSV-to-Parquet dump may leave it): "Infinity" and empty
    cells are inf-nan skips, an unparseable cell a bad-number skip, the rest parsed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = _table(folder / RAW[1]).slice(0, 6)
    i = t.column_names.index("Flow Bytes/s")
    cells = [repr(v) for v in t.column(i).to_pylist()]
    cells[1], cells[3], cells[4] = "Infinity", "", "12x"
    t = t.set_column(i, "Flow Bytes/s", pa.array(cells, pa.string()))
    p = tmp_path / "s.parquet"
    pq.write_table(t, p)
    (b,), stats = _read(p)
    assert dict(stats.skipped) == {"inf-nan": 2, "bad-number": 1} and stats.emitted == 3
    np.testing.assert_array_equal(b.extra["Flow Byts/s"], [float(cells[k]) for k in (0, 2, 5)])


def test_stream_loader_reads_parquet_like_the_in_memory_loader(shared: Path, tmp_path: Path) -> None:
    # `train --stream` (the full-dataset path) must send Parquet files to the Parquet reader too
    pytest.importorskip("tqdm")
    from sidecar.train.data import load_table
    from sidecar.train.stream import stream_table

    paths = [p for p in parquet_paths(shared) if p.name in RAW]
    s = stream_table(paths, tmp_path / "wd", progress=False, chunk_rows=1024)
    t = load_table(paths)
    assert s.report["rows"] == t.report["rows"] > 11_000
    assert np.array_equal(np.asarray(s.X).view(np.uint32), t.X.view(np.uint32)) and np.array_equal(s.y, t.y)


def _train(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sidecar.cli.main", "-q", "train", *args],
                          capture_output=True, timeout=600)


def test_train_rejects_bad_thermometer_steps(tmp_path: Path) -> None:
    r = _train(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--thermometer-steps", "0"])
    assert r.returncode == 1 and b"--thermometer-steps must be 1..63" in r.stderr


@pytest.mark.slow
def test_train_cli_reads_a_users_parquet_folder(shared: Path, folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = tmp_path / "data"
    data.mkdir()
    pq = next(p for p in parquet_paths(shared) if p.name == RAW[0])
    (data / pq.name).symlink_to(pq)
    (data / "sqli.csv.gz").symlink_to(shared / "cic-ids2018" / "SQL Injection.csv.gz")
    out = tmp_path / "out"
    r = _train(["--data", str(data), "--out", str(out), "--epochs", "1", "--no-progress", "--thermometer-steps", "3"])
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    rep = json.loads((out / "data_report.json").read_text())
    files = {Path(row["file"]).name for row in rep["table"]}
    assert files == {pq.name, "sqli.csv.gz"}
    kept = sum(row["kept"] for row in rep["table"] if Path(row["file"]).name == pq.name)
    assert kept == 6053  # Benign 3,000 + SSH-Bruteforce 3,000 + FTP-BruteForce 53 (README)
    fit = json.loads((out / "metrics.json").read_text())["metrics"]["fit"]
    assert fit["thermometer_steps"] == 3 and fit["n_bits_s1"] <= 3 * 20 + 20
