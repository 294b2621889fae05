"""Webhooks in the `webhook.webhooks` table, always accessed through their owner."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.platform.db import Connection, Pool
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.model import NewWebhook, Webhook

_COLUMNS = "webhook_id::text, user_id, url, events, description, active, created_at"


def _webhook(row: dict[str, Any]) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"],
        user_id=row["user_id"],
        url=row["url"],
        events=tuple(row["events"]),
        description=row["description"],
        active=row["active"],
        created_at=row["created_at"],
    )


class PostgresOwnedWebhooks:
    def __init__(self, conn: Connection, user_id: str, cipher: SecretCipher) -> None:
        self._conn = conn
        self._user_id = user_id
        self._cipher = cipher

    async def count(self) -> int:
        cursor = await self._conn.execute(
            "SELECT count(*) AS registered FROM webhook.webhooks WHERE user_id = %s",
            (self._user_id,),
        )
        row = await cursor.fetchone()
        return int(row["registered"]) if row else 0

    async def add(self, webhook: NewWebhook, secret: str) -> Webhook:
        cursor = await self._conn.execute(
            "INSERT INTO webhook.webhooks"
            " (webhook_id, user_id, url, events, description, secret_encrypted)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (
                webhook.webhook_id,
                self._user_id,
                webhook.url,
                list(webhook.events),
                webhook.description,
                self._cipher.encrypt(secret),
            ),
        )
        row = await cursor.fetchone()
        assert row is not None
        return _webhook(row)

    async def list(self) -> list[Webhook]:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM webhook.webhooks WHERE user_id = %s"
            " ORDER BY created_at, webhook_id",
            (self._user_id,),
        )
        return [_webhook(row) for row in await cursor.fetchall()]

    async def delete(self, webhook_id: str) -> bool:
        cursor = await self._conn.execute(
            "DELETE FROM webhook.webhooks WHERE webhook_id = %s AND user_id = %s",
            (webhook_id, self._user_id),
        )
        return cursor.rowcount > 0


class PostgresWebhookRepository:
    def __init__(self, pool: Pool, cipher: SecretCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    @asynccontextmanager
    async def owned_by(self, user_id: str) -> AsyncIterator[PostgresOwnedWebhooks]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"webhook.webhooks:{user_id}",),
            )
            yield PostgresOwnedWebhooks(conn, user_id, self._cipher)
