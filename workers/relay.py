"""Outbox relay: publishes committed outbox rows to Kafka, at least once, in id order.

Per Postgres schema one relay is active across all replicas (a session advisory lock);
the others stand by and take over when the holder's connection goes away. The relay wakes
on ``NOTIFY ordermesh_outbox`` (the payload names the schema whose outbox got rows, and
only that outbox is read) and also polls every outbox, so a lost notification only delays
publication by one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from workers.outbox import OUTBOX_CHANNEL, checked_schema

log = logging.getLogger(__name__)

ConfigValue: TypeAlias = str | int | float | bool

PRODUCER_DEFAULTS: Mapping[str, ConfigValue] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.timeout.ms": 30_000,
}
_ENFORCED: Mapping[str, ConfigValue] = {"enable.idempotence": True, "acks": "all"}


def producer_config_with_defaults(overrides: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    """Defaults, then ``overrides``; idempotence and ``acks=all`` cannot be turned off."""
    return {**PRODUCER_DEFAULTS, **overrides, **_ENFORCED}


def advisory_lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"ordermesh.outbox:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    topic: str
    key: str
    payload: bytes
    headers: list[tuple[str, str | bytes | None]]


class DeliveryTracker:
    """Delivery reports of one batch, filled from librdkafka's callback thread."""

    def __init__(self, size: int) -> None:
        self.acknowledged = [False] * size
        self.errors: dict[int, KafkaError] = {}
        self.reported = 0

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.acknowledged[index] = True
            else:
                self.errors[index] = error
            self.reported += 1

        return on_delivery


