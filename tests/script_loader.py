"""Import one of the repository's scripts (``scripts/...``) as a module in a test.

``scripts/lab`` is on ``sys.path`` while the script is imported (the scripts import ``common`` from
there) and removed again afterwards, also when the script itself put it there."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
LAB_SCRIPTS = str(ROOT / "scripts" / "lab")


def load_script(rel: str) -> ModuleType:
    """``rel``: the script's path from the repository root, e.g. ``scripts/lab/cross_source.py``."""
    path = ROOT / rel
    sys.path.insert(0, LAB_SCRIPTS)
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        while LAB_SCRIPTS in sys.path:
            sys.path.remove(LAB_SCRIPTS)
