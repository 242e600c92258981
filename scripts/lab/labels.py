"""Write ``labels.json`` for the traffic lab: labels by construction, counted independently.

Every capture (one pcap per scenario) has a known attacker address set; a record is
labelled with the capture's attack when either endpoint is an attacker address, ``benign``
when one endpoint is a benign client and the other the victim, else ``other`` (expected 0).
Counts are taken with plain ``json``/``csv`` parsing (NOT the sidecar readers), so
``tests/test_lab_records.py`` can check the readers against them: no record lost silently.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

#: capture name -> (family, tool / command summary)
SCENARIOS: dict[str, tuple[str, str]] = {
    "benign": ("benign", "2 clients: 150 curl GETs + keep-alive sessions, wget -r, 8 ssh logins + scp, FTP get/put, 50 DNS-ish UDP queries"),
    "scan-syn": ("scan", "nmap -sS -p 1-1000 -T4 --max-retries 1"),
    "scan-connect": ("scan", "nmap -sT -p 1-1000 -T4 --max-retries 1"),
    "bruteforce-ssh": ("bruteforce", "hydra -t 4 ssh, 200 wrong passwords then the right one"),
    "bruteforce-ftp": ("bruteforce", "hydra -t 8 ftp, 200 wrong passwords then the right one"),
    "dos-slowloris": ("dos", "slowhttptest -H -c 150 -r 50 -i 8 -l 25"),
    "dos-synflood": ("dos", "hping3 -S -p 80 -c 1500 -i u2000"),
    "dos-httpflood": ("dos", "ab -n 400 -c 20"),
    "ddos": ("ddos", "8 attacker addresses: hping3 -S -c 150 each + 25 curl GETs each"),
}


def label_of(a: str | None, b: str | None, attack: str, attackers: set[str], benign: set[str], victim: str) -> str:
    if a in attackers or b in attackers:
        return attack
    if (a in benign and b == victim) or (b in benign and a == victim):
        return "benign"
    return "other"


def count_eve(path: Path, attack: str, attackers: set[str], benign: set[str], victim: str) -> Counter[str]:
    c: Counter[str] = Counter()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            ev = json.loads(line)
            if ev.get("event_type") != "flow":
                c["(not flow)"] += 1
                continue
            c[label_of(ev.get("src_ip"), ev.get("dest_ip"), attack, attackers, benign, victim)] += 1
    return c


def count_csv(path: Path, attack: str, attackers: set[str], benign: set[str], victim: str) -> Counter[str]:
    c: Counter[str] = Counter()
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        rd = csv.DictReader(fh)
        for row in rd:
            c[label_of(row.get("src_ip"), row.get("dst_ip"), attack, attackers, benign, victim)] += 1
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lab-dir", type=Path, required=True)
    ap.add_argument("--victim", required=True)
    ap.add_argument("--benign", nargs="+", required=True)
    ap.add_argument("--attacker", required=True)
    ap.add_argument("--ddos", nargs="+", required=True)
    a = ap.parse_args()
    benign = set(a.benign)
    captures = []
    for name, (family, tool) in SCENARIOS.items():
        pcap = a.lab_dir / "pcap" / f"{name}.pcap.gz"
        if not pcap.exists():
            continue
        attackers: set[str] = set()
        if name == "ddos":
            attackers = set(a.ddos)
        elif family != "benign":
            attackers = {a.attacker}
        attack = "benign" if family == "benign" else name
        eve = a.lab_dir / "eve" / f"{name}.eve.json.gz"
        csvp = a.lab_dir / "csv" / f"{name}.csv.gz"
        captures.append(
            {
                "capture": name,
                "attack": attack,
                "family": family,
                "tool": tool,
                "victim": a.victim,
                "attackers": sorted(attackers),
                "benign_clients": sorted(benign),
                "pcap": f"pcap/{name}.pcap.gz",
                "pcap_sha256": hashlib.sha256(gzip.decompress(pcap.read_bytes())).hexdigest(),
                "eve": f"eve/{name}.eve.json.gz",
                "csv": f"csv/{name}.csv.gz",
                "counts": {
                    "eve": dict(sorted(count_eve(eve, attack, attackers, benign, a.victim).items())),
                    "csv": dict(sorted(count_csv(csvp, attack, attackers, benign, a.victim).items())),
                },
            }
        )
    doc = {
        "about": "Traffic lab labels by construction (scripts/lab/build.sh). A record is labelled with "
        "the capture's attack when either endpoint is one of its attacker addresses, benign when it is "
        "between a benign client and the victim, other otherwise. counts: records per label per source "
        "(counted with plain json/csv parsing). Files are gzip; pcap_sha256 is of the uncompressed pcap.",
        "captures": captures,
    }
    out = a.lab_dir / "labels.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for c in captures:
        print(c["capture"], "eve", c["counts"]["eve"], "csv", c["counts"]["csv"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
