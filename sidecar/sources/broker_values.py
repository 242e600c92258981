"""Broker's WebSocket JSON values (``{"@data-type": TAG, "data": ...}``): one class per tag.

Each tag maps to one class below (see ``TYPES``); ``decode`` looks the tag up in that table and
``encode`` asks the value for its tag and ``data``. Messages built from these values live in
:mod:`sidecar.sources.broker_codec`, which re-exports every public name here. Anything malformed raises
:class:`sidecar.errors.ProtocolError`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self

from sidecar.errors import ProtocolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BrokerValue:
    """Base of every decoded Broker value; subclasses set ``TAG`` and implement the two hooks."""

    TAG: ClassVar[str] = ""

    @classmethod
    def from_data(cls, data: Any) -> BrokerValue:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_data(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class UnknownDataType(ProtocolError):
    """A value's ``@data-type`` is not one of :data:`TYPES`."""


def _fail(tag: str, data: Any, why: str) -> ProtocolError:
    return ProtocolError(f"invalid Broker {tag!r} value {data!r:.200}: {why}")


@dataclass(frozen=True)
class _Scalar(BrokerValue):
    """A value whose ``data`` is a plain JSON scalar, checked by the class's KINDS/BOUNDS/WHAT."""

    value: Any
    KINDS: ClassVar[tuple[type, ...]] = ()
    BOUNDS: ClassVar[tuple[int, int] | None] = None
    WHAT: ClassVar[str] = ""

    @classmethod
    def from_data(cls, data: Any) -> BrokerValue:
        ok = isinstance(data, cls.KINDS) and (bool in cls.KINDS or not isinstance(data, bool))
        if not ok or (cls.BOUNDS is not None and not cls.BOUNDS[0] <= data <= cls.BOUNDS[1]):
            raise _fail(cls.TAG, data, f"must be {cls.WHAT}")
        try:
            return cls(float(data) if cls.TAG == "real" else data)
        except OverflowError as exc:
            raise _fail(cls.TAG, data, f"must be {cls.WHAT}") from exc

    def to_data(self) -> Any:
        return self.value


@dataclass(frozen=True)
class NoneValue(BrokerValue):
    TAG: ClassVar[str] = "none"

    @classmethod
    def from_data(cls, data: Any) -> NoneValue:
        if data != {} or not isinstance(data, dict):
            raise _fail(cls.TAG, data, "must be {}")
        return cls()

    def to_data(self) -> Any:
        return {}


@dataclass(frozen=True)
class Boolean(_Scalar):
    value: bool
    TAG: ClassVar[str] = "boolean"
    KINDS: ClassVar[tuple[type, ...]] = (bool,)
    WHAT: ClassVar[str] = "true or false"


@dataclass(frozen=True)
class Count(_Scalar):
    value: int
    TAG: ClassVar[str] = "count"
    KINDS: ClassVar[tuple[type, ...]] = (int,)
    BOUNDS: ClassVar[tuple[int, int] | None] = (0, 2**64 - 1)
    WHAT: ClassVar[str] = "an unsigned 64-bit integer"


@dataclass(frozen=True)
class Integer(_Scalar):
    value: int
    TAG: ClassVar[str] = "integer"
    KINDS: ClassVar[tuple[type, ...]] = (int,)
    BOUNDS: ClassVar[tuple[int, int] | None] = (-(2**63), 2**63 - 1)
    WHAT: ClassVar[str] = "a signed 64-bit integer"


@dataclass(frozen=True)
class Real(_Scalar):
    value: float
    TAG: ClassVar[str] = "real"
    KINDS: ClassVar[tuple[type, ...]] = (int, float)
    WHAT: ClassVar[str] = "a JSON number"


@dataclass(frozen=True)
class String(_Scalar):
    value: str
    TAG: ClassVar[str] = "string"
    KINDS: ClassVar[tuple[type, ...]] = (str,)
    WHAT: ClassVar[str] = "a JSON string"


@dataclass(frozen=True)
class EnumValue(String):
    TAG: ClassVar[str] = "enum-value"


# Timespan units, largest first (encoding picks the largest exact one).
_UNITS_NS: dict[str, int] = {
    "d": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "min": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}
_TIMESPAN_RE = re.compile(r"(-?\d+)(ns|us|ms|s|min|h|d)")


@dataclass(frozen=True)
class _Nanoseconds(BrokerValue):
    """Shared by timespan and timestamp: an exact integer count of nanoseconds."""

    nanoseconds: int

    @classmethod
    def from_seconds(cls, seconds: float) -> Self:
        return cls(round(seconds * 10**9))

    @property
    def seconds(self) -> float:
        return self.nanoseconds / 10**9


@dataclass(frozen=True)
class Timespan(_Nanoseconds):
    """A duration, kept exactly as integer nanoseconds (``"1500ms"`` -> 1_500_000_000)."""

    TAG: ClassVar[str] = "timespan"

    @classmethod
    def from_data(cls, data: Any) -> Timespan:
        m = _TIMESPAN_RE.fullmatch(data) if isinstance(data, str) else None
        if m is None:
            raise _fail(cls.TAG, data, "expected <int><unit> with unit in ns us ms s min h d")
        return cls(int(m.group(1)) * _UNITS_NS[m.group(2)])

    def to_data(self) -> Any:
        if self.nanoseconds == 0:
            return "0s"
        for unit, size in _UNITS_NS.items():
            if self.nanoseconds % size == 0:
                return f"{self.nanoseconds // size}{unit}"
        raise AssertionError("unreachable: ns divides everything")  # pragma: no cover


