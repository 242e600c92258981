"""The whole model: stage-1 BNN screen + stage-2 stacked BNN, trained and exported together.

:func:`fit_cascade` trains both stages on one training set and returns the contract towers
plus the float post-processing constants; :func:`predict` runs the exact integer forward
(:func:`sidecar.train.bnn.int_forward`) and the scorer's own post-processing
(:meth:`sidecar.scorer.Scorer.post`), so evaluation numbers are what the engines produce.
:func:`train_and_export` is what ``bnn-sidecar train`` runs: stratified 80/20 split
(seed), fit, held-out metrics (screen alone and cascade), ONNX export with metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.features.labels import FAMILIES
from sidecar.features.schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from sidecar.scorer import ModelMeta, Scorer
from sidecar.train import bnn, stage2

log = logging.getLogger(__name__)

#: stage-1 decision threshold on p1 (the screen): below 0.5 so the screen favours recall
#: (p1 >= sigmoid(-1) = 0.269); stage 2 then vetoes false positives among what passes it.
THRESHOLD1 = float(1.0 / (1.0 + np.exp(1.0)))
#: thermometer quantiles are fitted on a random sample of this many rows when there are more
THERMO_SAMPLE = 2_000_000
#: share of the flagged training rows held back to calibrate stage 2's decision offset (stacked)
CALIBRATION_SHARE = 0.2
#: stage 2 kinds: ``committee`` (default: a second BNN must agree) or ``stacked`` (sidecar.train.stage2)
STAGE2_KINDS = ("committee", "stacked")
#: the committee member's init seed is the training seed plus this
COMMITTEE_SEED = 1


@dataclass
class Cascade:
    towers: dict[str, dict[str, Any]]
    meta: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    def model_meta(self) -> ModelMeta:
        return ModelMeta.from_props(
            self.meta | {"bnn.features": json.dumps(list(FEATURE_NAMES))}
        )


def fit_cascade(
    X: np.ndarray,
    y_fam: np.ndarray,
    seed: int = 0,
    epochs: int = 20,
    s2_epochs: int = 20,
    hidden: tuple[int, ...] = bnn.HIDDEN,
    s2_hidden: tuple[int, int, int] = stage2.S2_HIDDEN,
    progress: bool = False,
    n_thresh: int = bnn.N_THRESH,
    stage2_kind: str = "committee",
) -> Cascade:
    """Train stage 1 on ``(X, y_fam)``, then stage 2: by default (``committee``) a second BNN of the
    same shape on the same rows from another initialisation, whose own screen must agree; with
    ``stacked``, the stacked model of :mod:`sidecar.train.stage2` on the rows stage 1 flags."""
    if stage2_kind not in STAGE2_KINDS:
        raise ValueError(f"stage2_kind must be one of {STAGE2_KINDS}, got {stage2_kind!r}")
    t0 = time.time()
    # thermometer quantiles from at most THERMO_SAMPLE rows (all rows of the shipped data set)
    if len(X) > THERMO_SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(len(X), THERMO_SAMPLE, replace=False))
        th = bnn.fit_thermometer(np.asarray(X[pick]), n_thresh)
    else:
        th = bnn.fit_thermometer(np.asarray(X), n_thresh)
    model = bnn.train_model(X, y_fam, seed=seed, epochs=epochs, hidden=hidden, progress=progress, thermo=th)
    s1 = bnn.export_tower(model, th)
    logit = bnn.int_logits_chunked(s1, X, keys=("bin_logit",))["bin_logit"]
    # p1 >= THRESHOLD1 with bin_offset 0  <=>  logit * bin_scale >= log(t / (1 - t))
    z1 = float(np.log(THRESHOLD1 / (1 - THRESHOLD1)))
    flagged = logit * s1["bin_scale"] >= z1
    yb = (y_fam != 0).astype(np.int64)
    info: dict[str, Any] = {
        "stage1_seconds": round(time.time() - t0, 1),
        "thermometer_steps": n_thresh,
        "n_bits_s1": th.n_bits,
        "train_flagged": int(flagged.sum()),
        "train_flagged_benign": int((flagged & (yb == 0)).sum()),
    }
    if stage2_kind == "committee":
        return _fit_committee(X, y_fam, th, s1, flagged, seed, epochs, hidden, progress, info, t0)
    Xf, yf, lf = np.asarray(X[np.flatnonzero(flagged)]), yb[flagged], logit[flagged]
    cal = np.random.default_rng(seed).random(len(yf)) < CALIBRATION_SHARE
    inp = stage2.fit_inputs(s1, Xf[~cal], lf[~cal])
    net = stage2.train_stage2(
        inp, Xf[~cal], yf[~cal], s1, seed=seed, epochs=s2_epochs, hidden=s2_hidden, progress=progress
    )
    s2 = stage2.export_stage2(net, inp, s1)
    s2_offset = stage2.calibrate_offset(bnn.int_forward(s2, Xf[cal])["bin_logit"], s2["s2_scale"], yf[cal])
    info["s2_offset"] = s2_offset
    info["s2_train_rows"] = int((~cal).sum())
    info["s2_calibration_rows"] = int(cal.sum())
    # exactness: integer tower == torch eval-mode stage 2 (up to head quantisation)
    ref = stage2.torch_logit(net, inp, s1, Xf[:2000])
    got = bnn.int_forward(s2, Xf[:2000])["bin_logit"] * s2["s2_scale"]
    info["s2_head_max_abs_err"] = float(np.abs(ref - got).max()) if len(ref) else 0.0
    info["s2_sign_agreement"] = float(((ref >= 0) == (got >= 0)).mean()) if len(ref) else 1.0
    info["n_bits_s2"] = inp.thermo.n_bits
    info["seconds"] = round(time.time() - t0, 1)
    meta = _meta(s1, float(s2["s2_scale"]), repr(s2_offset), "0.5", "stacked")
    return Cascade({"s1": s1, "s2": s2}, meta, info)


def _meta(s1: dict[str, Any], s2_scale: float, s2_offset: str, threshold2: str, kind: str) -> dict[str, str]:
    """The post-processing constants the scorer reads (``metadata_props``)."""
    return {
        "bnn.families": json.dumps(list(FAMILIES)),
        "bnn.bin_scale": repr(float(s1["bin_scale"])),
        "bnn.bin_offset": "0.0",
        "bnn.s2_scale": repr(s2_scale),
        "bnn.s2_offset": s2_offset,
        "bnn.threshold1": repr(THRESHOLD1),
        "bnn.threshold2": threshold2,
        "bnn.stage2": kind,
    }


def _fit_committee(
    X: np.ndarray,
    y_fam: np.ndarray,
    th: bnn.Thermometer,
    s1: dict[str, Any],
    flagged: np.ndarray,
    seed: int,
    epochs: int,
    hidden: tuple[int, ...],
    progress: bool,
    info: dict[str, Any],
    t0: float,
) -> Cascade:
    """Stage 2 = a committee member: the stage-1 recipe from init seed ``seed + COMMITTEE_SEED``.

    Two BNNs fitted to the same rows agree on what the data pins down and disagree, each in its
    own way, on records unlike any training row; flagging only what both flag removes much of
    the second kind (measured in the model card). The member's tower keeps its binary head
    (contract head ``s2``; its verdict is its own screen, p2 >= THRESHOLD1) and its family head
    (contract head ``fam`` of tower ``s2``): the scorer names a flagged flow's family by both
    members' family logits, each times its scale (``bnn.fam_scale``, ``bnn.s2_fam_scale``).
    """
    m2 = bnn.train_model(X, y_fam, seed=seed + COMMITTEE_SEED, epochs=epochs, hidden=hidden, progress=progress,
                         thermo=th)
    t2 = bnn.export_tower(m2, th)
    s2 = {k: t2[k] for k in ("thermo_feat", "thermo_thr", "nan_feat", "layers")}
    s2 |= {"Ws2": t2["Wbin"], "bs2": t2["bbin"], "s2_scale": t2["bin_scale"], "Wfam": t2["Wfam"], "bfam": t2["bfam"],
           "fam_scale": t2["fam_scale"]}
    logit2 = bnn.int_logits_chunked(s2, X, keys=("bin_logit",))["bin_logit"]
    z1 = float(np.log(THRESHOLD1 / (1 - THRESHOLD1)))
    both = flagged & (logit2 * t2["bin_scale"] >= z1)  # ``flagged``: stage 1's screen on X, computed once
    info["stage2"] = "committee"
    info["committee_seed"] = seed + COMMITTEE_SEED
    info["train_flagged_by_both"] = int(both.sum())
    info["train_flagged_benign_by_both"] = int((both & (y_fam == 0)).sum())
    info["seconds"] = round(time.time() - t0, 1)
    meta = _meta(s1, float(t2["bin_scale"]), "0.0", repr(THRESHOLD1), "committee")
    meta |= {"bnn.fam_scale": repr(float(s1["fam_scale"])), "bnn.s2_fam_scale": repr(float(t2["fam_scale"]))}
    return Cascade({"s1": s1, "s2": s2}, meta, info)


def predict(
    c: Cascade | tuple[dict[str, Any], ModelMeta], X: np.ndarray, chunk: int = 1 << 18
) -> dict[str, np.ndarray]:
    """Integer forward + scorer post-processing: p1, p2, screen, malicious, family index. Row blocks of
    ``chunk``, so the float temporaries of the post-processing stay bounded (they were ~0.5 GB on the
    3.2 M held-out rows of a 16 M-row data set); the same values as one block."""
    if len(X) > chunk:
        parts = [predict(c, X[lo : lo + chunk], chunk) for lo in range(0, len(X), chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    towers, mm = (c.towers, c.model_meta()) if isinstance(c, Cascade) else c
    o1 = bnn.int_logits_chunked(towers["s1"], X)
    o2 = bnn.int_logits_chunked(towers["s2"], X)
    k = towers["s1"]["Wfam"].shape[1]
    f2 = o2.get("fam_logits")
    out = EngineOutput(
        bin_logit=o1.get("bin_logit", np.zeros(0, np.int32)).astype(np.int32),
        fam_logits=o1.get("fam_logits", np.zeros((0, k), np.int32)).astype(np.int32),
        stage2_logit=o2.get("bin_logit", np.zeros(0, np.int32)).astype(np.int32),
        fam2_logits=None if f2 is None else f2.astype(np.int32),
    )
    return post(out, mm)


def post(out: EngineOutput, mm: ModelMeta) -> dict[str, np.ndarray]:
    sc = Scorer(engine=cast(Any, None), meta=mm, model_id="eval")
    p1, _, mal, cls, _ = sc.post(out)
    fam_idx = {f: i for i, f in enumerate(mm.families)}
    screen = p1 >= mm.threshold1
    p2_all = 1.0 / (1.0 + np.exp(-np.clip(out.stage2_logit.astype(np.float64) * mm.s2_scale + mm.s2_offset, -60, 60)))
    fam_all = np.asarray(out.fam_logits).argmax(axis=1)
    return {
        "p1": p1,
        "p2": p2_all,
        # monotone in the cascade decision: unscreened flows keep p1 (< threshold1), screened ones 1 + p2
        "cascade_score": np.where(screen, 1.0 + p2_all, p1),
        "screen": screen.astype(np.int64),
        "malicious": mal.astype(np.int64),
        "family": np.array([fam_idx[c] for c in cls], dtype=np.int64),
        "family_raw": fam_all.astype(np.int64),
    }


def heldout_metrics(y_fam: np.ndarray, pr: dict[str, np.ndarray]) -> dict[str, Any]:
    yb = (y_fam != 0).astype(np.int64)
    m: dict[str, Any] = {"screen": bnn.binary_metrics(yb, pr["screen"]), "cascade": bnn.binary_metrics(yb, pr["malicious"])}
    m["fraction_to_stage2"] = float(pr["screen"].mean())
    m["family_accuracy"] = float((pr["family"] == y_fam).mean())
    return m


def export_onnx(c: Cascade, out: Path, metrics: dict[str, Any], digest: str) -> bytes:
    from sidecar.engines.graph import build_onnx

    s1 = c.towers["s1"]
    full = dict(c.meta) | {
        "bnn.schema_version": FEATURE_SCHEMA_VERSION,
        "bnn.features": json.dumps(list(FEATURE_NAMES)),
        "bnn.thermometer": json.dumps(
            {"feat": s1["thermo_feat"].tolist(), "thr": s1["thermo_thr"].tolist(), "nan_feat": s1["nan_feat"].tolist()}
        ),
        "bnn.data_digest": digest,
        "bnn.metrics": json.dumps(metrics, sort_keys=True),
        "bnn.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    blob = build_onnx(bnn.graph_towers(c.towers), full)
    (out / "model.onnx").write_bytes(blob)
    (out / "model.onnx.sha256").write_text(f"{hashlib.sha256(blob).hexdigest()}  model.onnx\n")
    return blob


def onnx_check(blob: bytes, c: Cascade, X: np.ndarray) -> dict[str, Any]:
    """onnxruntime outputs == the reference integer forward (bit for bit)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, {"x": X.astype(np.float32)}), strict=True))
    r1, r2 = bnn.int_forward(c.towers["s1"], X), bnn.int_forward(c.towers["s2"], X)
    out = {
        "rows": len(X),
        "bin_equal": bool(np.array_equal(got["bin_logit"], r1["bin_logit"])),
        "fam_equal": bool(np.array_equal(got["fam_logits"], r1["fam_logits"])),
        "s2_equal": bool(np.array_equal(got["stage2_logit"], r2["bin_logit"])),
    }
    if "fam_logits" in r2:
        out["fam2_equal"] = "fam2_logits" in got and bool(np.array_equal(got["fam2_logits"], r2["fam_logits"]))
    return out


