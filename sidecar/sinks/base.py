"""The sink interface: something that takes verdict batches.

Sinks decide themselves which verdicts they care about (most write only
``malicious`` ones). ``reopen`` is called on SIGHUP (log rotation), ``flush`` when
a batch boundary is a good moment, ``close`` once at shutdown. A sink that raises
is logged and counted by the service; it does not stop the other sinks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sidecar.verdict import VerdictBatch


@runtime_checkable
class Sink(Protocol):
    name: str

    def write(self, verdicts: VerdictBatch) -> None: ...

    def flush(self) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...
