"""IP network lists given by the operator: the block sink's allowlist, the flood rule's ignore list."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str], what: str = "entry") -> list[Network]:
    """Each item as an IP network (a bare address is a /32 or /128); ValueError names a bad one."""
    nets: list[Network] = []
    for it in items:
        try:
            nets.append(ipaddress.ip_network(str(it).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{what} {it!r} is not an IP network: {exc}") from exc
    return nets


def split_networks(text: str) -> tuple[str, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` (one config string) → the networks as normalised CIDR text."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return tuple(str(n) for n in parse_networks(parts))


class NetworkSet:
    """Membership of textual addresses in a few networks, memoised per address (bounded)."""

    def __init__(self, cidrs: Iterable[str], memo_max: int = 1 << 16) -> None:
        self.nets = parse_networks(cidrs)
        self._memo: dict[str, bool] = {}
        self._memo_max = memo_max

    def contains(self, addrs: np.ndarray) -> np.ndarray:
        out = np.zeros(len(addrs), dtype=bool)
        for i, a in enumerate(addrs.tolist()):
            key = a if isinstance(a, str) else repr(a)  # memo keys must hash; addresses are text
            hit = self._memo.get(key)
            if hit is None:
                try:
                    ip = ipaddress.ip_address(a) if isinstance(a, str) else None
                    hit = ip is not None and any(ip in n for n in self.nets)
                except ValueError:  # not an address (missing or garbled): never a member
                    hit = False
                if len(self._memo) >= self._memo_max:
                    self._memo.clear()
                self._memo[key] = hit
            out[i] = hit
        return out
