"""Decoding ``BNN::Flow`` records (Zeek's WebSocket JSON) into canonical flow columns.

Three decoders, one result:

* :func:`decode_flow` is the reference: one record at a time, field by field from
  :data:`FLOW_LAYOUT`, every value checked; a bad record raises :class:`BadRecord`
  whose ``reason`` is the skip reason the source counts.
* :func:`decode_flows` takes a whole event's records, parsed by orjson: it transposes
  them into columns with C-level ``map``/``itemgetter``, checks each column at once (tag
  sets, value types, ranges) and converts through small caches.
* :func:`decode_message` (msgspec installed) parses a whole message straight into typed
  structs that mirror the layout, so tags, types, arities and count ranges are checked in
  C, then reads the columns off the structs.

The fast two either give exactly what :func:`decode_flow` gives for every record, column
for column, or None when anything is unexpected; the caller then takes the next slower
path, so bad input gets the same counted skips. ``tests/test_broker_flow.py`` checks the
equivalence on every real message shape and on generated records and faults.

A Zeek record travels as a vector of its fields by position; :data:`FLOW_LAYOUT` mirrors
``type Flow: record`` in ``zeek-scripts/scripts/main.zeek``. ``conn_id`` has 4 fields up
to Zeek 7.0, ``proto`` (count) from 7.1 and ``ctx`` (a record) from 8.0; only the first
four are used. Unset ``&optional`` fields arrive as ``none`` and stay missing (None).

The three live in :mod:`sidecar.sources.broker_flow_ref` (layout, :class:`BadRecord`, the
reference), :mod:`sidecar.sources.broker_flow_fast` (orjson columns) and
:mod:`sidecar.sources.broker_flow_ms` (msgspec structs); this module re-exports them.
"""

from sidecar.sources.broker_flow_fast import _SPAN as _SPAN
from sidecar.sources.broker_flow_fast import _UNIT_NS as _UNIT_NS
from sidecar.sources.broker_flow_fast import _timestamps as _timestamps
from sidecar.sources.broker_flow_fast import decode_flows
from sidecar.sources.broker_flow_ms import _FLOW_DECODER as _FLOW_DECODER
from sidecar.sources.broker_flow_ms import _FLOWS_DECODER as _FLOWS_DECODER
from sidecar.sources.broker_flow_ms import decode_message
from sidecar.sources.broker_flow_ref import AMOUNTS, COLUMNS, CONN_ID, FLOW_LAYOUT, BadRecord, decode_flow

__all__ = ["AMOUNTS", "COLUMNS", "CONN_ID", "FLOW_LAYOUT", "BadRecord", "decode_flow", "decode_flows",
           "decode_message"]
