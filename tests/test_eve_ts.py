"""The cached fast path of eve timestamp parsing equals ``datetime.fromisoformat``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from sidecar.sources.eve import _parse_ts_full, parse_ts


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_fast_path_matches_fromisoformat(d: datetime, off_min: int) -> None:
    tz = timezone(timedelta(minutes=off_min))
    sign = "+" if off_min >= 0 else "-"
    h, m = divmod(abs(off_min), 60)
    s = d.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{sign}{h:02d}{m:02d}"
    want = d.replace(tzinfo=tz).timestamp()
    assert abs(parse_ts(s) - want) < 1e-6
    assert abs(_parse_ts_full(s) - want) < 1e-6


def test_real_suricata_format() -> None:
    assert parse_ts("2021-06-06T15:57:01.123456+0200") == datetime(2021, 6, 6, 13, 57, 1, 123456, UTC).timestamp()
