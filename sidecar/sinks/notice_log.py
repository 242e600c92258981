"""A sink writing malicious verdicts as a Zeek ``notice.log`` (TSV or JSON lines).

The TSV layout is exactly Zeek 9's ASCII writer for ``Notice::LOG`` (header, field
list, types, ``-`` for unset, ``(empty)`` for empty sets, ``#close`` at the end), so
``zeek-cut`` and every Zeek log tool read it. Suppression follows the notice
framework: the identifier ``"<orig_h>-<class>"`` is noticed at most once per
``suppress_for`` seconds, measured on the record timestamps. A flow only the flood rule
flagged (``stage`` 3) is noted as ``BNN::Flood`` (``flood_note``), a login session only the
guessing rule flagged (``stage`` 4) as ``BNN::Password_Guessing`` (``guess_note``), the model's
verdicts as ``BNN::Malicious_Flow`` (``note``), as the Zeek package raises them.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from sidecar.verdict import STAGE_GUESS, STAGE_RATE, VerdictBatch

#: Zeek 9.1 ``notice.log`` columns and types (from the 9.1.0-dev btest baselines).
FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("fuid", "string"),
    ("file_mime_type", "string"),
    ("file_desc", "string"),
    ("proto", "enum"),
    ("note", "enum"),
    ("msg", "string"),
    ("sub", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "port"),
    ("n", "count"),
    ("peer_descr", "string"),
    ("actions", "set[enum]"),
    ("email_dest", "set[string]"),
    ("suppress_for", "interval"),
    ("remote_location.country_code", "string"),
    ("remote_location.region", "string"),
    ("remote_location.city", "string"),
    ("remote_location.latitude", "double"),
    ("remote_location.longitude", "double"),
)
FIELD_NAMES: tuple[str, ...] = tuple(n for n, _ in FIELDS)
FIELD_TYPES: dict[str, str] = dict(FIELDS)

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"
ACTION_LOG = "Notice::ACTION_LOG"


def zeek_time(t: float | None = None) -> str:
    """``#open`` / ``#close`` timestamp format (``YYYY-MM-DD-HH-MM-SS``, UTC)."""
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(time.time() if t is None else t))


def escape(value: str, in_set: bool = False) -> str:
    """Escape a string the way Zeek's ASCII writer does.

    Backslash becomes ``\\\\``, the separator and any non-printable byte (including
    non-ASCII UTF-8 bytes) become ``\\xNN``, the set separator inside set elements
    becomes ``\\x2c``. A value that would read as ``-`` / ``(empty)`` has its first
    character escaped; the empty string is written as ``(empty)``.
    """
    if value == "":
        return EMPTY_FIELD
    out: list[str] = []
    for b in value.encode("utf-8"):
        if b == 0x5C:
            out.append("\\\\")
        elif b < 0x20 or b >= 0x7F or (in_set and b == 0x2C):
            out.append(f"\\x{b:02x}")
        else:
            out.append(chr(b))
    s = "".join(out)
    if s in (UNSET_FIELD, EMPTY_FIELD):
        s = f"\\x{ord(s[0]):02x}" + s[1:]
    return s


def _fmt_tsv(name: str, value: Any) -> str:
    if value is None:
        return UNSET_FIELD
    typ = FIELD_TYPES[name]
    if typ.startswith("set["):
        if not value:
            return EMPTY_FIELD
        return SET_SEPARATOR.join(escape(str(v), in_set=True) for v in value)
    if typ in ("time", "interval"):
        return f"{float(value):.6f}"
    if typ == "double":
        return f"{float(value):.6f}"
    if typ in ("port", "count"):
        return str(int(value))
    return escape(str(value))


