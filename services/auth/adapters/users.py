"""Accounts in the `auth.users` table."""

import uuid
from typing import Any

from psycopg import sql

from services.auth.domain.model import NewUser, User
from services.common.identity import Role, Tier
from services.platform.db import Pool

_COLUMNS = "user_id::text, email, password_hash, full_name, phone, tier, role, created_at"


def _user(row: dict[str, Any]) -> User:
    return User(
        user_id=row["user_id"],
        email=row["email"],
        full_name=row["full_name"],
        phone=row["phone"],
        tier=Tier(row["tier"]),
        role=Role(row["role"]),
        created_at=row["created_at"],
        password_hash=row["password_hash"],
    )


class PostgresUserRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def add(self, user: NewUser) -> User | None:
        return await self._one(
            "INSERT INTO auth.users (user_id, email, password_hash, full_name, phone, tier, role)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (email) DO NOTHING RETURNING {_COLUMNS}",
            (
                user.user_id,
                user.email,
                user.password_hash,
                user.full_name,
                user.phone,
                user.tier.value,
                user.role.value,
            ),
        )

    async def by_email(self, email: str) -> User | None:
        return await self._one(f"SELECT {_COLUMNS} FROM auth.users WHERE email = %s", (email,))

    async def by_id(self, user_id: str) -> User | None:
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        return await self._one(f"SELECT {_COLUMNS} FROM auth.users WHERE user_id = %s", (key,))

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.users SET password_hash = %s, updated_at = now() WHERE user_id = %s",
                (password_hash, user_id),
            )

    async def set_tier(self, email: str, tier: Tier) -> Tier | None:
        before = await self._set("tier", email, tier.value)
        return None if before is None else Tier(before)

    async def set_role(self, email: str, role: Role) -> Role | None:
        before = await self._set("role", email, role.value)
        return None if before is None else Role(before)

    async def _set(self, column: str, email: str, value: str) -> str | None:
        """Sets one column of the account with ``email``; the value it had, read under the
        same row lock, so concurrent changes each see the one before them."""
        query = sql.SQL(
            "UPDATE auth.users AS u SET {column} = %s, updated_at = now()"
            " FROM (SELECT user_id, {column} AS before FROM auth.users"
            " WHERE email = %s FOR UPDATE) AS old"
            " WHERE u.user_id = old.user_id RETURNING old.before"
        ).format(column=sql.Identifier(column))
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, (value, email))
            row = await cursor.fetchone()
        return None if row is None else str(row["before"])

    async def _one(self, query: str, params: tuple[Any, ...]) -> User | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
        return None if row is None else _user(row)
