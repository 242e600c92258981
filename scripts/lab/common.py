"""Shared helpers of the lab scripts: read every record of a file, label lab records, score."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sidecar.flow import FlowBatch  # noqa: E402
from sidecar.sources.base import ReadStats  # noqa: E402
from sidecar.sources.detect import read_path  # noqa: E402

LAB_DIR = ROOT / "tests" / "data" / "lab"
MODEL = ROOT / "sidecar" / "data" / "model" / "bnn.onnx"
SOURCES = ("eve", "csv")


def shared_dir() -> Path:
    return Path(os.environ.get("BNN_SHARED_DATA", str(ROOT.parent / "shared" / "data")))


def read_all(path: Path, fmt: str = "auto") -> tuple[FlowBatch, ReadStats]:
    """Every record of one file as one batch (empty batch for an empty file) and the read stats."""
    stats = ReadStats()
    if path.stat().st_size == 0:
        return FlowBatch.empty(), stats
    batches = list(read_path(path, fmt, stats, batch_size=65536))
    return (FlowBatch.concat(batches) if batches else FlowBatch.empty()), stats


def label_of(a: Any, b: Any, attack: str, attackers: set[str], benign: set[str], victim: str) -> str:
    """Label by construction (same rule as scripts/lab/labels.py)."""
    if a in attackers or b in attackers:
        return attack
    if (a in benign and b == victim) or (b in benign and a == victim):
        return "benign"
    return "other"


def load_labels(lab_dir: Path) -> list[dict[str, Any]]:
    doc = json.loads((lab_dir / "labels.json").read_text())
    caps: list[dict[str, Any]] = doc["captures"]
    return caps


@dataclass
class LabSet:
    """All records of one lab capture from one source, with labels by construction."""

    capture: str
    attack: str
    family: str
    source: str
    batch: FlowBatch
    labels: np.ndarray
    stats: ReadStats = field(default_factory=ReadStats)


def load_lab(lab_dir: Path) -> list[LabSet]:
    out: list[LabSet] = []
    for cap in load_labels(lab_dir):
        attackers, benign = set(cap["attackers"]), set(cap["benign_clients"])
        for src in SOURCES:
            batch, stats = read_all(lab_dir / cap[src])
            labs = np.asarray(
                [
                    label_of(a, b, cap["attack"], attackers, benign, cap["victim"])
                    for a, b in zip(batch["orig_h"].tolist(), batch["resp_h"].tolist(), strict=True)
                ],
                dtype=object,
            )
            out.append(LabSet(cap["capture"], cap["attack"], cap["family"], src, batch, labs, stats))
    return out


def rate(k: int, n: int) -> float | None:
    return None if n == 0 else k / n


def fmt_rate(r: float | None) -> str:
    return "–" if r is None else f"{r:.3f}"


def counter_str(c: Counter[str], top: int = 3) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.most_common(top)) or "–"


#: populations of :func:`zeek_populations`: Zeek family (published label) -> name
ZEEK_ATTACKS = ("scan", "ddos", "botnet")


def zeek_populations(shared: Path) -> list[tuple[Path, FlowBatch, dict[str, np.ndarray]]]:
    """Every labelled Zeek capture of ``shared/zeek-labeled`` with its record masks: ``benign``
    (published labels), ``benign, audited`` (without the records sidecar/train/label_audit.py
    suspects) and one per :data:`ZEEK_ATTACKS` family."""
    from sidecar.features.labels import zeek_family
    from sidecar.train.label_audit import suspect_mask

    base = shared / "zeek-labeled"
    out: list[tuple[Path, FlowBatch, dict[str, np.ndarray]]] = []
    for p in sorted(base.rglob("*conn.log*.gz")):
        batch, _ = read_all(p)
        if len(batch) == 0 or batch.label is None:
            continue
        labels = np.asarray([str(x) for x in batch.label.tolist()], dtype=object)
        fams = np.asarray([zeek_family(x) or "" for x in labels.tolist()], dtype=object)
        sus = suspect_mask(p.parent.relative_to(base).as_posix(), labels, np.asarray(batch["resp_h"], dtype=object),
                           np.asarray(batch["resp_p"]))  # fmt: skip
        pops = {"benign": fams == "benign", "benign, audited": (fams == "benign") & ~sus}
        pops.update({f: fams == f for f in ZEEK_ATTACKS})
        out.append((p, batch, pops))
    return out
