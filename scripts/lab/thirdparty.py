"""Real Suricata records of attacks we did not stage: the shipped model on other people's captures.

The traffic lab (``scripts/lab/build.sh``) is ours; these are not:

* two attack pcaps of the Slips project (``shared/data/suricata/pcap``), turned into eve ``flow``
  records by Suricata 7 here (``derive``; committed under ``tests/data/thirdparty/eve``) and labelled
  from their upstream description: an nmap ``ssh-brute`` run (one client, one SSH server on port 902)
  and an ICMP sweep of a /24;
* the two eve files of ``shared/data/suricata/eve``, as their authors' Suricata wrote them. They carry
  no ground truth, so they are described, not scored as recall: a public SSH honeypot's inbound traffic
  (grouped by what the flow is), and an Internet-exposed host's day, grouped by whether Suricata's own
  ruleset (ET CINS/poor reputation, ET SCAN) alerted on the flow.

Scored as ``scripts/lab/cross_source.py`` scores (shipped model, flood rule on, micro-batches of 1024 in
file order). Writes ``tests/data/thirdparty/results.json`` and the generated block of
``docs/CROSS_SOURCE.md``.

    .venv/bin/python scripts/lab/thirdparty.py derive   # needs suricata (scripts/install-suricata.sh)
    .venv/bin/python scripts/lab/thirdparty.py eval [--no-doc]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MODEL, ROOT, counter_str, fmt_rate, read_all, shared_dir
from cross_source import DOC, _score, write_doc

from sidecar.scorer import Scorer, make_scorer

OUT = ROOT / "tests" / "data" / "thirdparty"
BEGIN, END = "<!-- BEGIN thirdparty.py -->", "<!-- END thirdparty.py -->"

#: labelled captures: attack records are those between ``attacker`` and ``victims`` (every record of
#: these two captures is); the upstream description is the ground truth
LABELLED: tuple[dict[str, Any], ...] = (
    {"name": "slips-test19-ssh-bruteforce", "attack": "bruteforce-ssh (nmap ssh-brute)", "family": "bruteforce",
     "attacker": "147.32.80.40", "victims": ["147.32.80.37"],
     "about": "StratosphereLinuxIPS dataset/test19-malicious-ssh: nmap ssh-brute, 1 user x 40 passwords "
              "against 147.32.80.37:902/tcp"},
    {"name": "slips-test12-icmp-portscan", "attack": "ICMP sweep of a /24", "family": "scan",
     "attacker": "192.168.1.109", "victims": None,  # None: any destination
     "about": "StratosphereLinuxIPS dataset/test12-icmp-portscan: ICMP echo sweep of 192.168.1.0/24"},
)  # fmt: skip

#: the lab's Suricata configuration (eve ``flow`` records only, no rules)
SURICATA_YAML = Path(__file__).resolve().parent / "suricata.yaml"


def derive(shared: Path, out: Path = OUT) -> list[Path]:
    """Suricata 7 over each labelled pcap -> ``out/eve/NAME.eve.json.gz`` (gzip without a time stamp)."""
    exe = shutil.which("suricata")
    if exe is None:
        raise SystemExit("suricata not found: bash scripts/install-suricata.sh")
    (out / "eve").mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SURICATA_YAML
        for cap in LABELLED:
            logdir = Path(tmp) / cap["name"]
            logdir.mkdir()
            pcap = shared / "suricata" / "pcap" / f"{cap['name']}.pcap"
            subprocess.run([exe, "-c", str(cfg), "-r", str(pcap), "-l", str(logdir), "-k", "none",
                            "--runmode", "single"], check=True, capture_output=True, timeout=300)  # fmt: skip
            dst = out / "eve" / f"{cap['name']}.eve.json.gz"
            with gzip.GzipFile(dst, "wb", compresslevel=9, mtime=0) as gz:
                gz.write((logdir / "eve.json").read_bytes())
            written.append(dst)
    return written


def eval_labelled(scorer: Scorer, out: Path = OUT) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for cap in LABELLED:
        batch, stats = read_all(out / "eve" / f"{cap['name']}.eve.json.gz")
        mal, cls, model = _score(scorer, batch)
        src, dst = batch["orig_h"], batch["resp_h"]
        att = (src == cap["attacker"]) if cap["victims"] is None else (src == cap["attacker"]) & np.isin(dst, cap["victims"])
        res[cap["name"]] = {
            "attack": cap["attack"], "family": cap["family"], "about": cap["about"], "records": len(batch),
            "skipped": dict(stats.skipped), "n": int(att.sum()), "flagged": int((att & mal).sum()),
            "flagged_model": int((att & model).sum()), "classes": dict(Counter(cls[att & mal].tolist()).most_common()),
            "other": int((~att).sum()),
        }  # fmt: skip
    return res


def _groups(batch: Any) -> np.ndarray:
    """A short description of each flow: proto, answered or not, application protocol."""
    out = []
    for i in range(len(batch)):
        proto, state = str(batch["proto"][i]), batch["flow_state"][i]
        app = batch["service"][i]
        if proto == "tcp" and batch["resp_pkts"][i] == 0:  # NaN (missing) is not "unanswered"
            kind = "tcp, unanswered"
        else:
            kind = f"{proto}, {app}" if app else f"{proto}, {state or '?'}"
        out.append(kind)
    return np.asarray(out, dtype=object)


def _describe(scorer: Scorer, path: Path, groups: Any) -> dict[str, Any]:
    batch, stats = read_all(path)
    mal, cls, _model = _score(scorer, batch)
    g = groups(batch)
    rows = {}
    for k in sorted(set(g.tolist()), key=lambda k: (-int((g == k).sum()), k)):
        m = g == k
        rows[k] = {"n": int(m.sum()), "flagged": int((m & mal).sum()),
                   "classes": dict(Counter(cls[m & mal].tolist()).most_common())}  # fmt: skip
    return {"records": len(batch), "skipped": dict(stats.skipped), "groups": rows}


def _alerted_uids(path: Path) -> set[str]:
    """flow_id (decimal text, as the eve reader's ``uid``) of every flow Suricata's rules alerted on."""
    ids = set()
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
        for line in f:
            ev = orjson.loads(line)
            if ev.get("event_type") == "alert" and "flow_id" in ev:
                ids.add(str(ev["flow_id"]))
    return ids


def eval_unlabelled(scorer: Scorer, shared: Path) -> dict[str, Any]:
    eve = shared / "suricata" / "eve"
    honeypot = _describe(scorer, eve / "magnc-honeypot-ssh.eve.json", _groups)
    exposed_path = eve / "slips-test6-malicious.eve.json.gz"
    alerted = _alerted_uids(exposed_path)

    def by_alert(batch: Any) -> np.ndarray:
        return np.asarray(["alerted" if u in alerted else "no alert" for u in batch["uid"].tolist()], dtype=object)

    exposed = _describe(scorer, exposed_path, by_alert)
    exposed["alerting_flows"] = len(alerted)
    return {"magnc-honeypot-ssh": honeypot, "slips-test6-malicious": exposed}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "### Third-party Suricata records (`scripts/lab/thirdparty.py`)",
        "",
        "Attacks we did not stage, through the same reader and scorer. Labelled captures: eve from Suricata "
        "7.0 here, labels from the upstream description (recall = flagged / attack records; ✗ below 0.9).",
        "",
        "| capture | attack | records | attack records | recall | by the model alone | flagged as |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in res["labelled"].items():
        r = c["flagged"] / c["n"] if c["n"] else None
        mark = " ✗" if r is not None and r < 0.9 else ""
        lines.append(f"| {name} | {c['attack']} | {c['records']} | {c['n']} | {fmt_rate(r)}{mark} "
                     f"| {fmt_rate(c['flagged_model'] / c['n'] if c['n'] else None)} "
                     f"| {counter_str(Counter(c['classes']))} |")  # fmt: skip
    for name, title in (("magnc-honeypot-ssh", "Public SSH honeypot, inbound traffic (no labels; all of it "
                         "unsolicited)"), ("slips-test6-malicious", "Internet-exposed host, one day (no labels; "
                         "grouped by whether Suricata's ET rules alerted on the flow)")):  # fmt: skip
        d = res["unlabelled"][name]
        lines += ["", f"{title}: `shared/data/suricata/eve/{name}`, {d['records']} flow records.", "",
                  "| flows | n | flagged | share | flagged as |", "|---|---|---|---|---|"]  # fmt: skip
        for k, g in d["groups"].items():
            lines.append(f"| {k} | {g['n']} | {g['flagged']} | {fmt_rate(g['flagged'] / g['n'])} "
                         f"| {counter_str(Counter(g['classes']))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("derive", "eval"))
    ap.add_argument("--shared", type=Path, default=shared_dir())
    ap.add_argument("--no-doc", action="store_true", help="eval: print only; do not write JSON or the doc")
    a = ap.parse_args(argv)
    if a.command == "derive":
        for p in derive(a.shared):
            print(p.relative_to(ROOT))
        return 0
    scorer = make_scorer(MODEL, "onnx")
    res = {"model_sha256": scorer.model_id, "labelled": eval_labelled(scorer), "unlabelled": eval_unlabelled(scorer, a.shared)}
    md = markdown(res)
    print(md)
    if not a.no_doc:
        (OUT / "results.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
        write_doc(DOC, md, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
