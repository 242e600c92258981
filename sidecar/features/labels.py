"""Label normalisation: one name per attack type, and the family each belongs to.

The CIC datasets spell the same attack several ways (``DDOS attack-LOIC-UDP`` /
``DDoS-LOIC-UDP``, ``Infilteration`` / ``Infiltration``, ``Web Attack – XSS`` with an
en dash / ``Brute Force -XSS``, ``BENIGN`` / ``Benign``). :func:`normalise` maps a raw
label to one canonical attack name; :data:`FAMILY` maps that name to a family.
Unknown labels are returned as ``None`` so callers count them instead of guessing.
"""

from __future__ import annotations

import re

FAMILIES: tuple[str, ...] = ("benign", "scan", "bruteforce", "dos", "ddos", "web", "infiltration", "botnet")

#: canonical attack name -> family
FAMILY: dict[str, str] = {
    "benign": "benign",
    "portscan": "scan",
    "infiltration-portscan": "scan",
    "ftp-bruteforce": "bruteforce",
    "ssh-bruteforce": "bruteforce",
    "web-bruteforce": "web",
    "web-xss": "web",
    "web-sqli": "web",
    "web-generic": "web",
    "dos-hulk": "dos",
    "dos-goldeneye": "dos",
    "dos-slowloris": "dos",
    "dos-slowhttptest": "dos",
    "dos-generic": "dos",
    "heartbleed": "dos",
    "ddos-loic-udp": "ddos",
    "ddos-loic-http": "ddos",
    "ddos-hoic": "ddos",
    "ddos-generic": "ddos",
    "infiltration": "infiltration",
    "botnet": "botnet",
    "bruteforce-generic": "bruteforce",
}

# (regex on the squashed lower-case label, canonical name); first match wins.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^(benign|normal)$", "benign"),
    (r"^infil\w*portscan$|^infiltrationnmapportscan$", "infiltration-portscan"),
    (r"^portscan$", "portscan"),
    (r"^(infiltration|infilteration)$", "infiltration"),
    (r"^(ftppatator|ftpbruteforce)$", "ftp-bruteforce"),
    (r"^(sshpatator|sshbruteforce)$", "ssh-bruteforce"),
    (r"^(webattackbruteforce|bruteforceweb)$", "web-bruteforce"),
    (r"^(webattackxss|bruteforcexss)$", "web-xss"),
    (r"^(webattacksqlinjection|sqlinjection)$", "web-sqli"),
    (r"^webattack$", "web-generic"),
    (r"^(doshulk|dosattackshulk)$", "dos-hulk"),
    (r"^(dosgoldeneye|dosattacksgoldeneye)$", "dos-goldeneye"),
    (r"^(dosslowloris|dosattacksslowloris)$", "dos-slowloris"),
    (r"^(dosslowhttptest|dosattacksslowhttptest)$", "dos-slowhttptest"),
    (r"^dos$", "dos-generic"),
    (r"^heartbleed$", "heartbleed"),
    (r"^ddos(attack)?s?loicudp$", "ddos-loic-udp"),
    (r"^ddos(attack)?s?loichttp$", "ddos-loic-http"),
    (r"^ddos(attack)?s?hoic$", "ddos-hoic"),
    (r"^ddos$", "ddos-generic"),
    (r"^(bot|botnet|botnetares)$", "botnet"),
    (r"^bruteforce$", "bruteforce-generic"),
)
_COMPILED = tuple((re.compile(p), name) for p, name in _RULES)


def squash(raw: str) -> str:
    """Lower-case, drop every non-alphanumeric character (spaces, dashes, en dashes)."""
    return re.sub(r"[^0-9a-z]", "", raw.lower())


def normalise(raw: str | None) -> str | None:
    """Canonical attack name for a raw dataset label, or ``None`` if unknown/missing."""
    if raw is None:
        return None
    key = squash(raw)
    for rx, name in _COMPILED:
        if rx.match(key):
            return name
    return None


def family(raw: str | None) -> str | None:
    """Family of a raw dataset label, or ``None`` if the label is unknown."""
    name = normalise(raw)
    return None if name is None else FAMILY[name]


#: Stratosphere / IoT-23 detailed labels (squashed) -> family, for labelled Zeek conn logs.
#: ``External-Attack-to-Device`` (inbound Internet scans and login attempts, mostly S0 to
#: 23/445/22) is counted as ``scan``; C&C, RAT and download flows as ``botnet``.
_ZEEK_DETAIL: tuple[tuple[str, str], ...] = (
    (r"ddos", "ddos"),
    (r"portscan|scan", "scan"),
    (r"externalattacktodevice", "scan"),
)
_ZEEK_COMPILED = tuple((re.compile(p), f) for p, f in _ZEEK_DETAIL)


def zeek_family(raw: str | None) -> str | None:
    """Family of a labelled-Zeek label ``Label`` or ``Label/detailed`` (IoT-23, Stratosphere).

    ``Benign*`` -> benign; ``Malicious/<detail>`` -> a family by detail (``botnet`` if the detail
    is not recognised); ``Background``/``Unknown``/missing -> ``None`` (not ground truth).
    """
    if raw is None:
        return None
    label, _, detail = raw.partition("/")
    lab = squash(label)
    if lab == "benign":
        return "benign"
    if lab != "malicious":
        return None
    d = squash(detail)
    for rx, fam in _ZEEK_COMPILED:
        if rx.search(d):
            return fam
    return "botnet"
