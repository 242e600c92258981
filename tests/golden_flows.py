"""Golden canonical-flow outputs for real fixtures.

Regenerate after an intended reader change with::

    .venv/bin/python tests/golden_flows.py

and review the diff of ``tests/golden/*.jsonl`` like code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BNN_SHARED_DATA", REPO.parent / "shared" / "data"))
GOLDEN = REPO / "tests" / "golden"

#: (golden name, fixture path under shared/data, format)
CASES: tuple[tuple[str, str, str], ...] = (
    ("zeek-tsv-2.6.4", "zeek/version-series/ssh-basic.conn.v2.6.4.log", "zeek-tsv"),
    ("zeek-tsv-9.1", "zeek/version-series/ssh-basic.conn.v9.1.0-dev.log", "zeek-tsv"),
    ("zeek-tsv-tunnels-gre", "zeek/btest-9.1-dev/core.tunnels.gre.conn.log", "zeek-tsv"),
    ("zeek-tsv-scope-sep", "zeek/btest-9.1-dev/scripts.base.frameworks.logging.scope_sep.conn.log", "zeek-tsv"),
    ("zeek-tsv-labeled", "zeek/slips/ctu-sme-11.conn.log.labeled", "zeek-tsv"),
    ("zeek-json-vertical", "zeek/slips/vertical-portscan.conn.json.log", "zeek-json"),
    ("eve-honeypot", "suricata/eve/magnc-honeypot-ssh.eve.json", "eve"),
    ("cic-sqli", "cic-ids2018/SQL Injection.csv.gz", "cic-csv"),
)


def render(rel: str, fmt: str) -> bytes:
    from sidecar.sources.base import ReadStats
    from sidecar.sources.detect import read_path

    stats = ReadStats()
    out = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for b in read_path(SHARED / rel, fmt, stats)
           for r in b.iter_rows()]
    out.append(orjson.dumps({"stats": stats.as_dict()}, option=orjson.OPT_SORT_KEYS))
    return b"\n".join(out) + b"\n"


def main() -> int:
    GOLDEN.mkdir(exist_ok=True)
    for name, rel, fmt in CASES:
        (GOLDEN / f"{name}.jsonl").write_bytes(render(rel, fmt))
        print(f"wrote tests/golden/{name}.jsonl")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
