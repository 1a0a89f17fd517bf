"""Spend counters per scope (key or team) and UTC day/month, in this process or in Redis (two Lua scripts)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from gateway.shared_state.base import Caps, Scope, Shield, Spend, Verdict

if TYPE_CHECKING:  # redis costs about 20 MiB of RSS to import; a memory-backend gateway never needs it
    from redis.asyncio import Redis

DAY_TTL_S = 2 * 86_400
MONTH_TTL_S = 32 * 86_400
RESERVATION_TTL_S = 600  # a replica that dies holding reservations frees them after this


def _blocks(caps: Caps, spent: Spend, reserved_total: int, reserved_large: int, large: bool) -> Verdict:
    if ((caps.daily is not None and spent.daily + reserved_total >= caps.daily)
            or (caps.monthly is not None and spent.monthly + reserved_total >= caps.monthly)):
        return "exhausted"
    if large and ((caps.large_daily is not None and spent.large_daily + reserved_large >= caps.large_daily)
                  or (caps.large_monthly is not None
                      and spent.large_monthly + reserved_large >= caps.large_monthly)):
        return "large_exhausted"
    return "ok"


def _worst(verdicts: list[Verdict]) -> Verdict:
    if "exhausted" in verdicts:
        return "exhausted"
    return "large_exhausted" if "large_exhausted" in verdicts else "ok"


class MemorySpendStore:
    """This process only (``state.backend: memory``, and the fail-open fallback of the Redis store)."""

    def __init__(self) -> None:
        self._spent: dict[tuple[str, str, str], int] = defaultdict(int)  # (scope, period, total|large)
        self._reserved: dict[tuple[str, str], int] = defaultdict(int)  # (scope, total|large)

    async def spend(self, scope: Scope, day: str, month: str) -> Spend:
        s = self._spent
        n = scope.name
        return Spend(s[n, day, "total"], s[n, month, "total"], s[n, day, "large"], s[n, month, "large"])

    async def reserve(self, scopes: list[Scope], large: bool, estimate: int, day: str, month: str) -> Verdict:
        verdicts = [_blocks(scope.caps, await self.spend(scope, day, month), self._reserved[scope.name, "total"],
                            self._reserved[scope.name, "large"], large) for scope in scopes]
        verdict = _worst(verdicts)
        if verdict == "ok":
            for scope in scopes:
                self._reserved[scope.name, "total"] += estimate
                if large:
                    self._reserved[scope.name, "large"] += estimate
        return verdict

    async def commit(self, scopes: list[Scope], large: bool, estimate: int, reserved_large: bool, cost: int,
                     day: str, month: str) -> None:
        for scope in scopes:
            n = scope.name
            self._reserved[n, "total"] = max(0, self._reserved[n, "total"] - estimate)
            if reserved_large:
                self._reserved[n, "large"] = max(0, self._reserved[n, "large"] - estimate)
            for period in (day, month):
                self._spent[n, period, "total"] += cost
                if large:
                    self._spent[n, period, "large"] += cost


# KEYS: per scope (day hash, month hash, reservation hash). ARGV: n, large, estimate, then 4 caps per scope
# (-1 = none). Same rule as _blocks: refuse when spent + reserved has reached a cap.
RESERVE = """
local function num(v) if v then return tonumber(v) end return 0 end
local n, large, est = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local verdict = 0
for i = 0, n - 1 do
  local d, m, r = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local cd, cm = tonumber(ARGV[4 + i * 4]), tonumber(ARGV[5 + i * 4])
  local cld, clm = tonumber(ARGV[6 + i * 4]), tonumber(ARGV[7 + i * 4])
  local rt, rl = num(redis.call('HGET', r, 'total')), num(redis.call('HGET', r, 'large'))
  if (cd >= 0 and num(redis.call('HGET', d, 'total')) + rt >= cd)
      or (cm >= 0 and num(redis.call('HGET', m, 'total')) + rt >= cm) then
    verdict = 2
  elseif large and verdict < 1 and ((cld >= 0 and num(redis.call('HGET', d, 'large')) + rl >= cld)
      or (clm >= 0 and num(redis.call('HGET', m, 'large')) + rl >= clm)) then
    verdict = 1
  end
