#!/usr/bin/env bash
# edge-bench.sh: the Pi-class budget benchmark of docs/EDGE.md.
#
# Scores real records (the bundled Suricata eve flows + Zeek conn records of sidecar/data/samples,
# repeated to --flows) end to end with `bnn-sidecar score --engine numpy`, output to a file, under
#   * one pinned core          (taskset -c CORE)
#   * an address-space cap     (prlimit --as, default 256 MB)
#   * onnxruntime not importable (a sys.meta_path blocker installed by sitecustomize: the same as a
#     machine without the wheel, e.g. linux/arm/v7), nor torch/pandas/matplotlib/sklearn/onnx
# and reports end-to-end flows/s and the scoring process's peak RSS (getrusage of the child).
#
# usage: scripts/edge-bench.sh [--flows N] [--cap-mb MB] [--core C] [--engine numpy|onnx]
#                              [--python PY] [--keep DIR] [--json]
# Targets (issue #9): >= 50 k flows/s with the numpy engine, peak RSS <= 64 MB.
# Exit status: 0 when the run completed (targets are reported, not enforced), non-zero on failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLOWS=200000
CAP_MB=256
CORE=0
ENGINE=numpy
PY=""
KEEP=""
JSON=0
while [ $# -gt 0 ]; do
    case "$1" in
    --flows) FLOWS="$2"; shift 2 ;;
    --cap-mb) CAP_MB="$2"; shift 2 ;;
    --core) CORE="$2"; shift 2 ;;
    --engine) ENGINE="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    --json) JSON=1; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "edge-bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$FLOWS$CAP_MB$CORE" in *[!0-9]*) echo "edge-bench: --flows/--cap-mb/--core take integers" >&2; exit 2 ;; esac
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
    elif [ -x "$REPO/.venv-run/bin/python" ]; then PY="$REPO/.venv-run/bin/python"
    else PY="$(command -v python3)"; fi
fi
for tool in taskset prlimit; do
    command -v "$tool" >/dev/null || { echo "edge-bench: $tool (util-linux) is required" >&2; exit 2; }
done

if [ -n "$KEEP" ]; then WORK="$KEEP"; mkdir -p "$WORK"; else WORK="$(mktemp -d /tmp/edge-bench.XXXXXX)"; fi
cleanup() { [ -n "$KEEP" ] || rm -rf "$WORK"; }
trap cleanup EXIT

# --- inputs: real records repeated (half eve flow events, half Zeek conn records) -------------
SAMPLES="$REPO/sidecar/data/samples"
gzip -dc "$SAMPLES/slips-test6-malicious.eve.json.gz" > "$WORK/one.eve.json"
gzip -dc "$SAMPLES/ctu-sme-11.conn.log.labeled.gz" > "$WORK/one.conn.log"
EVE_FLOWS=$(grep -c '"event_type":"flow"' "$WORK/one.eve.json")
CONN_RECS=$(grep -vc '^#' "$WORK/one.conn.log")
HALF=$(( (FLOWS + 1) / 2 ))
EVE_REP=$(( (HALF + EVE_FLOWS - 1) / EVE_FLOWS ))
CONN_REP=$(( (FLOWS - EVE_REP * EVE_FLOWS + CONN_RECS - 1) / CONN_RECS ))
[ "$CONN_REP" -ge 1 ] || CONN_REP=1
: > "$WORK/bench.eve.json"
for _ in $(seq "$EVE_REP"); do cat "$WORK/one.eve.json" >> "$WORK/bench.eve.json"; done
grep '^#' "$WORK/one.conn.log" | grep -v '^#close' > "$WORK/bench.conn.log"
grep -v '^#' "$WORK/one.conn.log" > "$WORK/body.conn"
for _ in $(seq "$CONN_REP"); do cat "$WORK/body.conn" >> "$WORK/bench.conn.log"; done
EXPECT=$(( EVE_REP * EVE_FLOWS + CONN_REP * CONN_RECS ))

# --- the blocker: heavy/optional modules are not importable in the scoring process -------------
mkdir -p "$WORK/block"
cat > "$WORK/block/sitecustomize.py" <<'EOF'
import sys

_BLOCKED = ("onnxruntime", "onnx", "torch", "pandas", "matplotlib", "sklearn")