_TIMESTAMP_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?")
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Timestamp(_Nanoseconds):
    """A UTC point in time, kept as integer nanoseconds since the Unix epoch."""

    TAG: ClassVar[str] = "timestamp"

    @classmethod
    def from_data(cls, data: Any) -> Timestamp:
        m = _TIMESTAMP_RE.fullmatch(data) if isinstance(data, str) else None
        if m is None:
            raise _fail(cls.TAG, data, "expected YYYY-MM-DDThh:mm:ss[.fff]")
        try:
            whole = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
        except ValueError as exc:
            raise _fail(cls.TAG, data, str(exc)) from exc
        delta = whole - _EPOCH
        secs = delta.days * 86_400 + delta.seconds
        frac = int((m.group(2) or "0").ljust(9, "0"))
        return cls(secs * 10**9 + frac)

    def to_data(self) -> Any:
        secs, frac = divmod(self.nanoseconds, 10**9)
        text = (_EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
        if frac % 10**6 == 0:
            return f"{text}.{frac // 10**6:03d}"
        if frac % 10**3 == 0:
            return f"{text}.{frac // 10**3:06d}"
        return f"{text}.{frac:09d}"


@dataclass(frozen=True)
class Address(BrokerValue):
    value: IPAddress
    TAG: ClassVar[str] = "address"

    @classmethod
    def from_data(cls, data: Any) -> Address:
        try:
            return cls(ipaddress.ip_address(data if isinstance(data, str) else ""))
        except ValueError as exc:
            raise _fail(cls.TAG, data, "not an IPv4/IPv6 address") from exc

    def to_data(self) -> Any:
        return str(self.value)


@dataclass(frozen=True)
class Subnet(BrokerValue):
    """``addr/len``; the address is kept as sent (host bits are not masked)."""

    address: IPAddress
    length: int
    TAG: ClassVar[str] = "subnet"

    @classmethod
    def from_data(cls, data: Any) -> Subnet:
        addr, sep, length = data.partition("/") if isinstance(data, str) else ("", "", "")
        try:
            ip = ipaddress.ip_address(addr)
            n = int(length) if sep and length.isdigit() else -1
        except ValueError as exc:
            raise _fail(cls.TAG, data, "expected <address>/<length>") from exc
        if not 0 <= n <= ip.max_prefixlen:
            raise _fail(cls.TAG, data, "expected <address>/<length> with a valid length")
        return cls(ip, n)

    def to_data(self) -> Any:
        return f"{self.address}/{self.length}"


_PORT_RE = re.compile(r"(\d+|\?)/(tcp|udp|icmp|unknown|\?)")


@dataclass(frozen=True)
class Port(BrokerValue):
    """``80/tcp``, ``53/udp``, ``0/icmp``, ``?/unknown``; ``number`` is None for ``?``."""

    number: int | None
    protocol: str
    TAG: ClassVar[str] = "port"

    @classmethod
    def from_data(cls, data: Any) -> Port:
        m = _PORT_RE.fullmatch(data) if isinstance(data, str) else None
        if m is None or (m.group(1) != "?" and int(m.group(1)) > 65535):
            raise _fail(cls.TAG, data, "expected <0-65535>/<tcp|udp|icmp|?>")
        return cls(None if m.group(1) == "?" else int(m.group(1)), m.group(2))

    def to_data(self) -> Any:
        return f"{'?' if self.number is None else self.number}/{self.protocol}"


def _items(tag: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise _fail(tag, data, "must be a JSON array")
    return data


@dataclass(frozen=True)
class Vector(BrokerValue):
    """Ordered values; Zeek records travel as vectors (fields by position)."""

    items: tuple[BrokerValue, ...]
    TAG: ClassVar[str] = "vector"

    @classmethod
    def from_data(cls, data: Any) -> Vector:
        return cls(tuple(decode(x) for x in _items(cls.TAG, data)))

    def to_data(self) -> Any:
        return [encode(x) for x in self.items]


@dataclass(frozen=True)
class Set(Vector):
    """Set elements in wire order (kept as a tuple so re-encoding is exact)."""

    TAG: ClassVar[str] = "set"


@dataclass(frozen=True)
class Table(BrokerValue):
    entries: tuple[tuple[BrokerValue, BrokerValue], ...]
    TAG: ClassVar[str] = "table"

    @classmethod
    def from_data(cls, data: Any) -> Table:
        out = []
        for entry in _items(cls.TAG, data):
            if not isinstance(entry, dict) or set(entry) != {"key", "value"}:
                raise _fail(cls.TAG, entry, 'entries must be {"key": ..., "value": ...}')
            out.append((decode(entry["key"]), decode(entry["value"])))
        return cls(tuple(out))

    def to_data(self) -> Any:
        return [{"key": encode(k), "value": encode(v)} for k, v in self.entries]


_SCALARS = (NoneValue, Boolean, Count, Integer, Real, String, EnumValue, Timespan, Timestamp)
_OTHERS = (Address, Subnet, Port, Vector, Set, Table)
#: The decode table: ``@data-type`` -> class.
TYPES: dict[str, type[BrokerValue]] = {cls.TAG: cls for cls in (*_SCALARS, *_OTHERS)}


def decode(obj: Any) -> BrokerValue:
    """Decode one ``{"@data-type": ..., "data": ...}`` object (extra keys are ignored)."""
    if not isinstance(obj, dict) or "@data-type" not in obj or "data" not in obj:
        raise ProtocolError(f'expected {{"@data-type": ..., "data": ...}}, got {obj!r:.200}')
    tag = obj["@data-type"]
    cls = TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise UnknownDataType(f"unknown Broker @data-type {tag!r:.100}")
    return cls.from_data(obj["data"])


def encode(value: BrokerValue) -> dict[str, Any]:
    if type(value).TAG not in TYPES:
        raise ProtocolError(f"cannot encode {value!r}: not a Broker value")
    return {"@data-type": value.TAG, "data": value.to_data()}
