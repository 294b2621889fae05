"""The bridge's per-user socket limit on the real Redis: shared by replicas, admitted
atomically, expiring with a crashed replica, and falling back to a per-process limit while
Redis cannot be reached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from devstack import redis as devredis
from gateway.app import redis_client
from gateway.leases import SocketLeases, lease_key
from tests.ports import reserve_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(servers: None) -> AsyncIterator[Redis]:
    opened = redis_client(devredis.url())
    yield opened
    await opened.aclose()


def replica(client: Redis | None, name: str, *, ttl: float = 30, limit: int = 5) -> SocketLeases:
    return SocketLeases(client, limit=limit, ttl_seconds=ttl, instance_id=name)


def user() -> str:
    return f"lease-test-{uuid.uuid4().hex[:10]}"


async def test_replicas_share_the_limit_and_a_released_place_is_reused(client: Redis) -> None:
    one, two = replica(client, "one"), replica(client, "two")
    who = user()
    held = [await one.acquire(who) for _ in range(3)] + [await two.acquire(who) for _ in range(2)]
    assert all(lease is not None for lease in held)
    assert await one.acquire(who) is None
    assert await two.acquire(who) is None
    first = held[0]
    assert first is not None
    await one.release(first)
    assert await two.acquire(who) is not None
    assert await client.zcard(lease_key(who)) == 5


async def test_concurrent_admissions_never_exceed_the_limit(client: Redis) -> None:
    replicas = [replica(client, f"r{n}") for n in range(4)]
    who = user()
    results = await asyncio.gather(*(r.acquire(who) for r in replicas for _ in range(5)))
    assert sum(lease is not None for lease in results) == 5


async def test_a_crashed_replicas_leases_expire_and_renewal_keeps_the_live_ones(
    client: Redis,
) -> None:
    crashed, alive = replica(client, "crashed", ttl=3), replica(client, "alive", ttl=3)
    who = user()
    for _ in range(3):
        assert await crashed.acquire(who) is not None
    for _ in range(2):
        assert await alive.acquire(who) is not None
    assert await alive.acquire(who) is None
    deadline = asyncio.get_running_loop().time() + 10
    while await alive.acquire(who) is None:
        # The live replica renews; the crashed one does not.
        await alive.renew()
        assert asyncio.get_running_loop().time() < deadline, "the crashed leases never expired"
        await asyncio.sleep(alive.renew_interval / 2)
    assert alive.held(who) == 3
    assert await client.zcard(lease_key(who)) == 3


async def test_without_redis_the_limit_holds_per_process() -> None:
    unreachable = redis_client(f"redis://127.0.0.1:{reserve_port()}/0")
    try:
        leases = replica(unreachable, "cut-off")
        who = user()
        admitted = [await leases.acquire(who) for _ in range(6)]
        assert [lease is not None for lease in admitted] == [True] * 5 + [False]
        assert not leases.redis_available
    finally:
        await unreachable.aclose()


async def test_a_renewal_registers_again_what_redis_lost(client: Redis) -> None:
    leases = replica(client, "survivor")
    who = user()
    for _ in range(3):
        assert await leases.acquire(who) is not None
    await client.delete(lease_key(who))  # as after a Redis restart without its data
    await leases.renew()
    assert await client.zcard(lease_key(who)) == 3
    await leases.release_all()
    assert await client.zcard(lease_key(who)) == 0