class NoticeLogSink:
    """Write verdicts as Zeek notices to ``path`` (``fmt`` ``"tsv"`` or ``"json"``)."""

    def __init__(
        self,
        path: str | Path,
        fmt: str = "tsv",
        suppress_for: float = 3600.0,
        note: str = "BNN::Malicious_Flow",
        only_malicious: bool = True,
        suppress_max: int = 100_000,
        flood_note: str = "BNN::Flood",
        guess_note: str = "BNN::Password_Guessing",
    ) -> None:
        if fmt not in ("tsv", "json"):
            raise ValueError(f"fmt must be 'tsv' or 'json', not {fmt!r}")
        self.name = "notice_log"
        self.path = Path(path)
        self.fmt = fmt
        self.suppress_for = float(suppress_for)
        self.note = note
        #: note of a flow only the flood rule flagged (``stage`` 3), as the Zeek package raises it
        self.flood_note = flood_note
        self.guess_note = guess_note
        self.only_malicious = only_malicious
        self.stats: Counter[str] = Counter()
        self._suppressed_until: dict[str, float] = {}
        #: bound of the suppression table (one entry per source address and class): a flood of
        #: spoofed sources must not grow it without limit
        self.suppress_max = max(2, int(suppress_max))
        self._fh: IO[str] | None = None
        self._open()

    # -- file handling -------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - long-lived
        if self.fmt == "tsv":
            self._fh.write(self._header())

    def _header(self) -> str:
        return (
            "#separator \\x09\n"
            f"#set_separator\t{SET_SEPARATOR}\n"
            f"#empty_field\t{EMPTY_FIELD}\n"
            f"#unset_field\t{UNSET_FIELD}\n"
            "#path\tnotice\n"
            f"#open\t{zeek_time()}\n"
            "#fields\t" + "\t".join(FIELD_NAMES) + "\n"
            "#types\t" + "\t".join(t for _, t in FIELDS) + "\n"
        )

    def _close_file(self) -> None:
        if self._fh is None:
            return
        if self.fmt == "tsv":
            self._fh.write(f"#close\t{zeek_time()}\n")
        self._fh.close()
        self._fh = None

    def _note(self, stage: int) -> str:
        return self.flood_note if stage == STAGE_RATE else self.guess_note if stage == STAGE_GUESS else self.note

    @staticmethod
    def _msg(stage: int, cls: str, score: float) -> str:
        if stage == STAGE_RATE:
            return f"flood rule flagged flow as {cls} (model score {score:.3f})"
        if stage == STAGE_GUESS:
            return f"guessing rule flagged login session as {cls} (model score {score:.3f})"
        return f"BNN flagged flow as {cls} (score {score:.3f})"

    def _prune(self, now: float) -> None:
        """Drop expired suppression entries; if more than half the bound are still live (a flood
        of distinct sources), keep the half that expires last. Evicted live entries are counted
        (``suppress_evicted``): such a source may get a second notice within ``suppress_for``."""
        live = {k: u for k, u in self._suppressed_until.items() if u > now}
        self.stats["suppress_expired"] += len(self._suppressed_until) - len(live)
        half = self.suppress_max // 2
        if len(live) > half:
            keep = sorted(live.items(), key=lambda kv: kv[1])[-half:]
            self.stats["suppress_evicted"] += len(live) - len(keep)
            live = dict(keep)
        self._suppressed_until = live

    # -- Sink protocol -------------------------------------------------------

    def write(self, verdicts: VerdictBatch) -> None:
        if self._fh is None:
            raise ValueError("NoticeLogSink is closed")
        n = len(verdicts)
        if n == 0:
            return
        if self.only_malicious:  # pick the malicious rows first: no Python work per benign row
            keep = np.flatnonzero(verdicts.malicious)
            if len(keep) < n:
                self.stats["benign_ignored"] += n - len(keep)
                if len(keep) == 0:
                    return
                verdicts = verdicts.take(keep)
                n = len(keep)
        c = verdicts.lists()
        lines: list[str] = []
        for i in range(n):
            t = c["ts"][i]
            when = time.time() if t is None else float(t)
            oh, cls = c["orig_h"][i], c["cls"][i]
            ident = f"{oh}-{cls}"
            until = self._suppressed_until.get(ident)
            if until is not None and when < until:
                self.stats["suppressed"] += 1
                continue
            self._suppressed_until[ident] = when + self.suppress_for
            if len(self._suppressed_until) > self.suppress_max:
                self._prune(when)
            s2 = c["score2"][i]
            s2txt = "-" if s2 is None else f"{s2:.2f}"
            rec: dict[str, Any] = {
                "ts": when,
                "uid": c["uid"][i],
                "id.orig_h": oh,
                "id.orig_p": c["orig_p"][i],
                "id.resp_h": c["resp_h"][i],
                "id.resp_p": c["resp_p"][i],
                "proto": c["proto"][i],
                "note": self._note(c["stage"][i]),
                "msg": self._msg(c["stage"][i], cls, c["score"][i]),
                "sub": f"stage={c['stage'][i]} score2={s2txt} model={verdicts.model}",
                "src": oh,
                "dst": c["resp_h"][i],
                "p": c["resp_p"][i],
                "actions": [ACTION_LOG],
                "email_dest": [],
                "suppress_for": self.suppress_for,
            }
            lines.append(self._format(rec))
            self.stats["written"] += 1
        if lines:
            self._fh.write("".join(lines))

    def _format(self, rec: dict[str, Any]) -> str:
        if self.fmt == "json":
            out = {k: rec[k] for k in FIELD_NAMES if rec.get(k) is not None}
            return orjson.dumps(out).decode() + "\n"
        return SEPARATOR.join(_fmt_tsv(k, rec.get(k)) for k in FIELD_NAMES) + "\n"

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def reopen(self) -> None:
        """Close the current file (with ``#close``) and start ``path`` afresh (SIGHUP)."""
        self._close_file()
        self._open()

    def close(self) -> None:
        self._close_file()
