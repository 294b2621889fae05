"""Webhooks in the `webhook.webhooks` table and their deliveries, always accessed through
their owner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from services.common.errors import FailedPrecondition
from services.platform import tracing
from services.platform.db import Connection, Pool
from services.webhook.adapters.deliveries import NOTIFY_CHANNEL, attempts_of, delivery_of
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.delivery import DeliveryState
from services.webhook.domain.model import Delivery, NewWebhook, Webhook
from services.webhook.domain.ports import NewDelivery

_COLUMNS = (
    "w.webhook_id::text, w.user_id, w.url, w.events, w.description, w.active, w.created_at,"
    " w.disabled_reason, w.disabled_at, w.consecutive_failures,"
    " CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_expires_at END"
    " AS previous_secret_expires_at,"
    " (SELECT count(*) FROM webhook.deliveries d"
    "   WHERE d.webhook_id = w.webhook_id AND d.state = 'pending') AS pending_deliveries,"
    " (SELECT count(*) FROM webhook.deliveries d"
    "   WHERE d.webhook_id = w.webhook_id AND d.state = 'parked') AS parked_deliveries"
)
_DELIVERY_COLUMNS = (
    "delivery_id::text, webhook_id::text, event_type, order_id, state, created_at,"
    " CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at, last_error, seq"
)

# A name for list[Delivery] usable where a method named "list" shadows the builtin.
DeliveryList = list[Delivery]


def _webhook(row: dict[str, Any]) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"],
        user_id=row["user_id"],
        url=row["url"],
        events=tuple(row["events"]),
        description=row["description"],
        active=row["active"],
        created_at=row["created_at"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        consecutive_failures=row["consecutive_failures"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        pending_deliveries=row["pending_deliveries"],
        parked_deliveries=row["parked_deliveries"],
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
        await self._conn.execute(
            "INSERT INTO webhook.webhooks"
            " (webhook_id, user_id, url, events, description, secret_encrypted)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                webhook.webhook_id,
                self._user_id,
                webhook.url,
                list(webhook.events),
                webhook.description,
                self._cipher.encrypt(secret),
            ),
        )
        found = await self.get(webhook.webhook_id)
        assert found is not None
        return found

    async def list(self) -> list[Webhook]:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM webhook.webhooks w WHERE w.user_id = %s"
            " ORDER BY w.created_at, w.webhook_id",
            (self._user_id,),
        )
        return [_webhook(row) for row in await cursor.fetchall()]

    async def get(self, webhook_id: str) -> Webhook | None:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM webhook.webhooks w WHERE w.webhook_id = %s AND w.user_id = %s",
            (webhook_id, self._user_id),
        )
        row = await cursor.fetchone()
        return None if row is None else _webhook(row)

    async def delete(self, webhook_id: str) -> bool:
        cursor = await self._conn.execute(
            "DELETE FROM webhook.webhooks WHERE webhook_id = %s AND user_id = %s",
            (webhook_id, self._user_id),
        )
        return cursor.rowcount > 0

    async def rotate_secret(self, webhook_id: str, secret: str, grace: timedelta) -> Webhook | None:
        # The previous secret is the one signing now; rotating twice within a grace period
        # drops the oldest.
        cursor = await self._conn.execute(
            "UPDATE webhook.webhooks SET"
            " previous_secret_encrypted = CASE WHEN %(grace)s > interval '0'"
            "   THEN secret_encrypted END,"
            " previous_secret_expires_at = CASE WHEN %(grace)s > interval '0'"
            "   THEN now() + %(grace)s END,"
            " secret_encrypted = %(secret)s"
            " WHERE webhook_id = %(id)s AND user_id = %(user)s",
            {
                "grace": grace,
                "secret": self._cipher.encrypt(secret),
                "id": webhook_id,
                "user": self._user_id,
            },
        )
        return await self.get(webhook_id) if cursor.rowcount else None

    async def enable(self, webhook_id: str) -> Webhook | None:
        cursor = await self._conn.execute(
            "UPDATE webhook.webhooks SET active = true, disabled_at = NULL,"
            " disabled_reason = '', consecutive_failures = 0"
            " WHERE webhook_id = %s AND user_id = %s",
            (webhook_id, self._user_id),
        )
        return await self.get(webhook_id) if cursor.rowcount else None

    async def add_delivery(self, webhook_id: str, delivery: NewDelivery) -> Delivery | None:
        if await self.get(webhook_id) is None:
            return None
        await self._conn.execute(
            "INSERT INTO webhook.deliveries"
            " (delivery_id, webhook_id, event_id, event_type, order_id, body, traceparent)"
            " VALUES (%s, %s, %s, %s, NULL, %s, %s)",
            (
                delivery.delivery_id,
                webhook_id,
                delivery.event_id,
                delivery.event_type,
                delivery.body,
                tracing.current_traceparent(),
            ),
        )
        await self._notify()
        return await self._delivery(webhook_id, delivery.delivery_id)

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryState | None, before: int | None, limit: int
    ) -> tuple[DeliveryList, int | None] | None:
        if await self.get(webhook_id) is None:
            return None
        cursor = await self._conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook.deliveries"
            " WHERE webhook_id = %(id)s AND (%(state)s::text IS NULL OR state = %(state)s)"
            " AND (%(before)s::bigint IS NULL OR seq < %(before)s)"
            " ORDER BY seq DESC LIMIT %(limit)s",
            {
                "id": webhook_id,
                "state": None if state is None else state.value,
                "before": before,
                "limit": limit + 1,
            },
        )
        rows = await cursor.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        attempts = await attempts_of(self._conn, [row["delivery_id"] for row in rows])
        found = [delivery_of(row, attempts.get(row["delivery_id"], ())) for row in rows]
        return found, (rows[-1]["seq"] if more and rows else None)

    async def replay(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        found = await self._delivery(webhook_id, delivery_id)
        if found is None:
            return None
        if found.state == DeliveryState.PENDING:
            raise FailedPrecondition(
                "the delivery is still pending: it is sent at its next attempt; only a"
                " succeeded, failed or parked delivery can be replayed"
            )
        await self._conn.execute(
            f"UPDATE webhook.deliveries SET {_REPLAYED} WHERE delivery_id = %s", (delivery_id,)
        )
        await self._notify()
        return await self._delivery(webhook_id, delivery_id)

    async def replay_parked(self, webhook_id: str) -> int | None:
        if await self.get(webhook_id) is None:
            return None
        cursor = await self._conn.execute(
            f"UPDATE webhook.deliveries SET {_REPLAYED} WHERE webhook_id = %s AND state = 'parked'",
            (webhook_id,),
        )
        if cursor.rowcount:
            await self._notify()
        return cursor.rowcount

    async def _delivery(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        cursor = await self._conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook.deliveries"
            " WHERE delivery_id = %s AND webhook_id = %s",
            (delivery_id, webhook_id),
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        attempts = await attempts_of(self._conn, [row["delivery_id"]])
        return delivery_of(row, attempts.get(row["delivery_id"], ()))

    async def _notify(self) -> None:
        await self._conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))


# A replay starts a new round of attempts (the schedule's clock restarts); the attempt
# numbers count on, and the log keeps every earlier attempt.
_REPLAYED = (
    "state = 'pending', round_attempts = 0, round_started_at = now(), next_attempt_at = now(),"
    " finished_at = NULL, last_error = '', lease_owner = NULL, lease_expires_at = NULL,"
    " waiting = false"
)


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
