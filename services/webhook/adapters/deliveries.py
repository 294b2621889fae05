"""Deliveries in Postgres: recorded by the dispatcher consumer inside its inbox transaction,
claimed and finished by senders (FOR UPDATE SKIP LOCKED plus a lease, so several senders
never send one delivery at once), read by the API.

After recording or rescheduling deliveries a transaction notifies ``webhook_deliveries``;
senders LISTEN on it, so a delivery is sent at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import psycopg
from cryptography.fernet import InvalidToken
from psycopg.types.json import Jsonb

from services.common.errors import InvalidArgument
from services.platform import tracing
from services.platform.db import Connection, Pool
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.delivery import DeliveryState
from services.webhook.domain.model import Delivery, DeliveryAttempt, Target
from services.webhook.domain.ports import (
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
)
from services.webhook.domain.rules import parse_target

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "webhook_deliveries"
# Delivery ids are derived from the event and the webhook, so recording one twice is a no-op.
DELIVERY_NAMESPACE = uuid.UUID("5b0c7a51-8d6e-4f0e-9a53-0f1c2d3e4b5a")


def delivery_id_for(event_id: uuid.UUID, webhook_id: str) -> str:
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{webhook_id}"))


def delivery_of(row: Mapping[str, Any], attempts: Sequence[DeliveryAttempt]) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        order_id=row["order_id"],
        state=row["state"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        attempts=tuple(attempts),
    )


async def attempts_of(
    conn: Connection, delivery_ids: Sequence[str]
) -> dict[str, list[DeliveryAttempt]]:
    """Every attempt of the deliveries, the latest first."""
    if not delivery_ids:
        return {}
    cursor = await conn.execute(
        "SELECT delivery_id::text, number, started_at, latency_ms, status_code,"
        " response_excerpt, error FROM webhook.delivery_attempts"
        " WHERE delivery_id = ANY(%s::uuid[]) ORDER BY delivery_id, number DESC",
        (list(delivery_ids),),
    )
    found: dict[str, list[DeliveryAttempt]] = defaultdict(list)
    for row in await cursor.fetchall():
        found[row["delivery_id"]].append(
            DeliveryAttempt(
                number=row["number"],
                started_at=row["started_at"],
                latency_ms=row["latency_ms"],
                status_code=row["status_code"],
                response_excerpt=row["response_excerpt"],
                error=row["error"],
            )
        )
    return found


# --- the dispatcher consumer's side -------------------------------------------------------


async def known_order(conn: Connection, order_id: str) -> tuple[int, dict[str, Any]] | None:
    """The order's version and document as last folded, locked for this transaction."""
    cursor = await conn.execute(
        "SELECT version, document FROM webhook.orders WHERE order_id = %s FOR UPDATE",
        (order_id,),
    )
    row = await cursor.fetchone()
    return None if row is None else (int(row["version"]), dict(row["document"]))


