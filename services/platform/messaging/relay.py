"""Outbox relay: publishes committed outbox rows to Kafka, at least once, in id order.

Per Postgres schema one relay is active across all replicas (a session advisory lock);
the others stand by and take over when the holder's connection goes away. The relay wakes
on ``NOTIFY ordermesh_outbox`` (the payload names the schema whose outbox got rows, and
only that outbox is read) and also polls every outbox, so a lost notification only delays
publication by one poll interval.

The relay never blocks on one row. A row Kafka can never accept (too large, malformed
headers, refused by the broker as invalid) is *parked*: moved to ``<schema>.outbox_parked``
with the reason, logged as an error, shown by ``ordermesh status`` and handled with
``ordermesh outbox list|replay|discard``. The later rows of the same message key are parked
too, held behind it, so every key's events still reach Kafka in order; every other row keeps
flowing. A transient failure (the broker down, a timeout) is retried in place with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from opentelemetry.trace import Span, SpanKind
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.platform import metrics, tracing
from services.platform.messaging.outbox import OUTBOX_CHANNEL, checked_schema
from services.platform.messaging.producer import (
    ConfigValue,
    DeliveryTracker,
    flush_until_reported,
    producer_config_with_defaults,
)
from services.platform.messaging.state import StateBoard

log = logging.getLogger(__name__)

# Delivery or produce errors that say a record can never be accepted, however often it is
# retried. Anything else (a broker away, a timeout, a full queue) is transient.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
    }
)


RELAY = "outbox relay"
# Zipkin's service name of the publish spans.
TRACE_SERVICE = "relay"
# How often the active relay counts its outboxes' backlog and parked rows for the metrics.
BACKLOG_INTERVAL = 5.0


def is_permanent(error: KafkaError) -> bool:
    return error.code() in PERMANENT_ERRORS and not error.retriable()


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
    # The parked row of the same key this row must wait behind, if any.
    held_behind: int | None = None
    # Why the row can never be produced, if that is known before trying.
    problem: str | None = None


@dataclass
class _Outcome:
    """What became of one batch: rows acknowledged, rows to park (id → reason and the row
    they are held behind), and rows left for a retry."""

    delivered: list[int] = field(default_factory=list)
    parked: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    retry: int = 0


class ProducerFailedError(Exception):
    """The producer hit a fatal error (e.g. the idempotent producer lost its sequence) and
    must be replaced; nothing of the failed batch was marked published."""


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
        board: StateBoard | None = None,
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
                "SELECT o.id, o.topic, o.message_key, o.payload, o.headers,"
                " (SELECT min(p.id) FROM {parked} p WHERE p.message_key = o.message_key)"
                " FROM {outbox} o WHERE o.published_at IS NULL ORDER BY o.id LIMIT %s"
            )
            .format(
                outbox=sql.Identifier(schema, "outbox"),
                parked=sql.Identifier(schema, "outbox_parked"),
            )
            .as_string()
            for schema in self._schemas
        }
        self._park_sql = {
            schema: sql.SQL(
                "WITH moved AS (DELETE FROM {outbox} o"
                " USING unnest(%b::bigint[], %b::text[], %b::bigint[]) AS p (id, reason, behind)"
                " WHERE o.id = p.id AND o.published_at IS NULL"
                " RETURNING o.id, o.event_id, o.topic, o.message_key, o.event_type, o.payload,"
                " o.headers, o.occurred_at, p.reason, p.behind)"
                " INSERT INTO {parked} (id, event_id, topic, message_key, event_type, payload,"
                " headers, occurred_at, reason, held_behind) SELECT * FROM moved"
                " RETURNING id, event_type, message_key, reason, held_behind"
            )
            .format(
                outbox=sql.Identifier(schema, "outbox"),
                parked=sql.Identifier(schema, "outbox_parked"),
            )
            .as_string()
            for schema in self._schemas
        }
        # The oldest unpublished row is the first of the partial index on unpublished ids.
        self._backlog_sql = {
            schema: sql.SQL(
                "SELECT (SELECT count(*) FROM {outbox} WHERE published_at IS NULL),"
                " (SELECT extract(epoch FROM now() - occurred_at) FROM {outbox}"
                "  WHERE published_at IS NULL ORDER BY id LIMIT 1),"
                " (SELECT count(*) FROM {parked})"
            )
            .format(
                outbox=sql.Identifier(schema, "outbox"),
                parked=sql.Identifier(schema, "outbox_parked"),
            )
            .as_string()
            for schema in self._schemas
        }
        # Only the primary key selects the rows: a predicate on published_at lets the
        # planner's generic plan pick an index of published_at instead, whose dead entries
        # (every row published since the last vacuum) it then walks on every call.
        # coalesce keeps the first publication time of a row marked twice.
        self._mark_sql = {
            schema: sql.SQL(
                "UPDATE {}.outbox SET published_at = coalesce(published_at, now())"
                " WHERE id = ANY(%b::bigint[])"
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
        self._backlog_due = 0.0
        self.board = board or StateBoard("relay")
        self.published = 0
        self.failed_deliveries = 0
        self.parked = 0

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
                        self.board.unblock(RELAY)
                        await self._serve(conn, producer, stop_event)
                    backoff = self._poll_interval
                except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                    log.warning("outbox relay lost Postgres (%s); retrying in %.1fs", exc, backoff)
                    self.board.block(RELAY, "postgres", str(exc) or repr(exc))
                    self._disown()
                    await _wait(stop_event, backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                except ProducerFailedError as exc:
                    log.error("outbox relay replaces its producer after a fatal error: %s", exc)
                    self._disown()
                    await asyncio.to_thread(producer.flush, 5.0)
                    producer = Producer(self._producer_config)
        finally:
            self._disown()
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
                        self.board.block(
                            RELAY, "kafka", f"outbox {schema}: {fetched - delivered} undelivered"
                        )
                        continue
                    failures.pop(schema, None)
                    retry_at.pop(schema, None)
                    if not failures:
                        self.board.unblock(RELAY)
                    if fetched == self._batch_size:
                        busy.add(schema)
                due = busy
                if not due and not stop_event.is_set():
                    wake = min([next_poll, next_lock_attempt, *retry_at.values()])
                    due = await self._wait_for_work(conn, max(0.0, wake - loop.time()))
        finally:
            self._disown()
            if not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("UNLISTEN *")
                    await conn.execute("SELECT pg_advisory_unlock_all()")
                    await conn.set_autocommit(autocommit)

    def _disown(self) -> None:
        """Publishes nothing until it takes the locks again, so reports no backlog."""
        self._owned.clear()
        _forget_backlog(self._schemas)

    async def _count_backlog(self, conn: AsyncConnection[Any], now: float) -> None:
        """Every ``BACKLOG_INTERVAL``: the backlog gauges of the outboxes this relay
        publishes (a standby reports none)."""
        if now < self._backlog_due:
            return
        self._backlog_due = now + BACKLOG_INTERVAL
        _forget_backlog(set(self._schemas) - self._owned)
        for schema in sorted(self._owned):
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(self._backlog_sql[schema])
            row = await cursor.fetchone()
            if row is None:
                continue
            unpublished, oldest, parked = row
            metrics.relay_backlog.labels(schema).set(unpublished)
            metrics.relay_oldest_age_seconds.labels(schema).set(float(oldest or 0))
            metrics.relay_parked.labels(schema).set(parked)

    async def _acquire_locks(self, conn: AsyncConnection[Any]) -> None:
        """Takes the advisory lock of every outbox no relay publishes, then refreshes the
        backlog gauges (at most every ``BACKLOG_INTERVAL``; this runs every poll interval)."""
        for schema in self._schemas:
            if schema in self._owned:
                continue
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute("SELECT pg_try_advisory_lock(%s)", (advisory_lock_key(schema),))
            row = await cursor.fetchone()
            if row is not None and row[0]:
                log.info("outbox relay is now active for schema %s", schema)
                self._owned.add(schema)
        await self._count_backlog(conn, time.monotonic())

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
        """Publish the oldest unpublished rows, parking those that can never be produced;
        returns (rows fetched, rows settled: acknowledged or parked)."""
        rows = await self._fetch(conn, schema)
        if not rows:
            return 0, 0
        started = time.perf_counter()
        outcome = await self._publish(producer, rows)
        metrics.relay_publish_seconds.observe(time.perf_counter() - started)
        if outcome.delivered:
            await self._mark_published(conn, schema, outcome.delivered)
            self.published += len(outcome.delivered)
            metrics.relay_published.labels(schema).inc(len(outcome.delivered))
        if outcome.parked:
            await self._park(conn, schema, outcome.parked)
        return len(rows), len(outcome.delivered) + len(outcome.parked)

    async def _fetch(self, conn: AsyncConnection[Any], schema: str) -> list[_Row]:
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(self._fetch_sql[schema], (self._batch_size,))
        return [_row(values) for values in await cursor.fetchall()]

    async def _publish(self, producer: Producer, rows: Sequence[_Row]) -> _Outcome:
        """Produce ``rows`` in order. A row that can never be produced is parked, and so is
        every later row of its key (held behind it); the rest is produced."""
        outcome = _Outcome()
        blocked: dict[str, int] = {}  # key -> the parked row its later rows wait behind
        tracker = DeliveryTracker(len(rows))
        produced: list[int] = []
        spans: dict[int, Span] = {}
        for index, row in enumerate(rows):
            head = blocked.get(row.key, row.held_behind)
            if head is not None:
                outcome.parked[row.id] = (f"held behind parked row {head} of key {row.key}", head)
                blocked[row.key] = head
                continue
            if row.problem is not None:
                outcome.parked[row.id] = (row.problem, None)
                blocked[row.key] = row.id
                continue
            spans[index] = span = _publish_span(row)
            try:
                producer.produce(
                    row.topic,
                    row.payload,
                    key=row.key.encode(),
                    headers=_continued(row.headers, span),
                    on_delivery=tracker.callback(index),
                )
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and is_permanent(error):
                    outcome.parked[row.id] = (f"Kafka refuses it: {error.str()}", None)
                    blocked[row.key] = row.id
                    continue
                log.error("outbox row %d could not be produced: %s", row.id, exc)
                break
            except BufferError as exc:
                log.warning("producer queue full at outbox row %d: %s", row.id, exc)
                break
            produced.append(index)
        await flush_until_reported(producer, tracker, len(produced), self._delivery_timeout)
        _end_publish_spans(spans, tracker)
        fatal = [error for error in tracker.errors.values() if error.fatal()]
        if fatal:
            raise ProducerFailedError(fatal[0].str())
        for index in produced:
            row = rows[index]
            error = tracker.errors.get(index)
            if tracker.acknowledged[index]:
                outcome.delivered.append(row.id)
            elif error is not None and is_permanent(error):
                outcome.parked[row.id] = (f"Kafka refuses it: {error.str()}", None)
            else:
                if error is not None:
                    log.error("outbox row %d not delivered: %s", row.id, error)
                outcome.retry += 1
        self.failed_deliveries += outcome.retry
        return outcome

    async def _mark_published(
        self, conn: AsyncConnection[Any], schema: str, ids: Sequence[int]
    ) -> None:
        await conn.execute(self._mark_sql[schema], (list(ids),))

    async def _park(
        self, conn: AsyncConnection[Any], schema: str, parked: Mapping[int, tuple[str, int | None]]
    ) -> None:
        ids = sorted(parked)
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(
            self._park_sql[schema],
            (ids, [parked[i][0] for i in ids], [parked[i][1] for i in ids]),
        )
        for row_id, event_type, key, reason, held_behind in await cursor.fetchall():
            self.parked += 1
            report = log.warning if held_behind is not None else log.error
            report(
                "outbox row parked",
                extra={
                    "schema": schema,
                    "outbox_id": row_id,
                    "event_type": event_type,
                    "message_key": key,
                    "reason": reason,
                    "action": "ordermesh outbox list | replay | discard",
                },
            )


def _row(values: tuple[Any, ...]) -> _Row:
    """An outbox row as fetched: id, topic, key, payload, headers, the parked row it waits
    behind. Headers must be strings (CloudEvents attributes)."""
    row_id, topic, key, payload, headers, held_behind = values
    problem = None
    encoded: list[tuple[str, str | bytes | None]] = []
    for name, value in headers.items():
        if not isinstance(value, str):
            problem = f"header {name!r} is not a string"
            break
        encoded.append((name, value.encode()))
    return _Row(row_id, topic, key, payload, encoded, held_behind, problem)


def _publish_span(row: _Row) -> Span:
    """The span of one row's publication, continuing the trace the row was written in."""
    parent = next((value for name, value in row.headers if name == tracing.CE_TRACEPARENT), None)
    if parent is None or not tracing.enabled():
        return tracing.NO_SPAN
    return tracing.start_span(
        TRACE_SERVICE,
        f"publish {row.topic}",
        parent=parent.decode() if isinstance(parent, bytes) else parent,
        kind=SpanKind.PRODUCER,
        # The name says the topic; the key finds the order's trace in Zipkin.
        attributes={"messaging.kafka.message.key": row.key, "ordermesh.outbox.row": row.id},
    )


def _continued(
    headers: list[tuple[str, str | bytes | None]], span: Span
) -> list[tuple[str, str | bytes | None]]:
    """``headers`` with the trace continued by ``span`` (the consumer's parent is then the
    publication, not the write)."""
    context = span.get_span_context()
    if not context.is_valid:
        return headers
    value = tracing.traceparent(context).encode()
    return [
        (name, value if name == tracing.CE_TRACEPARENT else original) for name, original in headers
    ]


def _end_publish_spans(spans: Mapping[int, Span], tracker: DeliveryTracker) -> None:
    for index, span in spans.items():
        error = tracker.errors.get(index)
        if tracker.acknowledged[index]:
            tracing.end_span(span)
        else:
            tracing.end_span(span, error.str() if error is not None else "not acknowledged")


def _forget_backlog(schemas: Iterable[str]) -> None:
    for schema in schemas:
        for gauge in (
            metrics.relay_backlog,
            metrics.relay_oldest_age_seconds,
            metrics.relay_parked,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(schema)


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)
