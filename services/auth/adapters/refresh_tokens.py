"""Refresh tokens in `auth.refresh_tokens`, by token id (`jti`), grouped in families.

A family counts as revoked once any of its tokens is: `revoke_family` marks the tokens it
sees, and `spend` refuses a token with a revoked sibling, so a successor that a concurrent
refresh adds after the revocation can never be spent either.
"""

from datetime import datetime
from typing import Any

from services.auth.domain.model import IssuedRefreshToken, RefreshTokenRecord
from services.platform.db import Pool

_COLUMNS = "token_id, family_id::text, user_id::text, issued_at, expires_at, used_at, revoked_at"

# One statement: the row lock taken by the UPDATE makes a second spend of the same token wait,
# then find it used; the successor is inserted only if this statement spent the token.
_SPEND = f"""
WITH spent AS (
    UPDATE auth.refresh_tokens AS t SET used_at = %(at)s
     WHERE t.token_id = %(token_id)s
       AND t.used_at IS NULL
       AND t.revoked_at IS NULL
       AND NOT EXISTS (
           SELECT 1 FROM auth.refresh_tokens AS r
            WHERE r.family_id = t.family_id AND r.revoked_at IS NOT NULL
       )
    RETURNING t.*
), successor AS (
    INSERT INTO auth.refresh_tokens (token_id, family_id, user_id, issued_at, expires_at)
    SELECT %(successor_id)s, family_id, user_id, %(issued_at)s, %(expires_at)s FROM spent
)
SELECT {_COLUMNS} FROM spent
"""


def _record(row: dict[str, Any] | None) -> RefreshTokenRecord | None:
    return None if row is None else RefreshTokenRecord(**row)


class PostgresRefreshTokenStore:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def start_family(
        self, token: IssuedRefreshToken, *, family_id: str, user_id: str
    ) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth.refresh_tokens"
                " (token_id, family_id, user_id, issued_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token.token_id, family_id, user_id, token.issued_at, token.expires_at),
            )

    async def spend(
        self, token_id: str, successor: IssuedRefreshToken, *, at: datetime
    ) -> RefreshTokenRecord | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _SPEND,
                {
                    "at": at,
                    "token_id": token_id,
                    "successor_id": successor.token_id,
                    "issued_at": successor.issued_at,
                    "expires_at": successor.expires_at,
                },
            )
            row = await cursor.fetchone()
        return _record(row)

    async def find(self, token_id: str) -> RefreshTokenRecord | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM auth.refresh_tokens WHERE token_id = %s", (token_id,)
            )
            row = await cursor.fetchone()
        return _record(row)

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.refresh_tokens SET revoked_at = %s"
                " WHERE family_id = %s AND revoked_at IS NULL",
                (at, family_id),
            )
