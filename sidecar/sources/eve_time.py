"""Suricata's timestamps (``2021-06-06T15:57:01.123456+0200``) to UNIX epoch seconds.

:func:`parse_ts` parses one stamp (the reference); :func:`_ts_column` a whole column at once,
bit for bit the same, vectorised when every stamp has Suricata's fixed layout;
:func:`_ts_column_general` is the per-value path it falls back to. Used by the eve reader
(:mod:`sidecar.sources.eve`, :mod:`sidecar.sources.eve_columns`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np


def _parse_ts_full(s: str) -> float:
    d = datetime.fromisoformat(s)  # Python >= 3.11 accepts "+0200"
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


@lru_cache(maxsize=4096)
def _whole_seconds(base: str, tz: str) -> float:
    return _parse_ts_full(base + tz)


def parse_ts(s: str) -> float:
    """Suricata time ``2021-06-06T15:57:01.123456+0200`` -> UNIX epoch seconds.

    Fast path: the whole-second part (and offset) is parsed once and cached, the
    fraction added as a float; anything else goes through ``fromisoformat``.
    """
    if len(s) > 20 and s[19] == "." and s[10] == "T":
        frac_end = 20
        n = len(s)
        while frac_end < n and s[frac_end].isdigit():
            frac_end += 1
        if frac_end > 20:
            return _whole_seconds(s[:19], s[frac_end:]) + float(s[19:frac_end])
    return _parse_ts_full(s)


_TS_LEN = 31
_TS_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25, 27, 28, 29, 30])
_TS_SEPS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: "."}
_MDAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


#: ``"|".join`` of 31-character stamps: row layout (the ``|`` proves every stamp has 31 characters)
_ROW_LEN = _TS_LEN + 1
_DAY_TZ = np.r_[0:11, 26:31]  # "YYYY-MM-DDT" and the zone
_TIME_SEPS = np.array([13, 16, 19, _TS_LEN])
_TIME_SEP_VALS = np.frombuffer(b"::.|", dtype=np.uint8)
_TIME_DIGITS = np.array([11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25])
_FRAC_W = 10 ** np.arange(5, -1, -1, dtype=np.int64)
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T")
_ZONE_RE = re.compile(r"[+-][0-9]{4}")
#: more distinct days (and zones) than this in one call: the general path
_MAX_DAYS = 4


def _ts_column(vals: Sequence[Any], typed: bool = False) -> np.ndarray:
    """:func:`_ts_column_general`, bit for bit; fast when every stamp has Suricata's layout.

    Joined with ``|`` (no stamp position accepts it), the length and a ``|`` after every 31
    characters prove each stamp has 31. Each distinct day and zone (a few per batch) is parsed
    once by :func:`_whole_seconds` (as :func:`parse_ts` does); per row only ``HH:MM:SS.ffffff``
    is read. Anything else (lengths, non-ASCII, a bad digit or day, many days): the general path.
    """
    n = len(vals)
    if not typed and set(map(type, vals)) != {str}:
        raise TypeError("timestamp is not a string")
    try:  # typed: a None raises TypeError here, as len(None) does in the general path
        b = "|".join(vals).encode("ascii")
    except UnicodeEncodeError:
        return _ts_column_general(vals, typed)
    if n == 0 or len(b) != _ROW_LEN * n - 1:
        return _ts_column_general(vals, typed)
    c = np.frombuffer(b + b"|", dtype=np.uint8).reshape(n, _ROW_LEN)
    d = c[:, _TIME_DIGITS] - np.uint8(48)  # a non-digit wraps above 9
    if not ((d <= 9).all() and (c[:, _TIME_SEPS] == _TIME_SEP_VALS).all()):
        return _ts_column_general(vals, typed)
    t = d.astype(np.int64)
    hh, mi, ss = t[:, 0] * 10 + t[:, 1], t[:, 2] * 10 + t[:, 3], t[:, 4] * 10 + t[:, 5]
    if not ((hh <= 23) & (mi <= 59) & (ss <= 59)).all():
        return _ts_column_general(vals, typed)
    key = c[:, _DAY_TZ]
    day = np.empty(n, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    for _ in range(_MAX_DAYS):
        i = int(left.argmax())
        s = vals[i]
        if _DAY_RE.fullmatch(s, 0, 11) is None or _ZONE_RE.fullmatch(s, 26) is None:
            return _ts_column_general(vals, typed)
        try:
            midnight = int(_whole_seconds(s[:11] + "00:00:00", s[26:]))
        except (ValueError, OverflowError):
            return _ts_column_general(vals, typed)
        same = (key == key[i]).all(axis=1)
        day[same] = midnight
        left &= ~same
        if not left.any():
            break
    else:
        return _ts_column_general(vals, typed)
    whole = day + hh * 3600 + mi * 60 + ss
    out: np.ndarray = whole.astype(np.float64) + (t[:, 6:] @ _FRAC_W) / 1e6
    return out


def _ts_column_general(vals: Sequence[Any], typed: bool = False) -> np.ndarray:
    """parse_ts over a sequence of strings, vectorised for Suricata's fixed-width format.

    Bit-identical to :func:`parse_ts`: whole seconds are exact integers and the
    fraction is ``digits / 10**6``, which IEEE division rounds exactly like
    ``float(".ffffff")``; rows in another layout go through :func:`parse_ts`.
    Raises TypeError/ValueError like parse_ts on bad input. ``typed``: the values
    are known to be ``str`` or None (msgspec rows).
    """
    n = len(vals)
    if not typed and set(map(type, vals)) != {str}:  # typed: len(None) below raises TypeError
        raise TypeError("timestamp is not a string")
    try:
        if set(map(len, vals)) == {_TS_LEN}:  # the usual case: one ASCII buffer, no padding
            c = np.frombuffer("".join(vals).encode("ascii"), dtype=np.uint8).reshape(n, _TS_LEN)
            ok = np.ones(n, dtype=bool)
        else:
            c = np.array(vals, dtype=f"S{_TS_LEN}").view(np.uint8).reshape(n, _TS_LEN)
            ok = np.fromiter(map(len, vals), dtype=np.int64, count=n) == _TS_LEN
    except UnicodeEncodeError:
        return np.array([parse_ts(v) for v in vals], dtype=np.float64)
    for pos, ch in _TS_SEPS.items():
        ok &= c[:, pos] == ord(ch)
    neg = c[:, 26] == ord("-")
    ok &= (c[:, 26] == ord("+")) | neg
    d = c[:, _TS_DIGITS].astype(np.int64) - ord("0")
    ok &= ((d >= 0) & (d <= 9)).all(axis=1)

    def num(lo: int, hi: int) -> np.ndarray:
        v = d[:, lo]
        for k in range(lo + 1, hi):
            v = v * 10 + d[:, k]
        return v

    y, mo, dd, hh, mi, ss = num(0, 4), num(4, 6), num(6, 8), num(8, 10), num(10, 12), num(12, 14)
    frac, tzh, tzm = num(14, 20), num(20, 22), num(22, 24)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    ok &= (y >= 1) & (mo >= 1) & (mo <= 12) & (hh <= 23) & (mi <= 59) & (ss <= 59) & (tzh <= 23) & (tzm <= 59)
    mo_i = np.clip(mo, 1, 12) - 1
    ok &= (dd >= 1) & (dd <= _MDAYS[mo_i] + ((mo_i == 1) & leap))
    # days from civil (proleptic Gregorian), year >= 1
    yy = y - (mo <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * np.where(mo > 2, mo - 3, mo + 9) + 2) // 5 + dd - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    off = tzh * 3600 + tzm * 60
    whole = days * 86400 + hh * 3600 + mi * 60 + ss - np.where(neg, -off, off)
    out: np.ndarray = whole.astype(np.float64) + frac / 1e6
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            out[i] = parse_ts(vals[i])
    return out