#: above this many rows :func:`split` draws the stratified split itself (sklearn's needs ~70 bytes per row
#: of transient memory: 1.1 GB on 16 M rows); below, sklearn's, so the shipped model's split never changes
LEAN_SPLIT_ROWS = 2_000_000


def split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out split of ``train`` (stratified 80/20, sorted row numbers); ``evaluate`` reuses it.

    Up to :data:`LEAN_SPLIT_ROWS` rows: sklearn's ``train_test_split``. Above (a user's full data set):
    per class, a seeded permutation of its rows gives ``round(0.2 * count)`` of them to the test part,
    in bounded memory (one boolean mask and one class's row numbers at a time)."""
    if len(y) <= LEAN_SPLIT_ROWS:
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
        return np.sort(tr), np.sort(te)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        test[rng.choice(rows, round(0.2 * len(rows)), replace=False)] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def take_rows(X: np.ndarray, idx: np.ndarray, name: str, chunk: int = 1 << 18) -> np.ndarray:
    """``X[idx]``; for an on-disk ``np.memmap`` (``train --stream``) the rows are copied chunk by chunk
    into a new memmap beside it (``<file>.<name>.f32``), so the 80/20 parts of a large data set are not
    copied into RAM (1 GB for 12.8 M training rows). Same values either way."""
    path = getattr(X, "filename", None)
    if not isinstance(X, np.memmap) or path is None:
        return X[idx]
    out = np.lib.format.open_memmap(f"{path}.{name}.f32", mode="w+", dtype=X.dtype, shape=(len(idx), *X.shape[1:]))
    for lo in range(0, len(idx), chunk):
        out[lo : lo + chunk] = X[idx[lo : lo + chunk]]
    out.flush()
    return out


def drop_rows(part: np.ndarray) -> None:
    """Delete the file of a :func:`take_rows` memmap once it has been read (a 1 GB file for 12.8 M
    training rows); anything else is left alone."""
    path = getattr(part, "filename", None)
    if isinstance(part, np.memmap) and path is not None and str(path).endswith((".train.f32", ".test.f32")):
        Path(path).unlink(missing_ok=True)  # the open mapping stays valid until it is released


def train_and_export(
    out_dir: str | Path,
    X: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    epochs: int = 20,
    report: dict[str, Any] | None = None,
    progress: bool = False,
    extra_benign: np.ndarray | None = None,
    n_thresh: int = bnn.N_THRESH,
    stage2_kind: str = "committee",
    extra_weight: int = 1,
) -> dict[str, Any]:
    """Fit on 80 %, measure on the held-out 20 %, export ONNX + metrics; returns the metrics.

    ``extra_benign`` (feature rows, see :mod:`sidecar.train.benign`) joins the training part only,
    each row ``extra_weight`` times.
    """
    if extra_weight < 1:
        raise ValueError(f"extra_weight must be >= 1, got {extra_weight}")
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx_tr, idx_te = split(y, seed)
    X_tr, y_tr = take_rows(X, idx_tr, "train"), y[idx_tr]
    n_extra = 0 if extra_benign is None else len(extra_benign)
    if extra_benign is not None and n_extra:
        X_tr = np.concatenate([np.asarray(X_tr)] + [np.asarray(extra_benign, dtype=np.float32)] * extra_weight)
        y_tr = np.concatenate([y_tr, np.zeros(n_extra * extra_weight, dtype=y_tr.dtype)])
    c = fit_cascade(
        X_tr, y_tr, seed=seed, epochs=epochs, s2_epochs=epochs, progress=progress, n_thresh=n_thresh,
        stage2_kind=stage2_kind,
    )
    drop_rows(X_tr)
    X_te = take_rows(X, idx_te, "test")
    pr = predict(c, X_te)
    drop_rows(X_te)
    m = heldout_metrics(y[idx_te], pr)
    headline = {
        **{k: round(v, 6) for k, v in m["cascade"].items()},
        "screen_precision": round(m["screen"]["precision"], 6),
        "screen_recall": round(m["screen"]["recall"], 6),
        "fraction_to_stage2": round(m["fraction_to_stage2"], 6),
        "family_accuracy": round(m["family_accuracy"], 6),
        "n_train": len(idx_tr) + n_extra * extra_weight,
        "n_test": len(idx_te),
        "extra_benign_rows": n_extra,
        "epochs": epochs,
        "seed": seed,
        "duplicates_removed": (report or {}).get("duplicates_removed"),
    }
    if n_extra:
        headline["extra_benign_weight"] = extra_weight
    metrics: dict[str, Any] = {"heldout": m, "headline": headline, "fit": c.info}
    digest = bnn.data_digest(X, y)
    if extra_benign is not None and n_extra:  # extra rows are training data too: digest of both
        digest = hashlib.sha256((digest + bnn.data_digest(extra_benign, np.zeros(n_extra, y.dtype))).encode()).hexdigest()
    blob = export_onnx(c, out, headline, digest)
    metrics["onnx_check"] = onnx_check(blob, c, np.asarray(X[idx_te[:100_000]]))
    metrics["onnx_bytes"] = len(blob)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "metadata": c.meta}, indent=2, default=str))
    if report:
        (out / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    savez: Any = np.savez
    savez(out / "towers.npz", **bnn.flatten_towers(c.towers))
    return metrics
