"""Vectorised Zeek TSV conversion of a block of column-checked lines, on bytes.

The block is joined once; field offsets come from one ``flatnonzero`` over the
bytes, and each needed column is gathered into a fixed-width byte matrix.
Plain decimal numbers (digits and at most one dot, the only form Zeek writes)
are parsed in numpy: the digits form an integer ``M`` < 2**53 and the value is
``M / 10**k``, one correctly rounded IEEE division of two exact doubles, which
is bit-identical to Python's ``float(str)``. Any other spelling of a number
goes through Python's own ``float``/``int`` for that column. Strings are decoded
once per column. Anything the reference path would count as a bad row (bad
number, range, column split) makes :func:`fast_batch` return ``None`` and the
caller converts that block row by row (:mod:`sidecar.sources.zeek_tsv`), which
stays the reference. Missing values stay missing (NaN / -1 / None), never 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sidecar.flow import OBJ, FlowBatch
from sidecar.sources.zeek_tsv_small import str_batch
from sidecar.sources.zeek_tsv_values import (
    FLOAT_COLS,
    MAX_COUNT,
    MAX_DURATION,
    PORT_COLS,
    SOURCE,
    combine_label,
    flags_from_history,
)

_P10I = np.array([10**i for i in range(19)], dtype=np.int64)
_P10F = np.array([float(10**i) for i in range(23)], dtype=np.float64)  # all exact
_MAX_DIGITS = 18  # int64-safe digit count
_TWO53 = 2**53
#: low-cardinality string columns, decoded once per distinct value
_CAT_COLS = ("proto", "service", "conn_state", "history")


def fast_sep(sep: str) -> bytes | None:
    """The separator as one byte if the bytes fast path can use it, else None."""
    if len(sep) != 1 or not sep.isascii() or sep in "\r\n\x00":
        return None
    return sep.encode("ascii")


class _Block:
    """Field offsets of ``n`` joined lines with ``nc`` fields each."""

    def __init__(self, blob: bytes, starts: np.ndarray, ends: np.ndarray, unset: bytes, empty: bytes) -> None:
        arr = np.frombuffer(blob, dtype=np.uint8)
        # zero margins on both sides, so every field window of any width stays inside
        self.pad = int((ends[:, -1] - starts[:, 0]).max()) + 9
        self.parr = np.zeros(arr.size + 2 * self.pad, dtype=np.uint8)
        self.parr[self.pad : self.pad + arr.size] = arr
        self._win: dict[int, np.ndarray] = {}
        self.starts = starts
        self.ends = ends
        self.unset = unset
        self.empty = empty
        self.n = starts.shape[0]

    def _windows(self, w: int) -> np.ndarray:
        """Read-only view: row ``i`` is the ``w`` bytes of the padded block from offset ``i``."""
        win = self._win.get(w)
        if win is None:
            a = self.parr
            win = self._win[w] = np.ndarray((a.size - w + 1, w), dtype=np.uint8, buffer=a, strides=(1, 1))
        return win

    def matrix(self, j: int, mult: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 matrix n x w, NUL-padded, w a multiple of ``mult``; lengths; missing mask)."""
        s = self.starts[:, j]
        ln = self.ends[:, j] - s
        w = -(-max(1, int(ln.max())) // mult) * mult
        pos = np.arange(w)
        m = np.where(pos < ln[:, None], self._windows(w)[s + self.pad], np.uint8(0))
        sv = m.view(f"S{w}").ravel()
        miss = ln == 0
        for tok in (self.unset, self.empty):
            if 0 < len(tok) <= w:
                miss |= (ln == len(tok)) & (sv == tok)
        return m, ln, miss

    def numeric(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 matrix n x w right-aligned and padded with b"0", lengths, missing mask)."""
        e = self.ends[:, j]
        ln = e - self.starts[:, j]
        w = max(1, int(ln.max()))
        pos = np.arange(w)
        m = np.where(pos < (w - ln)[:, None], np.uint8(48), self._windows(w)[e + (self.pad - w)])
        miss = ln == 0
        for tok in (self.unset, self.empty):
            t = len(tok)
            if 0 < t <= w:
                miss |= (ln == t) & (m[:, w - t :] == np.frombuffer(tok, dtype=np.uint8)).all(axis=1)
        return m, ln, miss

    def strings(self, j: int) -> tuple[list[str], np.ndarray]:
        """Decoded values of raw column ``j`` and its missing mask."""
        m, _, miss = self.matrix(j)
        vals = b"\n".join(m.view(f"S{m.shape[1]}").ravel().tolist()).decode("utf-8", "replace").split("\n")
        return vals, miss

    def cat(self, j: int, toks: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Raw column ``j`` as (unique values, None where missing; inverse index)."""
        m, _, _ = self.matrix(j, 8)
        first, inv = _factorize(m)
        u = m[first].view(f"S{m.shape[1]}").ravel().tolist()
        return _uniq_obj([x.decode("utf-8", "replace") for x in u], toks), inv


def _factorize(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct row, row -> distinct index) of a uint8 matrix, width % 8 == 0.

    Rows are hashed to one uint64 (exact when the width is 8); a hash collision is
    detected by comparing every row with its representative, then rows are sorted exactly.
    """
    words = m.view(np.uint64)
    h = words[:, 0].copy()
    for k in range(1, words.shape[1]):
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= words[:, k]
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel()
    if words.shape[1] > 1 and not (m[first[inv]] == m).all():
        _, first, inv = np.unique(m.view(f"S{m.shape[1]}").ravel(), return_index=True, return_inverse=True)
        inv = inv.ravel()
    return first, inv


def _uniq_obj(vals: list[str], toks: tuple[str, ...]) -> np.ndarray:
    o = np.empty(len(vals), dtype=OBJ)
    o[:] = [None if (x in toks or not x) else x for x in vals]
    return o


def _plain_number(m: np.ndarray, ln: np.ndarray, want: np.ndarray, is_int: bool) -> np.ndarray | None:
    """Values of plain decimals (right-aligned, '0'-padded) in rows ``want``; None if one is not plain.

    Integers come back as int64, decimals as float64 (``M / 10**k``, exact as ``float(str)``).
    """
    w = m.shape[1]
    if w > _MAX_DIGITS:
        return None
    d = m - np.uint8(48)  # digits 0..9; anything else wraps to >= 10
    nd = d >= 10
    isdot = None if is_int else d == np.uint8(254)  # '.'
    if isdot is not None and isdot.any():
        ndots = isdot.sum(axis=1)
        bad = (nd & ~isdot).any(axis=1) | (ndots > 1) | ((ndots == 1) & (ln < 2))
        if (bad & want).any():
            return None
        mp = np.where(isdot, 0, d).astype(np.int64) @ _P10I[w - 1 :: -1]
        k = np.where(ndots == 1, (w - 1) - isdot.argmax(axis=1), 0)
        r = mp % _P10I[k]
        mant = np.where(ndots == 1, (mp - r) // 10 + r, mp)
    else:
        if (nd.any(axis=1) & want).any():
            return None
        mant = d.astype(np.int64) @ _P10I[w - 1 :: -1]
        k = None
    if is_int:
        return mant
    if ((mant >= _TWO53) & want).any():
        return None
    v = mant.astype(np.float64)
    if k is not None:
        v /= _P10F[k]
    return v


def _py_floats(vals: list[str], miss: np.ndarray, c: str) -> np.ndarray | None:
    """Python ``float`` on a column (reference spelling rules); None on a bad value."""
    try:
        v = (
            np.array([float(x) for x in vals], dtype=np.float64)
            if not miss.any()
            else np.array(
                [np.nan if mi else float(x) for x, mi in zip(vals, miss.tolist(), strict=True)],
                dtype=np.float64,
            )
        )
    except ValueError:
        return None
    if (~np.isfinite(v) & ~miss).any():
        return None
    return v


def _py_ports(vals: list[str], miss: np.ndarray) -> np.ndarray | None:
    try:
        iv = np.array(
            [-1 if mi else int(x) for x, mi in zip(vals, miss.tolist(), strict=True)], dtype=np.int64
        )
    except (ValueError, OverflowError):
        return None
    if ((iv < 0) & ~miss).any():
        return None
    return iv


def _float_col(blk: _Block, j: int, c: str) -> np.ndarray | None:
    m, ln, miss = blk.numeric(j)
    v = _plain_number(m, ln, ~miss, False)
    if v is not None:
        v[miss] = np.nan
    else:
        vals, miss = blk.strings(j)
        v = _py_floats(vals, miss, c)
        if v is None:
            return None
    if c != "ts":
        lim = MAX_DURATION if c == "duration" else MAX_COUNT
        if ((~((v >= 0) & (v <= lim))) & ~miss).any():
            return None
    return v


def _port_col(blk: _Block, j: int) -> np.ndarray | None:
    m, ln, miss = blk.numeric(j)
    iv = _plain_number(m, ln, ~miss, True)
    if iv is not None:
        iv[miss] = -1
    else:
        vals, miss = blk.strings(j)
        iv = _py_ports(vals, miss)
        if iv is None:
            return None
    if (iv > 65535).any():
        return None
    return iv.astype(np.int32)


def _none_where(vals: list[Any], miss: np.ndarray) -> np.ndarray:
    o = np.empty(len(vals), dtype=OBJ)
    o[:] = vals
    if miss.any():
        o[miss] = None
    return o


def _py_miss(vals: list[str], toks: tuple[str, str]) -> np.ndarray:
    return np.fromiter((x in toks or not x for x in vals), dtype=bool, count=len(vals))


def _offsets(blob: bytes, n: int, nc: int, sb: int) -> tuple[np.ndarray, np.ndarray] | None:
    arr = np.frombuffer(blob, dtype=np.uint8)
    d = np.flatnonzero((arr == sb) | (arr == 10))
    if d.size != n * nc or d[-1] != arr.size - 1:
        return None
    ends = d.reshape(n, nc)
    if not (arr[ends[:, -1]] == 10).all():
        return None
    starts = np.empty_like(d)
    starts[0] = 0
    starts[1:] = d[:-1] + 1
    return starts.reshape(n, nc), ends


def fast_batch(lines: list[bytes], hdr: Any) -> FlowBatch | None:
    """Convert lines (each ending in exactly one ``\\n``) or return None (use the reference)."""
    sepb = fast_sep(hdr.sep)
    n, nc = len(lines), hdr.ncols
    if sepb is None or not n or nc < 1 or "\ufffd" in hdr.unset + hdr.empty:
        return None
    blob = b"".join(lines)
    if b"\x00" in blob:
        return None
    offs = _offsets(blob, n, nc, sepb[0])
    if offs is None:
        return None
    blk = _Block(blob, offs[0], offs[1], hdr.unset.encode(), hdr.empty.encode())
    toks = (hdr.unset, hdr.empty)
    ci, ck = hdr.combined, hdr.combined_n
    # the combined column (IoT-23): split once per distinct value
    comb_u: list[list[str]] = []
    comb_inv = np.zeros(n, dtype=np.intp)
    if ci is not None:
        cm, _, _ = blk.matrix(ci, 8)
        first, comb_inv = _factorize(cm)
        cu = cm[first].view(f"S{cm.shape[1]}").ravel().tolist()
        subs = [x.decode("utf-8", "replace").split() for x in cu]
        if any(len(x) != ck for x in subs):
            return None
        comb_u = [[x[q] for x in subs] for q in range(ck)]

    def raw(p: int) -> int | list[str]:
        if ci is None or p < ci:
            return p
        if p < ci + ck:
            u = comb_u[p - ci]
            return [u[i] for i in comb_inv.tolist()]
        return p - ck + 1

    def strs(p: int) -> tuple[list[str], np.ndarray]:
        r = raw(p)
        if isinstance(r, int):
            return blk.strings(r)
        return r, _py_miss(r, toks)

    def cat(p: int) -> tuple[np.ndarray, np.ndarray]:
        if ci is not None and ci <= p < ci + ck:
            return _uniq_obj(comb_u[p - ci], toks), comb_inv
        r = raw(p)
        assert isinstance(r, int)  # combined parts are handled above
        return blk.cat(r, toks)

    cols: dict[str, Any] = {}
    cats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.errstate(invalid="ignore"):
        for c, p in hdr.index.items():
            r = raw(p)
            if c in FLOAT_COLS or c in PORT_COLS:
                if isinstance(r, int):
                    got = _float_col(blk, r, c) if c in FLOAT_COLS else _port_col(blk, r)
                else:
                    mi = _py_miss(r, toks)
                    got = _py_floats(r, mi, c) if c in FLOAT_COLS else _py_ports(r, mi)
                    if got is not None and c in PORT_COLS:
                        got = None if (got > 65535).any() else got.astype(np.int32)
                    elif got is not None and c != "ts":
                        lim = MAX_DURATION if c == "duration" else MAX_COUNT
                        got = None if ((~((got >= 0) & (got <= lim))) & ~mi).any() else got
                if got is None:
                    return None
                cols[c] = got
                continue
            if c in _CAT_COLS:
                u, inv = cat(p)
                if c == "proto":
                    u[:] = [None if x is None else x.lower() for x in u.tolist()]
                cats[c] = (u, inv)
                cols[c] = u[inv]
                continue
            vals, miss = strs(p)
            cols[c] = _none_where(vals, miss)
    if "history" in cats and "proto" in cats:
        uh, ih = cats["history"]
        up, ip = cats["proto"]
        fl = [flags_from_history(h, "tcp") for h in uh.tolist()]
        tcp = np.array([x == "tcp" for x in up.tolist()], dtype=bool)[ip]
        of = np.array([f[0] for f in fl], dtype=np.int16)[ih]
        rf = np.array([f[1] for f in fl], dtype=np.int16)[ih]
        of[~tcp] = -1
        rf[~tcp] = -1
        cols["orig_flags"] = of
        cols["resp_flags"] = rf
    labels: np.ndarray | None = None
    if hdr.label_i is not None:
        ul, il = cat(hdr.label_i)
        if hdr.detail_i is not None:
            ud, idt = cat(hdr.detail_i)
            nd = len(ud)
            uc, ic = np.unique(il * nd + idt, return_inverse=True)
            lab_u = np.empty(len(uc), dtype=OBJ)
            lab_u[:] = [combine_label(ul[x // nd], ud[x % nd]) for x in uc.tolist()]
            labels = lab_u[ic.ravel()]
        else:
            labels = ul[il]
    return FlowBatch.from_columns(cols, SOURCE, n=n, label=labels)


#: below this many lines the str path (:mod:`sidecar.sources.zeek_tsv_small`) is
#: cheaper: the bytes path has a fixed per-column numpy cost (measured break-even
#: 256-1024 lines on a Pi-class core)
SMALL_BLOCK = 512


def convert_block(lines: list[bytes], hdr: Any) -> FlowBatch | None:
    """Vectorised conversion of column-checked lines; None means "use the reference"."""
    if len(lines) < SMALL_BLOCK:
        return str_batch([ln.decode("utf-8", "replace")[:-1] for ln in lines], hdr)
    return fast_batch(lines, hdr)
