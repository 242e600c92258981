"""A small ``zeek-cut``: print chosen columns of a Zeek TSV log.

Honours ``#separator`` and ``#fields`` (also when a file holds several header
blocks); other ``#`` lines and lines before the first header are skipped.
Usage: ``python tests/zeek_cut.py [-F SEP] col ... < log``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence


def cut(lines: Iterable[str], columns: Sequence[str], out_sep: str = "\t") -> Iterator[str]:
    sep = "\t"
    idx: list[int | None] | None = None
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if line.startswith("#separator"):
            spec = line[len("#separator") :].strip()
            sep = bytes(spec, "ascii").decode("unicode_escape") if spec else "\t"
            continue
        if line.startswith("#fields"):
            names = line.split(sep)[1:]
            pos = {n: i for i, n in enumerate(names)}
            idx = [pos.get(c) for c in columns] if columns else list(range(len(names)))
            continue
        if line.startswith("#") or idx is None or not line:
            continue
        vals = line.split(sep)
        yield out_sep.join(vals[i] if i is not None and i < len(vals) else "" for i in idx)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out_sep = "\t"
    if len(args) >= 2 and args[0] == "-F":
        out_sep = args[1]
        args = args[2:]
    for row in cut(sys.stdin, args, out_sep):
        sys.stdout.write(row + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
