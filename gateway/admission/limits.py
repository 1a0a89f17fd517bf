"""Limits: request shape (messages, characters, max_tokens), per-key rate limits, per-backend concurrency."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.accounting import CHARS_PER_TOKEN
from gateway.errors import BackendOverloadedError, InvalidRequestError, RateLimitError
from gateway.settings import LimitSettings
from routers.base import Tier


def message_chars(messages: Any) -> int:
    """All string content inside ``messages`` (text, content parts, tool calls), walked without recursion."""
    total = 0
    stack = [messages]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def measured(value: Any, limit: int, depth: int = 1) -> int | None:
    """The string characters inside ``value``, or None when it nests lists and objects more than ``limit``
    levels deep: one walk for both. Recursive (three times faster than a stack of pairs here): the depth
    check comes before each level, so it never recurses deeper than ``limit`` (at most 200, settings)."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return len(value) if isinstance(value, str) else 0
    if depth > limit:
        return None
    total = 0
    for child in value:
        if isinstance(child, str):
            total += len(child)
            continue
        size = measured(child, limit, depth + 1)
        if size is None:
            return None
        total += size
    return total


def check_request(body: dict[str, Any], limits: LimitSettings) -> int:
    """Reject oversized requests with a 400 naming the param; returns the character count of the messages.

    Runs before the schema validation (the body is any JSON object here), cheapest check first.
    """
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequestError(
            f"too many messages: {len(messages)} (at most {limits.max_messages})", param="messages",
            code="too_many_messages")
    chars = 0
    for param, value in body.items():
        if isinstance(value, (dict, list)):
            size = measured(value, limits.max_depth)
            if size is None:
                raise InvalidRequestError(f"'{param}' is nested more than {limits.max_depth} levels deep",
                                          param=param)
            if param == "messages" and isinstance(value, list):
                chars = size
    if chars > limits.max_total_chars:
        raise InvalidRequestError(
            f"messages hold {chars} characters (at most {limits.max_total_chars})", param="messages",
            code="context_length_exceeded")
    return chars


def check_max_tokens(body: dict[str, Any], tier: Tier, limits: LimitSettings) -> None:
    ceiling = limits.max_tokens.get(tier)
    if ceiling is None:
        return
    for param in ("max_tokens", "max_completion_tokens"):
        value = body.get(param)
        if isinstance(value, int) and value > ceiling:
            raise InvalidRequestError(f"{param} is {value}; this gateway allows at most {ceiling}", param=param)


def estimate_tokens(chars: int) -> int:
    return chars // CHARS_PER_TOKEN + 1


@dataclass(frozen=True, slots=True)
class Rule:
    """Per-minute budgets for one key; ``None`` = unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


@dataclass(frozen=True, slots=True)
class RateCharge:
    """What admission charged a key's rate limit: settled against the real usage when the request ends."""

    key: str
    rule: Rule
    estimate: int


class RateLimiter(Protocol):
    """Per-key budgets. This process keeps them in memory; a shared store (Redis) could implement the same."""

    async def acquire(self, key: str, rule: Rule, tokens: int) -> float:
        """Take one request and ``tokens`` estimated tokens; 0.0 when allowed, else seconds to wait."""
        ...

    def settle(self, key: str, rule: Rule, tokens: int) -> None:
        """Charge the difference between the estimate and what the request really used (may be negative).

        Synchronous because it runs in the accounting sink; a shared store would queue the update.
        """
        ...


class TokenBucket:
    """Refills at ``capacity`` per minute. Token budgets may go into debt, paid back before the next request."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0.0 if it is now)."""
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


class MemoryRateLimiter:
    """Token buckets per key in this replica's memory; the least recently used keys are forgotten past a cap."""

    def __init__(self, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[TokenBucket | None, TokenBucket | None]] = OrderedDict()

    def _get(self, key: str, rule: Rule, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = (TokenBucket(rule.requests_per_minute, now) if rule.requests_per_minute else None,
                       TokenBucket(rule.tokens_per_minute, now) if rule.tokens_per_minute else None)
            self._buckets[key] = buckets
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        for bucket in buckets:
            if bucket is not None:
                bucket.refill(now)
        return buckets

    async def acquire(self, key: str, rule: Rule, tokens: int) -> float:
        if rule.unlimited():
            return 0.0
        requests, token_bucket = self._get(key, rule, self.clock())
        # A request needs one request slot and a token budget that is not in debt; its own estimate is
        # charged up front and corrected by settle(), so one large prompt is not refused forever.
        wait = max(requests.wait_for(1.0) if requests else 0.0,
                   token_bucket.wait_for(min(1.0, token_bucket.capacity)) if token_bucket else 0.0)
        if wait > 0:
            return wait
        if requests:
            requests.level -= 1.0
        if token_bucket:
            token_bucket.level -= tokens
        return 0.0

    def settle(self, key: str, rule: Rule, tokens: int) -> None:
        if rule.tokens_per_minute is None or tokens == 0:
            return
        _, token_bucket = self._get(key, rule, self.clock())
        if token_bucket is not None:
            token_bucket.level = min(token_bucket.capacity, token_bucket.level - tokens)


def rate_limited(kind: str, wait: float) -> RateLimitError:
    seconds = max(1, math.ceil(wait))
    return RateLimitError(f"rate limit reached for this API key ({kind}); retry in {seconds} s",
                          headers={"retry-after": str(seconds)})


class Bulkhead:
    """At most ``limit`` calls in flight to one backend, at most ``queue`` waiting, each for at most ``wait_s``."""

    def __init__(self, name: str, limit: int, queue: int, wait_s: float) -> None:
        self.name = name
        self.limit = limit
        self.queue = queue
        self.wait_s = wait_s
        self._slots = asyncio.Semaphore(limit)
        self.waiting = 0

    async def acquire(self) -> Callable[[], None]:
        """Wait for a slot; returns the function that gives it back (call it exactly once)."""
        slots = self._slots
        if slots.locked():
            if self.waiting >= self.queue:
                raise self._overloaded()
            self.waiting += 1
            try:
                await asyncio.wait_for(slots.acquire(), self.wait_s)
            except TimeoutError:
                raise self._overloaded() from None
            finally:
                self.waiting -= 1
        else:
            await slots.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                slots.release()

        return release

    def _overloaded(self) -> BackendOverloadedError:
        return BackendOverloadedError(f"backend {self.name} is at its concurrency limit",
                                      headers={"retry-after": "1"})
