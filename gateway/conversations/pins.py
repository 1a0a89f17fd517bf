"""The pin store interface and its in-process implementation (a bounded LRU whose entries expire)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class PinStore(Protocol):
    """Conversation key -> the tier it is pinned to. Replicas share one by implementing this over Redis."""

    async def get(self, key: str) -> str | None:
        """The pinned tier name, or None (never pinned, or expired)."""
        ...

    async def put(self, key: str, tier: str, ttl_s: float) -> None: ...


class MemoryPinStore:
    """At most ``max_entries`` pins; the least recently used goes first, expired ones are never returned."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._pins: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    async def get(self, key: str) -> str | None:
        found = self._pins.get(key)
        if found is None:
            return None
        tier, expires = found
        if expires <= self.clock():
            del self._pins[key]
            return None
        self._pins.move_to_end(key)
        return tier

    async def put(self, key: str, tier: str, ttl_s: float) -> None:
        self._pins[key] = (tier, self.clock() + ttl_s)
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_entries:
            self._pins.popitem(last=False)
