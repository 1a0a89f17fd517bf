"""Responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}``: bounded, each for a TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredResponse:
    tier: str
    # The conversation as chat messages, this response's output included (translated tiers); None when the
    # upstream speaks the Responses API and keeps the conversation itself.
    messages: list[dict[str, Any]] | None
    response: dict[str, Any] | None  # the response object (translated tiers)


class ResponseStore:
    """At most ``max_entries`` responses; the least recently used goes first, expired ones are never returned."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[str, tuple[StoredResponse, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, response_id: str) -> StoredResponse | None:
        found = self._items.get(response_id)
        if found is None:
            return None
        if found[1] <= self.clock():
            del self._items[response_id]
            return None
        self._items.move_to_end(response_id)
        return found[0]

    def put(self, response_id: str, stored: StoredResponse) -> None:
        if not self.enabled:
            return
        self._items[response_id] = (stored, self.clock() + self.ttl_s)
        self._items.move_to_end(response_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
