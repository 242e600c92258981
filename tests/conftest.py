"""Shared test fixtures: where the real data lives, and mandatory-skip handling.

Real data is read from ``../shared/data`` (CI has it beside the checkout) or from
``BNN_SHARED_DATA``. Tests that need a real component (Suricata, namespaces) call
:func:`require` which skips with a reason, or fails when the matching
``BNN_REQUIRE_*`` variable is set (``.ci/run`` sets them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BNN_SHARED_DATA", REPO.parent / "shared" / "data"))
TESTDATA = REPO / "tests" / "data"


def require(ok: bool, what: str, env: str) -> None:
    """Skip when ``ok`` is false, unless ``env`` is set: then fail."""
    if ok:
        return
    if os.environ.get(env):
        pytest.fail(f"{what} is required here ({env} is set) but not available")
    pytest.skip(f"{what} not available (set {env}=1 to make this a failure)")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"real data folder {SHARED} not found (CI has ../shared/data beside the checkout)")
    return SHARED


class QuietSink:
    """Base for test sinks that only collect: ``flush``, ``reopen`` and ``close`` do nothing."""

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_threads(work: Callable[[int], None], n: int = 2, timeout: float = 60.0) -> bool:
    """Run ``work(k)`` for k = 0..n-1 in n threads at once; True when all finished in time."""
    ts = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=timeout)
    return not any(t.is_alive() for t in ts)
