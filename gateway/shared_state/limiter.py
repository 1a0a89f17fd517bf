"""Per-key requests/min and tokens/min in Redis: one Lua script per request (token buckets on Redis's clock)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from gateway.admission.limits import MemoryRateLimiter, RateLimiter, Rule
from gateway.errors import GatewayError
from gateway.shared_state.base import SharedStateUnavailable, Shield, unavailable_error

log = logging.getLogger("tiergate.shared_state")

# The same buckets as gateway.admission.limits.MemoryRateLimiter: each refills its per-minute capacity evenly, a
# request needs one request slot and a token budget not in debt, and its token estimate is charged up front.
# Redis's own clock (TIME) so replicas with skewed clocks agree. Returns 0 or the milliseconds to wait.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  local l = tonumber(v[1])
  if l == nil then return cap end
  return math.min(cap, l + (now - tonumber(v[2])) * cap / 60000)
end
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local wait = 0
local rl, tl = 0, 0
if rpm > 0 then
  rl = level(KEYS[1], rpm)
  if rl < 1 then wait = math.max(wait, (1 - rl) * 60000 / rpm) end
end
if tpm > 0 then
  tl = level(KEYS[2], tpm)
  local need = math.min(1, tpm)
  if tl < need then wait = math.max(wait, (need - tl) * 60000 / tpm) end
end
if wait > 0 then return math.ceil(wait) end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'l', tostring(rl - 1), 't', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 'l', tostring(tl - tokens), 't', now)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
return 0
"""

SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local l = tonumber(v[1])
if l == nil then l = cap else l = math.min(cap, l + (now - tonumber(v[2])) * cap / 60000) end
redis.call('HSET', KEYS[1], 'l', tostring(math.min(cap, l - tonumber(ARGV[2]))), 't', now)
redis.call('PEXPIRE', KEYS[1], 120000)
return 0
"""


class RedisRateLimiter:
    """A :class:`gateway.admission.limits.RateLimiter` shared by every worker and replica using the same Redis.

    When Redis fails: ``fail_open`` falls back to this process's own buckets (counted by the shield),
    ``fail_closed`` refuses the request with a 503.
    """

    def __init__(self, redis: Redis, shield: Shield, prefix: str, fail_open: bool = True,
                 local: RateLimiter | None = None) -> None:
        self.redis = redis
        self.shield = shield
        self.prefix = prefix
        self.fail_open = fail_open
        self.local: RateLimiter = local or MemoryRateLimiter()
        self._acquire = redis.register_script(ACQUIRE)
        self._settle = redis.register_script(SETTLE)
        self._pending: set[asyncio.Task[None]] = set()

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}rl:{{{key}}}:r", f"{self.prefix}rl:{{{key}}}:t"]

    async def acquire(self, key: str, rule: Rule, tokens: int) -> float:
        if rule.unlimited():
            return 0.0
        args = [rule.requests_per_minute or 0, rule.tokens_per_minute or 0, tokens]
        try:
            waited = await self.shield.call("rate_limit", lambda: self._acquire(keys=self._keys(key), args=args))
        except SharedStateUnavailable:
            if not self.fail_open:
                raise unavailable_error() from None
            return await self.local.acquire(key, rule, tokens)
        return int(waited) / 1000.0

    def settle(self, key: str, rule: Rule, tokens: int) -> None:
        if rule.tokens_per_minute is None or tokens == 0:
            return
        task = asyncio.get_running_loop().create_task(self._settle_now(key, rule.tokens_per_minute, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_now(self, key: str, per_minute: int, tokens: int) -> None:
        try:
            await self.shield.call("rate_settle", lambda: self._settle(keys=self._keys(key)[1:],
                                                                      args=[per_minute, tokens]))
        except (SharedStateUnavailable, GatewayError):
            self.local.settle(key, Rule(tokens_per_minute=per_minute), tokens)

    async def flush(self) -> None:
        """Wait for queued settlements (shutdown, tests)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
