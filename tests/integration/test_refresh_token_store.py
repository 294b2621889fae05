"""The Postgres refresh-token store against real Postgres: tokens are spent once, a family is
revoked as a whole, and of two concurrent spends of one token exactly one wins."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.adapters.refresh_tokens import PostgresRefreshTokenStore
from services.auth.adapters.users import PostgresUserRepository
from services.auth.domain.model import IssuedRefreshToken, NewUser, RefreshTokenRecord
from services.common.identity import Role, Tier
from services.platform.db import Pool

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def issued(at: datetime = NOW) -> IssuedRefreshToken:
    return IssuedRefreshToken(uuid.uuid4().hex, at, at + timedelta(days=7))


@pytest.fixture
def store(pool: Pool) -> PostgresRefreshTokenStore:
    return PostgresRefreshTokenStore(pool)


@pytest.fixture
async def user_id(pool: Pool) -> str:
    user = await PostgresUserRepository(pool).add(
        NewUser(
            user_id=str(uuid.uuid4()),
            email=f"tokens-{uuid.uuid4().hex[:12]}@example.com",
            full_name="Ada",
            phone=None,
            tier=Tier.FREE,
            role=Role.USER,
            password_hash="not a real hash",
        )
    )
    assert user is not None
    return user.user_id


async def new_family(store: PostgresRefreshTokenStore, user_id: str) -> tuple[str, str]:
    family_id, first = str(uuid.uuid4()), issued()
    await store.start_family(first, family_id=family_id, user_id=user_id)
    return family_id, first.token_id


async def test_a_token_is_spent_once_and_its_successor_joins_the_family(
    store: PostgresRefreshTokenStore, user_id: str
) -> None:
    family_id, first = await new_family(store, user_id)
    stored = await store.find(first)
    assert stored == RefreshTokenRecord(first, family_id, user_id, NOW, NOW + timedelta(days=7))

    second = issued(NOW + timedelta(minutes=1))
    used_at = NOW + timedelta(minutes=1)
    spent = await store.spend(first, second, at=used_at)
    assert spent is not None
    assert (spent.token_id, spent.family_id, spent.used_at) == (first, family_id, used_at)
    assert await store.find(second.token_id) == RefreshTokenRecord(
        second.token_id, family_id, user_id, second.issued_at, second.expires_at
    )

    third = issued()
    assert await store.spend(first, third, at=used_at) is None
    assert await store.find(third.token_id) is None, "no successor for a token spent before"
    assert await store.spend(second.token_id, issued(), at=used_at) is not None


async def test_an_unknown_token_is_neither_spent_nor_found(
    store: PostgresRefreshTokenStore,
) -> None:
    assert await store.spend("no-such-token", issued(), at=NOW) is None
    assert await store.find("no-such-token") is None


async def test_a_revoked_family_spends_nothing_not_even_a_later_successor(
    store: PostgresRefreshTokenStore, user_id: str
) -> None:
    family_id, first = await new_family(store, user_id)
    other_family, other = await new_family(store, user_id)
    second = issued()
    assert await store.spend(first, second, at=NOW) is not None

    revoked_at = NOW + timedelta(minutes=2)
    await store.revoke_family(family_id, at=revoked_at)
    for token_id in (first, second.token_id):
        found = await store.find(token_id)
        assert found is not None and found.revoked_at == revoked_at
    assert await store.spend(second.token_id, issued(), at=revoked_at) is None

    # What a refresh racing the revocation can leave behind: a successor the revocation did
    # not see. Its revoked siblings keep it from ever being spent.
    late = issued()
    await store.start_family(late, family_id=family_id, user_id=user_id)
    assert await store.spend(late.token_id, issued(), at=revoked_at) is None

    await store.revoke_family(family_id, at=revoked_at + timedelta(minutes=1))
    found = await store.find(first)
    assert found is not None and found.revoked_at == revoked_at, "revoking again changes nothing"
    assert await store.spend(other, issued(), at=revoked_at) is not None, "other families live"
    assert other_family != family_id


async def test_of_two_concurrent_spends_of_one_token_exactly_one_wins(
    pool: Pool, store: PostgresRefreshTokenStore, user_id: str
) -> None:
    family_id, first = await new_family(store, user_id)
    successors = [issued(), issued()]
    async with pool.connection() as blocker:
        # Hold the token's row so both spends are in flight together, then let them race.
        async with blocker.transaction():
            cursor = await blocker.execute(
                "SELECT pg_backend_pid() AS pid FROM auth.refresh_tokens"
                " WHERE token_id = %s FOR UPDATE",
                (first,),
            )
            row = await cursor.fetchone()
            assert row is not None
            racing = [
                asyncio.create_task(store.spend(first, successor, at=NOW))
                for successor in successors
            ]
            await until_blocked(pool, blocker_pid=row["pid"], count=2)
        outcomes = await asyncio.gather(*racing)

    assert sum(outcome is not None for outcome in outcomes) == 1
    found = [await store.find(successor.token_id) for successor in successors]
    winner = 0 if outcomes[0] is not None else 1
    added = found[winner]
    assert added is not None and added.family_id == family_id
    assert found[1 - winner] is None, "the loser added no successor"


async def until_blocked(pool: Pool, *, blocker_pid: int, count: int) -> None:
    """Waits until `count` sessions wait behind the blocker (the second spend waits for the
    first one's tuple lock, which waits for the blocker)."""
    deadline = time.monotonic() + 10
    while True:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "WITH RECURSIVE behind(pid) AS ("
                " SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
                " UNION SELECT a.pid FROM pg_stat_activity AS a"
                " JOIN behind AS b ON b.pid = ANY(pg_blocking_pids(a.pid)))"
                " SELECT count(*) AS waiting FROM behind",
                (blocker_pid,),
            )
            row = await cursor.fetchone()
        if row is not None and row["waiting"] >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} spends waited on the lock"
        await asyncio.sleep(0.05)
