"""Real feature rows for engine tests: every bundled sample plus optional extra files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from sidecar.errors import FormatDetectionError
from sidecar.features.schema import extract
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

SAMPLES = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "samples"

Reader = Callable[[Path, ReadStats], Iterator[FlowBatch]]


def sample_rows(extra: Iterable[tuple[Reader, Path]] = ()) -> list[np.ndarray]:
    """Feature blocks of every sample in ``sidecar/data/samples`` (format detected), then of
    each ``(reader, path)`` in ``extra``; reader warnings are silenced while reading."""
    parts: list[np.ndarray] = []
    logging.disable(logging.WARNING)
    try:
        for p in sorted(SAMPLES.iterdir()):
            if p.suffix == ".md":
                continue
            try:
                parts += [extract(b) for b in read_path(p, "auto", ReadStats(), batch_size=4096)]
            except FormatDetectionError:
                continue
        for read, path in extra:
            parts += [extract(b) for b in read(path, ReadStats())]
    finally:
        logging.disable(logging.NOTSET)
    return parts
