"""Run the PyPI ``cicflowmeter`` 0.5.0 on one pcap and write its CSV (offline, deterministic).

Needs Python >= 3.12 with ``cicflowmeter==0.5.0`` installed (``scripts/lab/build.sh`` makes
that venv); it is NOT a sidecar dependency.

Why a wrapper instead of the ``cicflowmeter`` command:

* the 0.5.0 CLI passes ``args.fields`` positionally into ``create_sniffer``'s
  ``input_directory`` slot (and ``verbose`` into ``fields``), so ``cicflowmeter -f x.pcap -c
  out.csv`` dies on an assertion / ``bool.split``; we call ``create_sniffer`` with keywords;
* ``create_sniffer`` starts a "periodic GC" thread that expires flows against the WALL
  clock (``time.time()``) every second. Reading a pcap recorded earlier, every flow looks
  idle for longer than ``EXPIRED_UPDATE`` (240 s) and is cut at whatever packet the reader
  happens to be on, so the output depends on machine speed. We disable that thread; flows
  then end only by the tool's own packet-time rules (240 s idle, 90 s / 120 s active) or at
  the end of the file (``flush_flows``).

Usage: ``python cfm_pcap.py IN.pcap OUT.csv``. Prints ``<rows> rows`` on success.
"""

from __future__ import annotations

import csv
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: cfm_pcap.py IN.pcap OUT.csv", file=sys.stderr)
        return 2
    pcap, out = argv[1], argv[2]
    os.environ["TZ"] = "UTC"  # the tool formats `timestamp` with local time; make it UTC
    time.tzset()
    import cicflowmeter.sniffer as sn

    def _no_wall_clock_gc(session: object, interval: float = 1.0) -> None:
        return None

    sn._start_periodic_gc = _no_wall_clock_gc
    sniffer, session = sn.create_sniffer(
        input_file=pcap, input_interface=None, output_mode="csv", output=out, fields=None, verbose=False
    )
    sniffer.start()
    sniffer.join(timeout=600)
    if getattr(sniffer, "running", False):
        sniffer.stop()
        print(f"{pcap}: cicflowmeter did not finish in 600 s", file=sys.stderr)
        return 1
    session.flush_flows()
    # the CSV writer closes its file in __del__; make sure it is gone before we count rows
    del session
    with open(out, newline="") as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1
    print(f"{max(rows, 0)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
