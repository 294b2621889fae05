"""Sliding-log counters in Redis, one round trip per check.

Every limit of a call is one sorted set whose members are the admitted requests, scored by
the time they were admitted (Redis's clock, in microseconds, so replicas of this service
agree). One Lua script, loaded once and called with EVALSHA, drops the members older than
each window, counts the rest, and admits the call into every set only if it fits all of
them; it also counts the decision in a hash, by route, tier and outcome. Exact: no more
than the limit is ever admitted in any window-long span, and capacity comes back one
request at a time as the window slides.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ratelimit.domain import Check, Count, CountersUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "ordermesh:rl:"
DECISIONS_KEY = "ordermesh:rl:decisions"

# KEYS: the counters, then the decisions hash.
# ARGV: hits, a member id unique to this call, the decisions field prefix ("route|tier"),
#       then per counter its limit and its window in microseconds.
# Returns: {admitted (1/0), now (µs), then per counter: requests in window, oldest score}.
SLIDING_LOG = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local hits = tonumber(ARGV[1])
local member = ARGV[2]
local counters = #KEYS - 1
local counts = {}
local admitted = 1
for i = 1, counters do
  local limit = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  counts[i] = redis.call('ZCARD', KEYS[i])
  if counts[i] + hits > limit then admitted = 0 end
end
local result = {admitted, now}
for i = 1, counters do
  local window = tonumber(ARGV[3 + 2 * i])
  if admitted == 1 then
    for h = 1, hits do
      redis.call('ZADD', KEYS[i], now, member .. ':' .. h)
    end
    redis.call('PEXPIRE', KEYS[i], math.ceil(window / 1000))
    counts[i] = counts[i] + hits
  end
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  result[#result + 1] = counts[i]
  result[#result + 1] = oldest[2] or tostring(now)
end
redis.call('HINCRBY', KEYS[#KEYS], ARGV[3] .. (admitted == 1 and '|allowed' or '|limited'), 1)
return result
"""


class RedisCounters:
    """``ratelimit.domain.Counters`` on Redis. After a failure it answers
    ``CountersUnavailable`` at once for ``cooldown`` seconds instead of making every caller
    wait for a timeout."""

    def __init__(
        self, client: aioredis.Redis, *, cooldown: float = 1.0, decisions_key: str = DECISIONS_KEY
    ) -> None:
        self._redis = client
        self._decisions_key = decisions_key
        self._sha: str | None = None
        self._cooldown = cooldown
        self._down_until = 0.0
        self._ids = itertools.count()
        self._prefix = os.urandom(6).hex()

    async def _load(self) -> str:
        sha = await self._redis.script_load(SLIDING_LOG)
        self._sha = str(sha)
        return self._sha

    async def hit(
        self, checks: Sequence[Check], hits: int, route: str, tier: str
    ) -> tuple[bool, list[Count]]:
        if time.monotonic() < self._down_until:
            raise CountersUnavailable("redis is unreachable (cooling down)")
        keys = [KEY_PREFIX + check.key for check in checks] + [self._decisions_key]
        args: list[str | int] = [hits, f"{self._prefix}.{next(self._ids)}", f"{route}|{tier}"]
        for check in checks:
            args += [check.rate.requests, check.rate.window_seconds * 1_000_000]
        try:
            try:
                reply = await self._redis.evalsha(
                    self._sha or await self._load(), len(keys), *keys, *args
                )
            except NoScriptError:
                # Redis restarted (or flushed its scripts): load it again, once.
                reply = await self._redis.evalsha(await self._load(), len(keys), *keys, *args)
        except (RedisError, OSError) as error:
            self._down_until = time.monotonic() + self._cooldown
            log.warning("rate-limit counters unavailable: %s", error)
            raise CountersUnavailable(str(error)) from error
        admitted, now = int(reply[0]), int(reply[1])
        counts = []
        for index, check in enumerate(checks):
            in_window = int(reply[2 + 2 * index])
            oldest = float(reply[3 + 2 * index])
            leaves_in = (oldest + check.rate.window_seconds * 1_000_000 - now) / 1_000_000
            counts.append(Count(in_window, max(0.0, leaves_in)))
        return admitted == 1, counts

    async def decisions(self) -> dict[str, int]:
        """Decisions counted so far: ``route|tier|allowed`` or ``…|limited`` → count."""
        raw = await self._redis.hgetall(self._decisions_key)
        return {_text(key): int(value) for key, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
