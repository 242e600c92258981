"""Diagnose the cross-source gap: the same lab flows as eve vs cicflowmeter CSV vs CIC rows.

1. Same flow, two tools: lab records are matched across eve and CSV by protocol and the
   unordered endpoint pair (ip:port, ip:port); for pairs seen once by each tool we compare
   packet counts, whole-frame bytes, payload estimates and durations, and count flows that
   one tool split into several records.
2. Feature distributions (``sidecar.features.schema.extract``): per lab attack, p10/median/p90
   and missing share of every feature for eve, CSV and the closest CIC attack rows.

    .venv/bin/python scripts/lab/diagnose.py [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LAB_DIR, MODEL, ROOT, LabSet, load_lab, read_all, shared_dir
from cross_source import write_doc

from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.flow import FlowBatch

DOC = ROOT / "docs" / "CROSS_SOURCE.md"
BEGIN, END = "<!-- BEGIN diagnose.py -->", "<!-- END diagnose.py -->"

#: lab capture -> closest CIC-IDS2017-improved file (the CSE-CIC-IDS2018 rows we have hold only
#: web attacks and LOIC-UDP, so the 2017 re-extraction is the reference for these families).
CIC_REF: dict[str, str] = {
    "benign": "BENIGN_5000.csv.gz",
    "scan-syn": "Portscan_5000.csv.gz",
    "scan-connect": "Portscan_5000.csv.gz",
    "bruteforce-ssh": "SSH-Patator_2961.csv.gz",
    "bruteforce-ftp": "FTP-Patator_3972.csv.gz",
    "dos-slowloris": "DoS_Slowloris_3859.csv.gz",
    "dos-httpflood": "DoS_Hulk_5000.csv.gz",
    "dos-synflood": "DoS_Hulk_5000.csv.gz",
    "ddos": "DDoS_5000.csv.gz",
}


def _key(b: FlowBatch, i: int) -> tuple[Any, ...]:
    a = (b["orig_h"][i], int(b["orig_p"][i]))
    c = (b["resp_h"][i], int(b["resp_p"][i]))
    return (b["proto"][i], *sorted([a, c]))


def same_flow(eve: LabSet, csv: LabSet) -> dict[str, Any]:
    """Compare the records two tools made of the same flows (one capture)."""
    ke: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    kc: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i in range(len(eve.batch)):
        if eve.batch["proto"][i] in ("tcp", "udp"):
            ke[_key(eve.batch, i)].append(i)
    for i in range(len(csv.batch)):
        kc[_key(csv.batch, i)].append(i)
    both = [k for k in ke if k in kc and len(ke[k]) == 1 and len(kc[k]) == 1]
    e, c = eve.batch, csv.batch
    pkts_eq = swapped = dup_eq = 0
    dur_diff: list[float] = []
    raw_minus_frame: list[float] = []
    pay_diff: list[float] = []
    for k in both:
        i, j = ke[k][0], kc[k][0]
        sw = e["orig_h"][i] != c["orig_h"][j] or int(e["orig_p"][i]) != int(c["orig_p"][j])
        swapped += sw
        eo, er = ("resp", "orig") if sw else ("orig", "resp")
        ep = (e[f"{eo}_pkts"][i], e[f"{er}_pkts"][i])
        cp = (c["orig_pkts"][j], c["resp_pkts"][j])
        pkts_eq += ep == cp
        ef = (e[f"{eo}_ip_bytes"][i] + 14 * ep[0], e[f"{er}_ip_bytes"][i] + 14 * ep[1])
        d = float(c.extra["TotLen Fwd Pkts"][j] - ef[0])  # the duplicated first frame, if the CSV is raw
        raw_minus_frame.append(d)
        dup_eq += d == float(c.extra["Fwd Pkt Len Min"][j]) and c.extra["TotLen Bwd Pkts"][j] == ef[1]
        pay_diff += [abs(float(e[f"{eo}_bytes"][i] - c["orig_bytes"][j])), abs(float(e[f"{er}_bytes"][i] - c["resp_bytes"][j]))]
        dur_diff.append(abs(float(e["duration"][i]) - float(c["duration"][j])))
    icmp = int(sum(p not in ("tcp", "udp") for p in e["proto"].tolist()))
    dd = np.asarray(dur_diff) if dur_diff else np.zeros(1)
    rm = np.asarray(raw_minus_frame) if raw_minus_frame else np.zeros(1)
    pd = np.asarray(pay_diff) if pay_diff else np.zeros(1)
    return {
        "eve_records": len(e), "eve_non_tcp_udp": icmp, "csv_records": len(c),
        "eve_keys": len(ke), "csv_keys": len(kc),
        "keys_only_eve": sum(k not in kc for k in ke), "keys_only_csv": sum(k not in ke for k in kc),
        "keys_split_eve": sum(len(v) > 1 for v in ke.values()), "keys_split_csv": sum(len(v) > 1 for v in kc.values()),
        "matched_1to1": len(both), "csv_direction_swapped": swapped, "pkts_equal_after_fix": pkts_eq,
        "raw_totlen_fwd_minus_eve_frames_median": float(np.median(rm)), "raw_excess_is_dup_first_frame": dup_eq,
        "payload_absdiff_median": float(np.median(pd)), "payload_absdiff_max": float(pd.max()),
        "duration_absdiff_median_s": float(np.median(dd)), "duration_absdiff_max_s": float(dd.max()),
    }


def dist(x: np.ndarray) -> dict[str, Any]:
    """p10 / median / p90 and missing share of each feature column."""
    out: dict[str, Any] = {}
    for j, name in enumerate(FEATURE_NAMES):
        col = x[:, j].astype(np.float64)
        ok = col[~np.isnan(col)]
        q = np.percentile(ok, [10, 50, 90]).tolist() if len(ok) else [None] * 3
        out[name] = {"p10": q[0], "p50": q[1], "p90": q[2], "missing": float(np.isnan(col).mean()) if len(col) else None}
    return out


def _q(d: dict[str, Any]) -> str:
    if d["p50"] is None:
        return "missing"
    s = f"{d['p10']:.3g} / **{d['p50']:.3g}** / {d['p90']:.3g}"
    return s + (f" ({d['missing']:.0%} NaN)" if d["missing"] else "")


def _tcp_ts_option(b: FlowBatch) -> FlowBatch:
    """What-if: also subtract the 12-byte TCP timestamp option per TCP packet."""
    tcp = b["proto"] == "tcp"
    cols = dict(b.cols)
    for side in ("orig", "resp"):
        est = np.maximum(b[f"{side}_bytes"] - 12.0 * b[f"{side}_pkts"], 0.0)
        cols[f"{side}_bytes"] = np.where(tcp, est, b[f"{side}_bytes"])
    return FlowBatch(cols, b.source, b.label, b.extra, b.origin)


def _syn_only_zero(b: FlowBatch) -> FlowBatch:
    """What-if: a TCP direction that sent SYN without ACK carries no payload (0 bytes)."""
    cols = dict(b.cols)
    tcp = b["proto"] == "tcp"
    for side in ("orig", "resp"):
        fl = b[f"{side}_flags"].astype(np.int32)
        syn_only = tcp & (fl >= 0) & ((fl & 2) != 0) & ((fl & 16) == 0)
        cols[f"{side}_bytes"] = np.where(syn_only, 0.0, b[f"{side}_bytes"])
    return FlowBatch(cols, b.source, b.label, b.extra, b.origin)


def _udp_flags_zero(b: FlowBatch) -> FlowBatch:
    """What-if: a UDP/ICMP record has no TCP flags (0), not unknown flags (-1)."""
    cols = dict(b.cols)
    not_tcp = np.asarray([p is not None and p != "tcp" for p in b["proto"].tolist()], dtype=bool)
    for side in ("orig", "resp"):
        cols[f"{side}_flags"] = np.where(not_tcp & (b[f"{side}_flags"] < 0), 0, b[f"{side}_flags"]).astype(np.int16)
    return FlowBatch(cols, b.source, b.label, b.extra, b.origin)


def _slower(k: float) -> Any:
    def f(b: FlowBatch) -> FlowBatch:
        return FlowBatch(dict(b.cols, duration=b["duration"] * k), b.source, b.label, b.extra, b.origin)

    return f


WHATIF: dict[str, Any] = {
    "as read": lambda b: b,
    "TCP payload - 12 B/pkt": _tcp_ts_option,
    "SYN-only side payload 0": _syn_only_zero,
    "UDP flags = 0": _udp_flags_zero,
    "-12 B/pkt + UDP flags 0": lambda b: _udp_flags_zero(_tcp_ts_option(b)),
    "duration x10": _slower(10.0),
    "duration x100": _slower(100.0),
}


def whatif(sets: list[LabSet], model: Path) -> dict[str, dict[str, float | None]]:
    """Flag rate per lab capture (eve records, attack or benign label) under each what-if."""
    from sidecar.features.guess import GuessRule
    from sidecar.features.rate import RateRule
    from sidecar.scorer import make_scorer

    # the model alone: the what-ifs change features; the flood rule reads none (and one scorer
    # re-scoring the same records per column would add its counts up)
    scorer = make_scorer(model, rate=RateRule(threshold=0), guess=GuessRule(threshold=0))
    out: dict[str, dict[str, float | None]] = {}
    for s in sets:
        if s.source != "eve":
            continue
        lab = "benign" if s.family == "benign" else s.attack
        b = s.batch.take(np.flatnonzero(s.labels == lab))
        out[s.capture] = {name: float(scorer.score(f(b)).malicious.mean()) if len(b) else None for name, f in WHATIF.items()}
    return out


def cic_ports(shared: Path) -> dict[str, dict[str, Any]]:
    """Share of responder ports 80 / 21-22 / 53 / 443 per family in the CIC rows the model is trained on."""
    from cross_source import _cic_files

    from sidecar.features.labels import family

    tot: Counter[str] = Counter()
    ports: dict[str, Counter[str]] = defaultdict(Counter)
    groups = {80: "80", 21: "21/22", 22: "21/22", 53: "53", 443: "443"}
    for files in _cic_files(shared).values():
        for p in files:
            b, _ = read_all(p, "cic-csv")
            if b.label is None:
                continue
            for lab, rp in zip(b.label.tolist(), b["resp_p"].tolist(), strict=True):
                f = family(lab) or "unknown"
                tot[f] += 1
                ports[f][groups.get(int(rp), "other")] += 1
    return {f: {"n": n, **{g: ports[f][g] / n for g in ("80", "21/22", "53", "443", "other")}} for f, n in tot.most_common()}


def run(lab_dir: Path, shared: Path) -> dict[str, Any]:
    sets = load_lab(lab_dir)
    by = {(s.capture, s.source): s for s in sets}
    res: dict[str, Any] = {"same_flow": {}, "features": {}}
    for cap in dict.fromkeys(s.capture for s in sets):
        eve, csv = by[(cap, "eve")], by[(cap, "csv")]
        res["same_flow"][cap] = same_flow(eve, csv)
        lab = "benign" if eve.family == "benign" else eve.attack
        feats: dict[str, Any] = {}
        for s in (eve, csv):
            m = s.labels == lab
            feats[f"lab {s.source}"] = dist(extract(s.batch.take(np.flatnonzero(m)))) if m.any() else None
        ref = shared / "cic-ids2017-improved" / CIC_REF[cap]
        if ref.exists():
            b, _ = read_all(ref, "cic-csv")
            feats[f"CIC {CIC_REF[cap].split('_')[0]}"] = dist(extract(b))
        res["features"][cap] = feats
    res["whatif"] = whatif(sets, MODEL)
    res["cic_ports"] = cic_ports(shared) if (shared / "cic-ids2018").is_dir() else {}
    return res


def markdown(res: dict[str, Any]) -> str:
    L = ["### Same flows seen by Suricata (eve) and cicflowmeter (CSV)", "",
         "Endpoint pairs matched by protocol + unordered (ip:port, ip:port); eve ICMP records have no CSV "
         "counterpart (the tool reads only TCP/UDP).", "",
         "Columns: records; endpoint pairs only one tool has; pairs one tool split into several records; "
         "pairs with one record in each (matched 1:1) and, among those: CSV direction opposite to eve's; "
         "packet counts equal after the reader's duplicate-first-packet fix; raw CSV `totlen_fwd_pkts` minus eve "
         "forward frame bytes (median) and how often that excess is exactly one `fwd_pkt_len_min` frame with "
         "backward bytes equal (= the duplicated first packet); |payload estimate difference| in bytes; |duration difference|.", "",
         "| capture | eve recs (non-TCP/UDP) | CSV recs | pairs only eve / CSV | split eve / CSV | matched 1:1 | "
         "swapped | pkts equal | raw TotLen excess (median) | excess = dup. frame | payload |Δ| median / max B | |Δduration| median / max s |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cap, d in res["same_flow"].items():
        L.append(f"| {cap} | {d['eve_records']} ({d['eve_non_tcp_udp']}) | {d['csv_records']} | {d['keys_only_eve']} / "
                 f"{d['keys_only_csv']} | {d['keys_split_eve']} / {d['keys_split_csv']} | {d['matched_1to1']} | "
                 f"{d['csv_direction_swapped']} | {d['pkts_equal_after_fix']} | {d['raw_totlen_fwd_minus_eve_frames_median']:g} | "
                 f"{d['raw_excess_is_dup_first_frame']} | {d['payload_absdiff_median']:g} / {d['payload_absdiff_max']:g} | "
                 f"{d['duration_absdiff_median_s']:.3g} / {d['duration_absdiff_max_s']:.3g} |")
    L += ["", "### What-if: flag rate of the lab's eve records under candidate fixes", "",
          "Not measurements of the shipped pipeline: each column re-scores the same records after one change "
          "to the canonical columns (recall for attacks, FPR for benign).", "",
          "| capture | " + " | ".join(WHATIF) + " |", "|---|" + "---|" * len(WHATIF)]
    for cap, d in res["whatif"].items():
        L.append(f"| {cap} | " + " | ".join("–" if d[k] is None else f"{d[k]:.3f}" for k in WHATIF) + " |")
    L += ["", "### Responder-port share per family in the CIC rows (CSE-CIC-IDS2018 + CIC-IDS2017 improved)", "",
          "| family | rows | port 80 | 21/22 | 53 | 443 | other |", "|---|---|---|---|---|---|---|"]
    for f, d in res["cic_ports"].items():
        L.append(f"| {f} | {d['n']} | " + " | ".join(f"{d[g]:.3f}" for g in ("80", "21/22", "53", "443", "other")) + " |")
    L += ["", "### Feature distributions (p10 / **median** / p90), attack records only", ""]
    for cap, feats in res["features"].items():
        cols = [k for k, v in feats.items() if v is not None]
        L += [f"#### {cap}", "", "| feature | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name in FEATURE_NAMES:
            L.append(f"| `{name}` | " + " | ".join(_q(feats[c][name]) for c in cols) + " |")
        L.append("")
    return "\n".join(L)


def _plain(o: Any) -> Any:
    return o.item() if isinstance(o, np.generic) else str(o)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab-dir", type=Path, default=LAB_DIR)
    ap.add_argument("--shared", type=Path, default=shared_dir())
    ap.add_argument("--json", type=Path, default=LAB_DIR / "diagnose.json")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args(argv)
    res = run(a.lab_dir, a.shared)
    md = markdown(res)
    print(md)
    print(json.dumps(Counter({k: v["matched_1to1"] for k, v in res["same_flow"].items()})))
    if not a.no_doc:
        a.json.write_text(json.dumps(res, indent=1, sort_keys=True, default=_plain) + "\n")
        write_doc(a.doc, md, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