end
if verdict > 0 then return verdict end
for i = 0, n - 1 do
  local r = KEYS[i * 3 + 3]
  redis.call('HINCRBY', r, 'total', est)
  if large then redis.call('HINCRBY', r, 'large', est) end
  redis.call('EXPIRE', r, ARGV[#ARGV])
end
return 0
"""

# ARGV: n, reserved_large, estimate, large, cost, day ttl, month ttl.
COMMIT = """
local n, rlarge, est = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local large, cost = ARGV[4] == '1', tonumber(ARGV[5])
local function release(r, field)
  if redis.call('HINCRBY', r, field, -est) < 0 then redis.call('HSET', r, field, 0) end
end
for i = 0, n - 1 do
  local d, m, r = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  release(r, 'total')
  if rlarge then release(r, 'large') end
  if cost > 0 then
    redis.call('HINCRBY', d, 'total', cost)
    redis.call('HINCRBY', m, 'total', cost)
    if large then
      redis.call('HINCRBY', d, 'large', cost)
      redis.call('HINCRBY', m, 'large', cost)
    end
    redis.call('EXPIRE', d, ARGV[6])
    redis.call('EXPIRE', m, ARGV[7])
  end
end
return 0
"""

_VERDICTS: tuple[Verdict, Verdict, Verdict] = ("ok", "large_exhausted", "exhausted")


def _cap(value: int | None) -> int:
    return -1 if value is None else value


class RedisSpendStore:
    """Every replica's spend in one Redis; reserve and commit are one atomic script call each.

    Raises :class:`gateway.shared_state.base.SharedStateUnavailable` (through the shield) when Redis fails.
    """

    def __init__(self, redis: Redis, shield: Shield, prefix: str = "tiergate:") -> None:
        self.redis = redis
        self.shield = shield
        self.prefix = prefix + "spend:"
        self._reserve = redis.register_script(RESERVE)
        self._commit = redis.register_script(COMMIT)

    def _keys(self, scopes: list[Scope], day: str, month: str) -> list[str]:
        keys: list[str] = []
        for scope in scopes:
            base = f"{self.prefix}{{{scope.name}}}"
            keys += [f"{base}:d:{day}", f"{base}:m:{month}", f"{base}:reserved"]
        return keys

    async def reserve(self, scopes: list[Scope], large: bool, estimate: int, day: str, month: str) -> Verdict:
        args: list[int] = [len(scopes), int(large), estimate]
        for scope in scopes:
            c = scope.caps
            args += [_cap(c.daily), _cap(c.monthly), _cap(c.large_daily), _cap(c.large_monthly)]
        args.append(RESERVATION_TTL_S)
        keys = self._keys(scopes, day, month)
        code = await self.shield.call("budget_reserve", lambda: self._reserve(keys=keys, args=args))
        return _VERDICTS[int(code)]

    async def commit(self, scopes: list[Scope], large: bool, estimate: int, reserved_large: bool, cost: int,
                     day: str, month: str) -> None:
        args = [len(scopes), int(reserved_large), estimate, int(large), cost, DAY_TTL_S, MONTH_TTL_S]
        keys = self._keys(scopes, day, month)
        await self.shield.call("budget_commit", lambda: self._commit(keys=keys, args=args))

    async def spend(self, scope: Scope, day: str, month: str) -> Spend:
        day_key, month_key, _ = self._keys([scope], day, month)

        async def read() -> list[list[str | None]]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(day_key, ["total", "large"])
            pipe.hmget(month_key, ["total", "large"])
            return list(await pipe.execute())

        (dt, dl), (mt, ml) = await self.shield.call("budget_read", read)
        return Spend(int(dt or 0), int(mt or 0), int(dl or 0), int(ml or 0))
