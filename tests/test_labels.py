"""Every label spelling in the real CIC files maps to one name and a family."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import pytest

from sidecar.features.labels import FAMILIES, FAMILY, family, normalise


@pytest.mark.parametrize(
    ("raw", "name", "fam"),
    [
        ("BENIGN", "benign", "benign"),
        ("Benign", "benign", "benign"),
        ("DDOS attack-LOIC-UDP", "ddos-loic-udp", "ddos"),
        ("DDoS attacks-LOIC-HTTP", "ddos-loic-http", "ddos"),
        ("DDoS-LOIC-HTTP", "ddos-loic-http", "ddos"),
        ("DDOS attack-HOIC", "ddos-hoic", "ddos"),
        ("DDoS-HOIC", "ddos-hoic", "ddos"),
        ("Infilteration", "infiltration", "infiltration"),
        ("Infiltration - Portscan", "infiltration-portscan", "scan"),
        ("Infiltration - NMAP Portscan", "infiltration-portscan", "scan"),
        ("Web Attack \u2013 XSS", "web-xss", "web"),
        ("Brute Force -XSS", "web-xss", "web"),
        ("Web Attack - Sql Injection", "web-sqli", "web"),
        ("SQL Injection", "web-sqli", "web"),
        ("SSH-Patator", "ssh-bruteforce", "bruteforce"),
        ("SSH-Bruteforce", "ssh-bruteforce", "bruteforce"),
        ("FTP-BruteForce", "ftp-bruteforce", "bruteforce"),
        ("DoS attacks-Hulk", "dos-hulk", "dos"),
        ("Botnet Ares", "botnet", "botnet"),
        ("Bot", "botnet", "botnet"),
    ],
)
def test_spellings(raw: str, name: str, fam: str) -> None:
    assert normalise(raw) == name
    assert family(raw) == fam


def test_unknown_is_none_not_benign() -> None:
    assert normalise("Phone-Home-Quantum") is None
    assert normalise(None) is None


def test_families_closed() -> None:
    assert set(FAMILY.values()) <= set(FAMILIES)


def _labels(path: Path) -> set[str]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    rows = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(rows)]
    i = header.index("Label")
    return {r[i].strip() for r in rows if len(r) == len(header) and r[i].strip() != "Label"}


def test_every_real_label_is_known(shared: Path) -> None:
    files = [*sorted((shared / "cic-ids2017-improved").glob("*.csv.gz")),
             *sorted((shared / "cic-ids2018").glob("*.csv.gz")),
             *sorted((shared / "cic-ids2018" / "secondary-cic-ids2017").glob("*.csv.gz")),
             *sorted((shared / "cic-ids2018" / "variants").rglob("*.csv.gz"))]
    assert len(files) >= 20
    unknown = {(f.name, lab) for f in files for lab in _labels(f) if normalise(lab) is None}
    assert not unknown