class _EdgeBlocker:
    """Make the Pi-budget run behave as if these packages were not installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (edge profile)", name=name)
        return None


sys.meta_path.insert(0, _EdgeBlocker())
EOF

# --- the run: a small Python parent measures the child's peak RSS (getrusage RUSAGE_CHILDREN) --
CAP_BYTES=$(( CAP_MB * 1024 * 1024 ))
export EDGE_PY="$PY" EDGE_WORK="$WORK" EDGE_ENGINE="$ENGINE" EDGE_CORE="$CORE" EDGE_CAP="$CAP_BYTES"
export EDGE_EXPECT="$EXPECT" EDGE_JSON="$JSON" EDGE_REPO="$REPO" EDGE_CAP_MB="$CAP_MB"
"$PY" - <<'EOF'
import json, os, resource, subprocess, sys, time

w = os.environ["EDGE_WORK"]
out = os.path.join(w, "verdicts.jsonl")
env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(w, "block"), os.environ["EDGE_REPO"]]),
           OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
cmd = ["taskset", "-c", os.environ["EDGE_CORE"], "prlimit", f"--as={os.environ['EDGE_CAP']}", "--",
       os.environ["EDGE_PY"], "-c",
       "import sys; from sidecar.cli.main import main; rc = main(sys.argv[1:]);"
       " bad = sorted(m for m in ('onnxruntime', 'onnx', 'torch', 'pandas', 'matplotlib', 'sklearn')"
       " if m in sys.modules); print('edge-modules: ' + ','.join(bad), file=sys.stderr); sys.exit(rc)",
       "score", "--input", os.path.join(w, "bench.eve.json"), os.path.join(w, "bench.conn.log"),
       "--engine", os.environ["EDGE_ENGINE"], "--out", out]
t0 = time.perf_counter()
p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if p.returncode != 0:
    sys.stderr.write(p.stderr[-3000:])
    sys.exit(f"edge-bench: the scoring run failed (exit {p.returncode}) under the "
             f"{os.environ['EDGE_CAP_MB']} MB cap on core {os.environ['EDGE_CORE']}")
summary = {}
heavy = "?"
for line in p.stderr.splitlines():
    if line.startswith("summary: "):
        summary = json.loads(line[len("summary: "):])
    elif line.startswith("edge-modules: "):
        heavy = line[len("edge-modules: "):]
with open(out, "rb") as fh:
    lines = sum(1 for _ in fh)
scored = int(summary.get("scored", 0))
loop_s = float(summary.get("seconds", 0.0)) or float("nan")
res = {
    "engine": os.environ["EDGE_ENGINE"], "core": int(os.environ["EDGE_CORE"]),
    "cap_mb": int(os.environ["EDGE_CAP_MB"]), "flows": scored, "expected": int(os.environ["EDGE_EXPECT"]),
    "verdict_lines": lines, "flagged": summary.get("flagged", {}),
    "flows_per_s": round(scored / loop_s), "flows_per_s_incl_startup": round(scored / wall),
    "seconds": round(loop_s, 3), "wall_seconds": round(wall, 3),
    "peak_rss_mb": round(peak_kb / 1024, 1), "heavy_modules_loaded": [m for m in heavy.split(",") if m],
    "targets": {"flows_per_s>=50000": scored / loop_s >= 50_000, "peak_rss_mb<=64": peak_kb / 1024 <= 64},
}
if scored != res["expected"] or lines != scored:
    sys.exit(f"edge-bench: accounting mismatch: expected {res['expected']} flows, scored {scored}, "
             f"wrote {lines} verdict lines")
if os.environ["EDGE_JSON"] == "1":
    print(json.dumps(res))
else:
    print(f"edge profile: engine={res['engine']} core={res['core']} cap={res['cap_mb']} MB, "
          f"onnxruntime/torch/pandas/matplotlib/sklearn blocked "
          f"(loaded: {', '.join(res['heavy_modules_loaded']) or 'none'})")
    print(f"flows scored (real eve + conn records, repeated): {scored:,}  verdict lines: {lines:,}")
    print(f"end-to-end (read + features + score + write): {res['flows_per_s']:,} flows/s "
          f"({res['seconds']} s); incl. interpreter start + model load: {res['flows_per_s_incl_startup']:,} flows/s")
    print(f"peak RSS of the scoring process: {res['peak_rss_mb']} MB")
    for k, ok in res["targets"].items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")
EOF
