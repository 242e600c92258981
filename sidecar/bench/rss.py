"""Peak RSS while scoring, one fresh child process per engine.

Each engine runs in ``python -m sidecar.bench.rss --engine E ...``, started and
reaped (``os.wait4``) by a tiny fresh launcher, so ``ru_maxrss`` is that worker's own
peak (what ``getrusage(RUSAGE_CHILDREN)`` reports for a single waited-for child)
and the engines' figures never mix with each other or with the benchmark process.
The child streams the input (repeated lazily, never held whole in memory) through
the same pipeline as the end-to-end benchmark.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sidecar.bench.common import MODEL, one_thread_env

#: Linux reports ru_maxrss in KiB, macOS in bytes
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


#: A stdlib-only launcher. Linux copies the RSS high-water mark of the process that
#: exec()s into the new program (with vfork that is the spawning parent's memory), so
#: the measured worker is started by this small fresh interpreter, not by the big
#: benchmark process; the launcher reaps it with os.wait4 and prints its rusage.
_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
print(json.dumps({"maxrss": ru.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}))
"""


def run_child(engine: str, inp: Path, records: int, model: Path, timeout: float = 600.0) -> dict[str, Any]:
    """Score ``records`` flows of ``inp`` in a fresh process; its peak RSS and result."""
    with tempfile.TemporaryDirectory(prefix="bnn-bench-rss-") as d:
        out = Path(d) / "result.json"
        worker = [sys.executable, "-m", "sidecar.bench.rss", "--engine", engine, "--input", str(inp),
                  "--records", str(records), "--model", str(model), "--out", str(out)]  # fmt: skip
        row: dict[str, Any] = {"engine": engine, "input": inp.name}
        try:
            done = subprocess.run(
                [sys.executable, "-c", _LAUNCHER, *worker],
                env=one_thread_env(),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            row["error"] = f"timed out after {timeout:.0f} s"
            return row
        try:
            ru = json.loads(done.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            ru = {"maxrss": 0, "exit": done.returncode}
        row["peak_rss_mb"] = round(ru["maxrss"] * _RSS_UNIT / 2**20, 1)
        row["exit"] = ru["exit"]
        if ru["exit"] == 0 and out.exists():
            row.update(json.loads(out.read_text()))
        else:
            err = done.stderr.decode("utf-8", "replace").strip()
            row["error"] = err.splitlines()[-1] if err else f"exit {ru['exit']}"
        return row


def bench_rss(engines: list[str], inp: Path, records: int, model: Path = MODEL) -> list[dict[str, Any]]:
    return [run_child(e, inp, records, model) for e in engines]


def _child(args: argparse.Namespace) -> int:
    from sidecar.bench.common import load_input, reader
    from sidecar.bench.e2e import NullSink, pipeline
    from sidecar.scorer import make_scorer

    inp = load_input(Path(args.input))
    scorer = make_scorer(args.model, args.engine)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
    sink = NullSink()
    n = pipeline(reader(inp.fmt), inp.lazy_stream(args.records), scorer, sink.write)
    result = {
        "flows": n,
        "rss_after_load_mb": round(base / 2**20, 1),
        "onnxruntime_loaded": "onnxruntime" in sys.modules,
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="benchmark child: score one input, report peak RSS")
    p.add_argument("--engine", required=True, choices=["onnx", "numpy"])
    p.add_argument("--input", required=True)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--model", default=str(MODEL))
    p.add_argument("--out", required=True)
    return _child(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