async def save_order(conn: Connection, document: Mapping[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO webhook.orders (order_id, user_id, version, document)"
        " VALUES (%(order_id)s, %(user_id)s, %(version)s, %(document)s)"
        " ON CONFLICT (order_id) DO UPDATE SET version = excluded.version,"
        " document = excluded.document, updated_at = now()",
        {
            "order_id": document["order_id"],
            "user_id": document["user_id"],
            "version": document["version"],
            "document": Jsonb(document),
        },
    )


async def subscribed_webhooks(conn: Connection, user_id: str, event_type: str) -> list[str]:
    """The user's active webhooks subscribed to ``event_type`` (or to all)."""
    cursor = await conn.execute(
        "SELECT webhook_id::text FROM webhook.webhooks"
        " WHERE user_id = %s AND active AND (events && ARRAY[%s, '*'])"
        " ORDER BY created_at, webhook_id",
        (user_id, event_type),
    )
    return [row["webhook_id"] for row in await cursor.fetchall()]


async def record_deliveries(
    conn: Connection, rows: Iterable[tuple[str, str, str, str, str, bytes]]
) -> int:
    """Inserts deliveries (delivery id, webhook id, event id, event type, order id, body) in
    the given order, skipping any already recorded; notifies senders."""
    recorded = 0
    for row in rows:
        # Behind an earlier pending delivery of the same order to the same webhook, it
        # waits (out of the senders' sight) until that one finishes. FOR SHARE: a sender
        # finishing that one right now holds its row; waiting for it means seeing it
        # finished (and not waiting), and a sender finishing it later waits for this
        # transaction, then sees this row to release it.
        cursor = await conn.execute(
            "INSERT INTO webhook.deliveries"
            " (delivery_id, webhook_id, event_id, event_type, order_id, body, traceparent,"
            "  waiting)"
            " SELECT %(id)s, %(webhook)s, %(event)s, %(type)s, %(order)s, %(body)s, %(trace)s,"
            " EXISTS (SELECT 1 FROM webhook.deliveries e WHERE e.webhook_id = %(webhook)s"
            "   AND e.order_id = %(order)s AND e.state = 'pending' FOR SHARE)"
            " ON CONFLICT DO NOTHING",
            {
                **dict(zip(("id", "webhook", "event", "type", "order", "body"), row, strict=True)),
                "trace": tracing.traceparent_for(row[4]),
            },
        )
        recorded += cursor.rowcount
    if recorded:
        await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
    return recorded


def _text(value: str, limit: int = 2000) -> str:
    """Text Postgres stores (no NUL), bounded."""
    return value.replace("\x00", "")[:limit]


# --- the sender's side -----------------------------------------------------------------------

ORPHAN_SWEEP_SECONDS = 60.0
_CLAIM_LOCK = 0x77_6562_686F_6F6B  # "webhook" in ASCII: the claims' advisory lock
_CLAIM = """
WITH busy AS (
    SELECT d.webhook_id, w.user_id, count(*) AS n
    FROM webhook.deliveries d JOIN webhook.webhooks w ON w.webhook_id = d.webhook_id
    WHERE d.lease_owner IS NOT NULL AND d.lease_expires_at > now() AND d.state = 'pending'
    GROUP BY d.webhook_id, w.user_id
), user_busy AS (
    SELECT user_id, sum(n) AS n FROM busy GROUP BY user_id
), candidates AS (
    SELECT d.delivery_id, d.webhook_id, w.user_id, d.seq, d.next_attempt_at
    FROM webhook.deliveries d JOIN webhook.webhooks w ON w.webhook_id = d.webhook_id
    WHERE d.state = 'pending' AND NOT d.waiting AND d.next_attempt_at <= now()
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now())
      AND NOT EXISTS (
          SELECT 1 FROM webhook.deliveries e
          WHERE e.webhook_id = d.webhook_id AND e.order_id = d.order_id
            AND e.state = 'pending' AND e.seq < d.seq)
      AND coalesce((SELECT n FROM busy b WHERE b.webhook_id = d.webhook_id), 0)
          < %(per_endpoint)s
      AND coalesce((SELECT n FROM user_busy u WHERE u.user_id = w.user_id), 0) < %(per_user)s
    ORDER BY d.next_attempt_at, d.seq
    LIMIT %(scan)s
    FOR UPDATE OF d SKIP LOCKED
), endpoint_ranked AS (
    SELECT c.delivery_id, c.user_id, c.seq, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.webhook_id ORDER BY c.seq)
               + coalesce((SELECT n FROM busy b WHERE b.webhook_id = c.webhook_id), 0)
               AS endpoint_load
    FROM candidates c
), user_ranked AS (
    SELECT e.delivery_id, e.seq, e.next_attempt_at,
           row_number() OVER (PARTITION BY e.user_id ORDER BY e.seq)
               + coalesce((SELECT n FROM user_busy u WHERE u.user_id = e.user_id), 0)
               AS user_load
    FROM endpoint_ranked e
    WHERE e.endpoint_load <= %(per_endpoint)s
), chosen AS (
    SELECT delivery_id FROM user_ranked
    WHERE user_load <= %(per_user)s
    ORDER BY next_attempt_at, seq
    LIMIT %(limit)s
)
UPDATE webhook.deliveries d
SET lease_owner = %(owner)s, lease_expires_at = now() + %(lease)s
FROM chosen, webhook.webhooks w
WHERE d.delivery_id = chosen.delivery_id AND w.webhook_id = d.webhook_id
RETURNING d.delivery_id::text, d.webhook_id::text, d.event_type, d.order_id, d.body, d.traceparent,
          d.attempts, d.round_attempts, d.round_started_at, d.seq, w.url, w.secret_encrypted,
          CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_encrypted END
              AS previous_secret_encrypted
"""


class PostgresDeliveryQueue:
    """The sender's view of the deliveries table (see :class:`DeliveryQueue`)."""

    def __init__(
        self,
        pool: Pool,
        cipher: SecretCipher,
        *,
        lease: timedelta,
        per_endpoint: int,
        per_user: int,
        disable_after_failures: int,
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._lease = lease
        self._per_endpoint = per_endpoint
        self._per_user = per_user
        self._next_sweep = 0.0
        self._disable_after = disable_after_failures

    async def counts(self) -> tuple[int, int]:
        """(pending, parked) deliveries, each counted over its own partial index."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM webhook.deliveries WHERE state = 'pending')"
                " AS pending,"
                " (SELECT count(*) FROM webhook.deliveries WHERE state = 'parked') AS parked"
            )
            row = await cursor.fetchone()
        if row is None:
            return 0, 0
        return int(row["pending"]), int(row["parked"])

    async def claim(self, owner: str, limit: int) -> list[ClaimedDelivery]:
        if time.monotonic() >= self._next_sweep:
            await self._release_orphans()
        async with self._pool.connection() as conn, conn.transaction():
            # Claims take turns: a claim counts the leases in flight, and another sender's
            # claim still uncommitted would be invisible to it, letting two claims together
            # exceed the caps. The claim statement's snapshot is taken after the lock, so it
            # sees every earlier claim's leases. (Claims are short; sending is not in here.)
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
            cursor = await conn.execute(
                _CLAIM,
                {
                    "scan": limit * 4,
                    "limit": limit,
                    "per_endpoint": self._per_endpoint,
                    "per_user": self._per_user,
                    "owner": owner,
                    "lease": self._lease,
                },
            )
            rows = await cursor.fetchall()
        rows.sort(key=lambda row: row["seq"])
        return [self._claimed(row) for row in rows]

    async def _release_orphans(self) -> None:
        """A safety net, every minute: a delivery still waiting with nothing pending before
        it (which the locking above should never leave behind) becomes due."""
        self._next_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE webhook.deliveries d SET waiting = false"
                " WHERE d.waiting AND d.state = 'pending' AND NOT EXISTS ("
                " SELECT 1 FROM webhook.deliveries e WHERE e.webhook_id = d.webhook_id"
                " AND e.order_id = d.order_id AND e.state = 'pending' AND e.seq < d.seq)"
            )
        if cursor.rowcount:
            log.warning("webhook deliveries released from waiting", extra={"rows": cursor.rowcount})

    def _claimed(self, row: Mapping[str, Any]) -> ClaimedDelivery:
        """The claimed row as the sender needs it. A row that cannot be sent (a URL that
        today's rules refuse, a secret that no longer decrypts) is still returned, with the
        problem instead of a target: the sender fails that delivery, and nothing else."""
        target: Target | None = None
        problem = ""
        secrets: list[str] = []
        try:
            target = parse_target(row["url"])
            secrets.append(self._cipher.decrypt(row["secret_encrypted"]))
            if row["previous_secret_encrypted"] is not None:
                # Only a courtesy during a rotation: without it the current secret signs.
                with contextlib.suppress(InvalidToken):
                    secrets.append(self._cipher.decrypt(row["previous_secret_encrypted"]))
        except InvalidArgument as error:
            target, problem = None, f"the webhook's URL is not accepted: {error}"
        except InvalidToken:
            target = None
            problem = (
                "the signing secret cannot be decrypted (was ORDERMESH_KEY_ENCRYPTION_SECRET"
                " changed?); rotate the webhook's secret"
            )
        return ClaimedDelivery(
            delivery_id=row["delivery_id"],
            webhook_id=row["webhook_id"],
            event_type=row["event_type"],
            order_id=row["order_id"],
            body=bytes(row["body"]),
            attempts=row["attempts"],
            round_attempts=row["round_attempts"],
            round_started_at=row["round_started_at"],
            target=target,
            secrets=tuple(secrets),
            problem=problem,
            traceparent=row["traceparent"],
        )

    async def finish(
        self, owner: str, claimed: ClaimedDelivery, attempt: AttemptRecord, outcome: AttemptOutcome
    ) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE webhook.deliveries SET attempts = attempts + 1,"
                " round_attempts = round_attempts + 1, state = %(state)s,"
                " next_attempt_at = coalesce(%(next)s, next_attempt_at),"
                " last_error = %(error)s,"
                " finished_at = CASE WHEN %(state)s = 'pending' THEN NULL ELSE now() END,"
                " lease_owner = NULL, lease_expires_at = NULL"
                " WHERE delivery_id = %(id)s AND lease_owner = %(owner)s AND state = 'pending'"
                " RETURNING attempts",
                {
                    "state": outcome.state.value,
                    "next": outcome.next_attempt_at,
                    "error": _text(outcome.error),
                    "id": claimed.delivery_id,
                    "owner": owner,
                },
            )
            row = await cursor.fetchone()
            if row is None:
                return False
            if outcome.state is not DeliveryState.PENDING and claimed.order_id is not None:
                # Done with: the next delivery of the order to this webhook may go.
                await conn.execute(
                    "UPDATE webhook.deliveries SET waiting = false WHERE delivery_id = ("
                    " SELECT delivery_id FROM webhook.deliveries WHERE webhook_id = %s"
                    " AND order_id = %s AND state = 'pending' AND waiting"
                    " ORDER BY seq LIMIT 1)",
                    (claimed.webhook_id, claimed.order_id),
                )
            await conn.execute(
                "INSERT INTO webhook.delivery_attempts (delivery_id, number, started_at,"
                " latency_ms, status_code, response_excerpt, error)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    claimed.delivery_id,
                    row["attempts"],
                    attempt.started_at,
                    attempt.latency_ms,
                    attempt.status_code,
                    _text(attempt.response_excerpt),
                    _text(attempt.error),
                ),
            )
            if outcome.endpoint_failed:
                await self._count_failure(conn, claimed.webhook_id)
            elif outcome.state is DeliveryState.SUCCEEDED:
                await conn.execute(
                    "UPDATE webhook.webhooks SET consecutive_failures = 0"
                    " WHERE webhook_id = %s AND consecutive_failures <> 0",
                    (claimed.webhook_id,),
                )
        return True

    async def _count_failure(self, conn: Connection, webhook_id: str) -> None:
        cursor = await conn.execute(
            "UPDATE webhook.webhooks SET consecutive_failures = consecutive_failures + 1"
            " WHERE webhook_id = %s RETURNING consecutive_failures, active",
            (webhook_id,),
        )
        row = await cursor.fetchone()
        if row is not None and not row["active"]:
            # Disabled while this attempt was in flight: no more retries.
            await conn.execute(
                "UPDATE webhook.deliveries SET state = 'parked', finished_at = now(),"
                " last_error = 'the endpoint is disabled; ' || last_error"
                " WHERE webhook_id = %s AND state = 'pending'"
                " AND (lease_expires_at IS NULL OR lease_expires_at <= now())",
                (webhook_id,),
            )
            return
        if row is None or row["consecutive_failures"] < self._disable_after:
            return
        reason = (
            f"disabled after {row['consecutive_failures']} consecutive failed attempts;"
            " enable it again with POST /api/v1/webhooks/{id}/enable"
        )
        await conn.execute(
            "UPDATE webhook.webhooks SET active = false, disabled_at = now(),"
            " disabled_reason = %s WHERE webhook_id = %s",
            (reason, webhook_id),
        )
        parked = await conn.execute(
            "UPDATE webhook.deliveries SET state = 'parked', finished_at = now(),"
            " last_error = 'the endpoint was disabled: ' || %s"
            " WHERE webhook_id = %s AND state = 'pending'"
            " AND (lease_expires_at IS NULL OR lease_expires_at <= now())",
            (reason, webhook_id),
        )
        log.warning(
            "webhook disabled",
            extra={
                "webhook_id": webhook_id,
                "consecutive_failures": row["consecutive_failures"],
                "parked": parked.rowcount,
            },
        )

    async def release(self, owner: str, delivery_ids: list[str]) -> None:
        if not delivery_ids:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE webhook.deliveries SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE delivery_id = ANY(%s::uuid[]) AND lease_owner = %s",
                (delivery_ids, owner),
            )


def notifications(
    database_url: str,
) -> Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]:
    """A listener that sets ``wake`` whenever deliveries are recorded or rescheduled, on a
    connection of its own (LISTEN needs one); reconnects after an outage, waking the sender
    then too, as notifications may have been missed."""

    async def listen(wake: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True, application_name="ordermesh-webhook-listen"
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    wake.set()
                    while not stop.is_set():
                        async for _ in conn.notifies(timeout=1.0):
                            wake.set()
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as error:
                log.info("webhook notifications interrupted", extra={"error": str(error)})
                wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    return listen
