"""Ground-truth audit of the labelled public Zeek captures (``shared/data/zeek-labeled``).

IoT-23 labels every flow of a malware capture that none of its labelling rules matched as
``Benign``. In two captures the evidence says some of those "benign" flows are the malware's own
command-and-control traffic. They are **not relabelled**: every figure keeps the published labels,
and the cross-source report adds a second benign false-positive rate with these records left out,
so both can be read side by side. Each entry names its evidence; ``tests/test_label_audit.py``
checks the facts each entry relies on against the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SUSPECTS", "Suspect", "suspect_mask"]


@dataclass(frozen=True)
class Suspect:
    """Records of ``capture`` (path under ``zeek-labeled``) labelled ``label`` whose responder is
    ``resp_h`` (and ``resp_p``, if given) are suspected to carry the wrong label."""

    capture: str
    resp_h: str
    resp_p: int | None
    label: str
    why: str


SUSPECTS: tuple[Suspect, ...] = (
    Suspect(
        "iot-23/CTU-IoT-Malware-Capture-42-1",
        "185.244.25.183",
        4975,
        "Benign",
        "the infected Raspberry Pi (192.168.1.197) starts connecting to this host 10 s after its labelled "
        "C&C-FileDownload and does so 1,947 times on one non-standard port (928 unanswered SYN retries); "
        "the host is in the /24 of the Mirai C&C server of capture 34-1",
    ),
    Suspect(
        "iot-23/CTU-IoT-Malware-Capture-34-1",
        "185.244.25.235",
        None,
        "Benign",
        "this is the capture's own C&C server: its other records to this host are labelled C&C "
        "(port 6667); only the ones to port 80 are labelled Benign",
    ),
)


def suspect_mask(capture: str, labels: np.ndarray, resp_h: np.ndarray, resp_p: np.ndarray) -> np.ndarray:
    """Boolean mask of the records of one capture that an entry of :data:`SUSPECTS` covers."""
    out = np.zeros(len(labels), dtype=bool)
    lab = np.asarray([str(v).strip() for v in labels.tolist()], dtype=object)
    rh = np.asarray(resp_h, dtype=object)
    rp = np.asarray(resp_p)
    for s in SUSPECTS:
        if s.capture != capture:
            continue
        m = (rh == s.resp_h) & (lab == s.label)
        if s.resp_p is not None:
            m &= rp == s.resp_p
        out |= m
    return out