async def flush_until_reported(
    producer: Producer, tracker: DeliveryTracker, expected: int, max_wait: float
) -> None:
    """Serve delivery callbacks in a worker thread until ``expected`` reports or ``max_wait``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while tracker.reported < expected and loop.time() < deadline:
        await asyncio.to_thread(producer.flush, min(1.0, max(0.0, deadline - loop.time())))


class OutboxRelay:
    """Publishes the outbox tables of ``schemas`` through one idempotent producer.

    After a notification the relay waits ``coalesce`` seconds for more, so a burst of
    commits is read with one query per outbox rather than one per commit.

    ``pool`` lends the relay one connection for its lifetime (it holds the advisory locks
    and the LISTEN); size the pool accordingly.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        producer_config: Mapping[str, ConfigValue],
        schemas: Sequence[str],
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        coalesce: float = 0.002,
    ) -> None:
        if not schemas:
            raise ValueError("the relay needs at least one schema")
        self._pool = pool
        self._producer_config = producer_config_with_defaults(producer_config)
        timeout_ms = float(self._producer_config["message.timeout.ms"])
        self._delivery_timeout = timeout_ms / 1000 + 5
        self._schemas = tuple(checked_schema(s) for s in schemas)
        self._fetch_sql = {
            schema: sql.SQL(
                "SELECT id, topic, message_key, payload, headers FROM {}.outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT %s"
            )
            .format(sql.Identifier(schema))
            .as_string()
            for schema in self._schemas
        }
        self._mark_sql = {
            schema: sql.SQL(
                "UPDATE {}.outbox SET published_at = now()"
                " WHERE id = ANY(%s) AND published_at IS NULL"
            )
            .format(sql.Identifier(schema))
            .as_string()
            for schema in self._schemas
        }
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._coalesce = coalesce
        self._owned: set[str] = set()
        self.published = 0
        self.failed_deliveries = 0

    @property
    def owned_schemas(self) -> frozenset[str]:
        """Schemas this relay currently publishes (holds the advisory lock for)."""
        return frozenset(self._owned)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Relay until ``stop_event`` is set; reconnects to Postgres after failures."""
        producer = Producer(self._producer_config)
        backoff = self._poll_interval
        try:
            while not stop_event.is_set():
                try:
                    async with self._pool.connection() as conn:
                        await self._serve(conn, producer, stop_event)
                    backoff = self._poll_interval
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    log.warning("outbox relay lost Postgres (%s); retrying in %.1fs", exc, backoff)
                    self._owned.clear()
                    await _wait(stop_event, backoff)
                    backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._owned.clear()
            remaining = await asyncio.to_thread(producer.flush, 10.0)
            if remaining:
                log.warning("outbox relay stopped with %d undelivered messages", remaining)

    async def _serve(
        self, conn: AsyncConnection[Any], producer: Producer, stop_event: asyncio.Event
    ) -> None:
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        loop = asyncio.get_running_loop()
        failures: dict[str, int] = {}
        retry_at: dict[str, float] = {}
        next_lock_attempt = 0.0
        next_poll = 0.0
        due: set[str] = set()  # outboxes to read now
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(OUTBOX_CHANNEL)))
            while not stop_event.is_set():
                now = loop.time()
                if now >= next_lock_attempt:
                    owned = set(self._owned)
                    await self._acquire_locks(conn)
                    due |= self._owned - owned
                    next_lock_attempt = now + self._poll_interval
                if now >= next_poll:
                    due |= self._owned
                    next_poll = now + self._poll_interval
                due |= {schema for schema, at in retry_at.items() if at <= now}
                busy: set[str] = set()
                for schema in sorted(due & self._owned):
                    if retry_at.get(schema, 0.0) > loop.time():
                        continue
                    fetched, delivered = await self._relay_batch(conn, producer, schema)
                    if delivered < fetched:
                        failures[schema] = failures.get(schema, 0) + 1
                        delay = self._poll_interval * 2 ** (failures[schema] - 1)
                        retry_at[schema] = loop.time() + min(delay, self._max_backoff)
                        log.warning("outbox %s: retrying failed deliveries later", schema)
                        continue
                    failures.pop(schema, None)
                    retry_at.pop(schema, None)
                    if fetched == self._batch_size:
                        busy.add(schema)
                due = busy
                if not due and not stop_event.is_set():
                    wake = min([next_poll, next_lock_attempt, *retry_at.values()])
                    due = await self._wait_for_work(conn, max(0.0, wake - loop.time()))
        finally:
            self._owned.clear()
            if not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("UNLISTEN *")
                    await conn.execute("SELECT pg_advisory_unlock_all()")
                    await conn.set_autocommit(autocommit)

    async def _acquire_locks(self, conn: AsyncConnection[Any]) -> None:
        for schema in self._schemas:
            if schema in self._owned:
                continue
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute("SELECT pg_try_advisory_lock(%s)", (advisory_lock_key(schema),))
            row = await cursor.fetchone()
            if row is not None and row[0]:
                log.info("outbox relay is now active for schema %s", schema)
                self._owned.add(schema)

    async def _wait_for_work(self, conn: AsyncConnection[Any], seconds: float) -> set[str]:
        """The schemas notified within ``seconds`` (with the notifications that follow the
        first within the coalescing window); empty if none was."""
        named: set[str] = set()
        async for notify in conn.notifies(timeout=seconds, stop_after=1):
            named.add(notify.payload)
        if named and self._coalesce > 0:
            async for notify in conn.notifies(timeout=self._coalesce):
                named.add(notify.payload)
        if "" in named:  # a notification naming no schema: read every outbox
            return set(self._owned)
        return named

    async def _relay_batch(
        self, conn: AsyncConnection[Any], producer: Producer, schema: str
    ) -> tuple[int, int]:
        """Publish the oldest unpublished rows; returns (rows fetched, rows acknowledged)."""
        rows = await self._fetch(conn, schema)
        if not rows:
            return 0, 0
        delivered = await self._publish(producer, rows)
        if delivered:
            await self._mark_published(conn, schema, delivered)
            self.published += len(delivered)
        return len(rows), len(delivered)

    async def _fetch(self, conn: AsyncConnection[Any], schema: str) -> list[_Row]:
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(self._fetch_sql[schema], (self._batch_size,))
        return [
            _Row(
                id=row[0],
                topic=row[1],
                key=row[2],
                payload=row[3],
                headers=[(name, value.encode()) for name, value in row[4].items()],
            )
            for row in await cursor.fetchall()
        ]

    async def _publish(self, producer: Producer, rows: Sequence[_Row]) -> list[int]:
        """Produce ``rows`` in order; return the ids of the rows Kafka acknowledged."""
        tracker = DeliveryTracker(len(rows))
        produced = 0
        for index, row in enumerate(rows):
            try:
                producer.produce(
                    row.topic,
                    row.payload,
                    key=row.key.encode(),
                    headers=row.headers,
                    on_delivery=tracker.callback(index),
                )
            except (KafkaException, BufferError) as exc:
                log.error("outbox row %d could not be produced: %s", row.id, exc)
                break
            produced += 1
        await flush_until_reported(producer, tracker, produced, self._delivery_timeout)
        for index, error in sorted(tracker.errors.items()):
            log.error("outbox row %d not delivered: %s", rows[index].id, error)
        self.failed_deliveries += len(rows) - sum(tracker.acknowledged)
        return [row.id for row, acked in zip(rows, tracker.acknowledged, strict=True) if acked]

    async def _mark_published(
        self, conn: AsyncConnection[Any], schema: str, ids: Sequence[int]
    ) -> None:
        await conn.execute(self._mark_sql[schema], (list(ids),))


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)
