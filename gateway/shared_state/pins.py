"""Sticky-conversation pins in Redis (the ``PinStore`` protocol), so any replica finds a conversation's tier."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.shared_state.base import SharedStateUnavailable, Shield


class RedisPinStore:
    """``get``/``put`` on plain Redis strings with a TTL. Pins always fail open: when Redis is unavailable a
    lookup finds no pin and a write is dropped (counted by the shield), since a lost pin only costs affinity."""

    def __init__(self, redis: Redis, shield: Shield, prefix: str = "tiergate:") -> None:
        self.redis = redis
        self.shield = shield
        self.prefix = prefix + "pin:"

    async def get(self, key: str) -> str | None:
        try:
            value = await self.shield.call("pin_get", lambda: self.redis.get(self.prefix + key))
        except SharedStateUnavailable:
            return None
        return None if value is None else str(value)

    async def put(self, key: str, tier: str, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            await self.shield.call("pin_put", lambda: self.redis.set(self.prefix + key, tier, px=ttl_ms))
        except SharedStateUnavailable:
            return
