"""At most N concurrent sockets per user across every bridge replica, counted in Redis.

Each user has a sorted set ``ordermesh:gateway:sockets:{<user_id>}`` of socket leases: the
member names a socket of one bridge process (``<instance>:<n>``), the score is when the lease
expires (Redis's own clock, in ms, so replicas' clocks never disagree). One Lua script per
admission drops expired leases, counts, and adds the new lease only under the limit, so two
replicas admitting at once cannot both take the last place. Every bridge renews its leases
(one pipelined script per user every ``ttl / 3``) and removes a lease when its socket closes;
the leases of a bridge that crashed simply expire after ``ttl`` seconds.

When Redis cannot be reached the bridge does not wait for it: it logs a warning, admits
against a per-process count of the same limit (so a user may hold up to N sockets on each
replica during the outage), skips Redis for a few seconds, and its renewals re-register
every socket it holds once Redis answers again. Live updates never go through Redis.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "ordermesh:gateway:sockets:"
# How long Redis is left alone after it failed, so a dead Redis costs one timeout per
# window rather than one per connecting socket.
REDIS_RETRY_SECONDS = 5.0
WARNING_INTERVAL_SECONDS = 30.0

_ADMIT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

_RENEW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""


def lease_key(user_id: str) -> str:
    # The braces make the user id the hash tag, should the set ever live in a Redis Cluster.
    return f"{KEY_PREFIX}{{{user_id}}}"


@dataclass(frozen=True, slots=True)
class Lease:
    user_id: str
    member: str


class SocketLeases:
    """Admits sockets under a per-user limit shared by every replica (see the module)."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        limit: int,
        ttl_seconds: float,
        instance_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._ttl_ms = int(ttl_seconds * 1000)
        self._instance = instance_id
        self._clock = clock
        self._numbers = itertools.count(1)
        self._held: dict[str, set[str]] = {}
        self._skip_redis_until = 0.0
        self._warned_at: float | None = None
        self._admit = redis.register_script(_ADMIT) if redis is not None else None
        self._renew = redis.register_script(_RENEW) if redis is not None else None

    @property
    def renew_interval(self) -> float:
        return self._ttl_ms / 3000

    @property
    def redis_available(self) -> bool:
        return self._redis is not None and self._clock() >= self._skip_redis_until

    def held(self, user_id: str) -> int:
        return len(self._held.get(user_id, ()))

    async def acquire(self, user_id: str) -> Lease | None:
        """A lease for one more socket of ``user_id``, or None at the limit."""
        if self.held(user_id) >= self._limit:
            return None
        lease = Lease(user_id, f"{self._instance}:{next(self._numbers)}")
        if self._admit is not None and self.redis_available:
            try:
                admitted = await self._admit(
                    keys=[lease_key(user_id)], args=[lease.member, self._limit, self._ttl_ms]
                )
            except (RedisError, OSError) as error:
                self._redis_failed("admission", error)
            else:
                if not admitted:
                    return None
        self._held.setdefault(user_id, set()).add(lease.member)
        return lease

    async def release(self, lease: Lease) -> None:
        members = self._held.get(lease.user_id)
        if members is None or lease.member not in members:
            return
        members.discard(lease.member)
        if not members:
            del self._held[lease.user_id]
        if self._redis is not None and self.redis_available:
            try:
                await self._redis.zrem(lease_key(lease.user_id), lease.member)
            except (RedisError, OSError) as error:
                self._redis_failed("release", error)

    async def renew(self) -> None:
        """Extends (or re-registers) every lease this process holds: one round trip."""
        if self._redis is None or self._renew is None or not self._held:
            return
        if not self.redis_available:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, members in self._held.items():
                    await self._renew(
                        keys=[lease_key(user_id)], args=[self._ttl_ms, *members], client=pipe
                    )
                await pipe.execute()
        except (RedisError, OSError) as error:
            self._redis_failed("renewal", error)
        else:
            if self._warned_at is not None:
                log.info("socket leases back in redis", extra={"users": len(self._held)})
                self._warned_at = None

    async def release_all(self) -> None:
        """Gives back every lease of this process (shutdown)."""
        held, self._held = self._held, {}
        if self._redis is None or not held or not self.redis_available:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, members in held.items():
                    pipe.zrem(lease_key(user_id), *members)
                await pipe.execute()
        except (RedisError, OSError) as error:
            self._redis_failed("release", error)

    def _redis_failed(self, what: str, error: Exception) -> None:
        now = self._clock()
        self._skip_redis_until = now + REDIS_RETRY_SECONDS
        if self._warned_at is None or now - self._warned_at >= WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning(
                "redis unavailable: socket limit enforced per process",
                extra={"during": what, "error": str(error) or type(error).__name__},
            )
