"""The consumer loop every worker runs: at-least-once delivery, effectively-once effects.

For each polled batch the consumer inserts the events' ids into its inbox table and runs
their handlers in one Postgres transaction; an id already in the inbox for this group is a
duplicate and its handler is skipped. Only after the commit are the Kafka offsets stored
(``enable.auto.offset.store=false``) and later auto-committed, so a crash replays at most
uncommitted work, which the inbox then absorbs.

Two failure classes:

- A dependency being down (Postgres, Kafka, a gRPC service a handler calls, Redis) is
  *transient*: adapters raise :class:`~services.common.errors.DependencyUnavailable` (and
  Postgres' own connection, timeout and serialization errors count the same). The batch is
  retried without limit, with capped exponential backoff; meanwhile every assigned partition
  is paused and the consumer keeps polling, so it stays in its group, and it reports what it
  waits for on its :class:`~.state.StateBoard` (shown by ``ordermesh status``).
- Anything else says something about the event itself. A failed batch is re-run one event
  per transaction; an event whose handler keeps failing for ``RetryPolicy.max_attempts``
  attempts (or raises :class:`NonRetryableError`), or a message that cannot be decoded at
  all, is copied to the dead-letter topic with the error attached, and the loop moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import psycopg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.errors import DependencyUnavailable
from services.platform import metrics, tracing
from services.platform.messaging.codec import (
    CE_TYPE,
    DecodeError,
    EventCodec,
    EventEnvelope,
    event_name_of,
    header_map,
)
from services.platform.messaging.dead_letters import dead_letter_headers
from services.platform.messaging.outbox import checked_schema
from services.platform.messaging.producer import (
    ConfigValue,
    DeliveryTracker,
    flush_until_reported,
    producer_config_with_defaults,
)
from services.platform.messaging.registry import DEAD_LETTER
from services.platform.messaging.state import StateBoard

log = logging.getLogger(__name__)

Handler: TypeAlias = Callable[[EventEnvelope, AsyncConnection[Any]], Awaitable[None]]
BatchHandler: TypeAlias = Callable[[Sequence[EventEnvelope], AsyncConnection[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Handlers:
    """What a consumer group runs, by event type: a handler of one event at a time, or of a
    batch's run of consecutive events (so it can write them with one statement)."""

    single: Mapping[str, Handler] = field(default_factory=dict)
    batch: Mapping[str, BatchHandler] = field(default_factory=dict)

    @property
    def events(self) -> frozenset[str]:
        return frozenset(self.single) | frozenset(self.batch)

    def for_event(self, name: str) -> Handler:
        """The handler of one event of type ``name`` (a batch handler given a batch of one)."""
        if name in self.single:
            return self.single[name]
        batch = self.batch[name]

        async def one(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
            await batch([envelope], conn)

        return one


class NonRetryableError(Exception):
    """Raised by a handler for an event that can never succeed: dead-lettered at once."""


class _Stopping(Exception):
    """Shutdown was requested while the consumer waited for a dependency."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says a dependency is away (retry without limit) rather than that the
    event is bad. Postgres' errors are classified here because the consumer owns the
    connection its handlers use."""
    return isinstance(
        error,
        DependencyUnavailable | psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout,
    )


def dependency_of(error: BaseException) -> str:
    if isinstance(error, DependencyUnavailable):
        return error.dependency
    return "postgres"


# How often the lag gauge is refreshed (from local state; see EventConsumer._refresh_lag).
LAG_INTERVAL = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures."""
        return float(
            min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, failures - 1))
        )


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    outage_retries: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    message: Message
    envelope: EventEnvelope
    handler: BatchHandler
    traced: tracing.TracedEvent


@dataclass
class _Batch:
    jobs: list[_Job] = field(default_factory=list)
    poison: list[tuple[Message, DecodeError]] = field(default_factory=list)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class EventConsumer:
    """Runs ``handlers`` (event name → async handler) for the events of ``topics``.

    Handlers receive the envelope and a connection inside the transaction that also
    holds the inbox row; they must not commit. A ``batch_handlers`` entry instead receives
    every consecutive new event of its type in a polled batch at once (in offset order),
    so it can write them with one statement. With ``pipeline=True`` a batch's statements
    are sent in psycopg pipeline mode (one round trip per batch rather than per statement);
    a handler's database errors then surface at the next result fetch or at the end of the
    batch, so handlers that catch database errors themselves should leave it off.

    Events with no handler are acknowledged and skipped. Several replicas may share
    ``group_id``: Kafka spreads partitions over them, and a revoked partition's finished
    work is committed before it moves.
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        *,
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        pool: AsyncConnectionPool[Any],
        codec: EventCodec,
        inbox_schema: str,
        dead_letter_topic: str = DEAD_LETTER,
        retry: RetryPolicy | None = None,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
        pipeline: bool = False,
        consumer_config: Mapping[str, ConfigValue] | None = None,
        producer_config: Mapping[str, ConfigValue] | None = None,
        board: StateBoard | None = None,
    ) -> None:
        self._group_id = group_id
        self.board = board or StateBoard(group_id)
        self._topics = list(topics)
        batch_handlers = batch_handlers or {}
        overlap = set(handlers) & set(batch_handlers)
        if overlap:
            raise ValueError(f"events with both a handler and a batch handler: {sorted(overlap)}")
        self._handlers: dict[str, BatchHandler] = {
            **{name: _one_at_a_time(handler) for name, handler in handlers.items()},
            **batch_handlers,
        }
        self._pool = pool
        self._codec = codec
        self._dead_letter_topic = dead_letter_topic
        self._retry = retry or RetryPolicy()
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._pipeline = pipeline
        self._consumer_config: dict[str, ConfigValue] = {
            "bootstrap.servers": bootstrap,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "auto.commit.interval.ms": 1000,
            **(consumer_config or {}),
            "group.id": group_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
        }
        self._producer_config = producer_config_with_defaults(
            {"bootstrap.servers": bootstrap, "linger.ms": 0, **(producer_config or {})}
        )
        self._claim_sql = (
            sql.SQL(
                "INSERT INTO {}.inbox (consumer_group, event_id)"
                " SELECT %s, unnest(%b::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id"
            )
            .format(sql.Identifier(checked_schema(inbox_schema)))
            .as_string()
        )
        self.stats = ConsumerStats()
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        self._handler_seconds = metrics.consumer_handler_seconds.labels(group_id)
        self._batch_sizes = metrics.consumer_batch_size.labels(group_id)
        self._retries = metrics.consumer_retries.labels(group_id)
        self._dead_letters = metrics.consumer_dead_lettered.labels(group_id)
        self._lag_due = 0.0

    async def run(self, stop_event: asyncio.Event) -> None:
        """Consume until ``stop_event`` is set, then commit stored offsets and leave the group."""
        consumer = Consumer(self._consumer_config)
        producer = Producer(self._producer_config)
        polling: asyncio.Task[list[Message]] | None = None
        try:
            consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not stop_event.is_set():
                # What librdkafka has already fetched is taken without leaving the event loop
                # (a rebalance callback, rare, may then run here); only an empty queue is
                # waited on, in a worker thread.
                messages = consumer.consume(self._batch_size, 0)
                if messages:
                    await asyncio.sleep(0)  # a batch of skipped events never awaits: be fair
                else:
                    polling = asyncio.create_task(asyncio.to_thread(self._poll_batch, consumer))
                    messages = await asyncio.shield(polling)
                    polling = None
                if messages:
                    await self._process(consumer, producer, messages, stop_event)
                self._refresh_lag(consumer)
        except _Stopping:
            log.info("consumer %s stopping with unfinished work", self._group_id)
        finally:
            if polling is not None:
                await asyncio.wait([polling])
            await asyncio.to_thread(producer.flush, 10.0)
            await asyncio.to_thread(consumer.close)

    def _refresh_lag(self, consumer: Consumer) -> None:
        """At most every ``LAG_INTERVAL`` seconds: messages behind on the assigned partitions
        per topic, from librdkafka's local state (the high watermark of the last fetch and
        the position), so it never waits for the broker."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_INTERVAL
        behind = dict.fromkeys(self._topics, 0)
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in self.assigned])
            for position in positions:
                _low, high = consumer.get_watermark_offsets(position, cached=True)
                if high >= 0 and position.offset >= 0:
                    behind[position.topic] = behind.get(position.topic, 0) + max(
                        0, high - position.offset
                    )
        except KafkaException as exc:
            log.debug("%s: no lag figures: %s", self._group_id, exc)
            return
        for topic, count in behind.items():
            metrics.consumer_lag.labels(self._group_id, topic).set(count)

    def _count_events(self, names: Sequence[str], outcome: str) -> None:
        for name, count in Counter(names).items():
            metrics.consumer_events.labels(self._group_id, name, outcome).inc(count)

    def _poll_batch(self, consumer: Consumer) -> list[Message]:
        first = consumer.poll(self._poll_timeout)
        if first is None:
            return []
        if self._batch_size == 1:
            return [first]
        return [first, *consumer.consume(self._batch_size - 1, 0)]

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("%s assigned %s", self._group_id, _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.info("%s revoked %s", self._group_id, _describe(partitions))
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("%s could not commit on revoke: %s", self._group_id, exc)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.warning("%s lost %s", self._group_id, _describe(partitions))

    async def _process(
        self,
        consumer: Consumer,
        producer: Producer,
        messages: Sequence[Message],
        stop_event: asyncio.Event,
    ) -> None:
        batch = self._classify(messages)
        self.stats.batches += 1
        for message, error in batch.poison:
            log.error("poison message at %s: %s", _where(message), error)
            await self._dead_letter(consumer, producer, message, repr(error), 0, stop_event)
        if batch.jobs:
            await self._apply_batch(consumer, producer, batch.jobs, stop_event)
        _store(
            consumer, {tp: offset for tp, offset in batch.last_offsets.items() if self._owns(tp)}
        )

    async def _apply_batch(
        self,
        consumer: Consumer,
        producer: Producer,
        jobs: Sequence[_Job],
        stop_event: asyncio.Event,
    ) -> None:
        """Apply ``jobs`` in one transaction, waiting out dependency outages; if the batch
        fails for another reason, apply its events one by one."""
        outages = 0
        while True:
            jobs = [job for job in jobs if self._owns(_partition_of(job.message))]
            if not jobs:
                return
            try:
                await self._apply(jobs)
            except Exception as exc:
                if is_transient(exc):
                    outages += 1
                    await self._wait_out(consumer, exc, outages, stop_event)
                    continue
                self._recovered(outages)
                if len(jobs) > 1:
                    log.warning("batch of %d failed (%r); retrying one by one", len(jobs), exc)
                await self._apply_one_by_one(consumer, producer, jobs, stop_event)
                return
            self._recovered(outages)
            return

    async def _apply_one_by_one(
        self,
        consumer: Consumer,
        producer: Producer,
        jobs: Sequence[_Job],
        stop_event: asyncio.Event,
    ) -> None:
        for job in jobs:
            if not self._owns(_partition_of(job.message)):
                continue
            failures = 0
            outages = 0
            while True:
                try:
                    await self._apply([job])
                    break
                except Exception as exc:
                    if is_transient(exc):
                        outages += 1
                        await self._wait_out(consumer, exc, outages, stop_event)
                        continue
                    self._recovered(outages)
                    outages = 0
                    failures += 1
                    if isinstance(exc, NonRetryableError) or failures >= self._retry.max_attempts:
                        log.error(
                            "%s %s failed %d times, dead-lettering: %r",
                            job.envelope.name,
                            job.envelope.event_id,
                            failures,
                            exc,
                        )
                        await self._dead_letter(
                            consumer, producer, job.message, repr(exc), failures, stop_event
                        )
                        break
                    self._retries.inc()
                    await self._wait_polling(consumer, self._retry.backoff(failures), stop_event)
            self._recovered(outages)
            topic, partition, offset = _position(job.message)
            _store(consumer, {(topic, partition): offset})

    async def _wait_out(
        self, consumer: Consumer, error: BaseException, outages: int, stop_event: asyncio.Event
    ) -> None:
        """A dependency is away: pause every partition, say so, and wait (polling) before
        the next attempt."""
        dependency = dependency_of(error)
        if outages == 1:
            log.warning(
                "%s waits for %s: %s", self._group_id, dependency, error, extra={"retry": True}
            )
        self.board.block(self._group_id, dependency, str(error) or repr(error))
        self.stats.outage_retries += 1
        self._retries.inc()
        await self._wait_polling(consumer, self._retry.backoff(outages), stop_event)

    def _recovered(self, outages: int) -> None:
        if outages == 0:
            return
        log.info("%s resumes after %d retries", self._group_id, outages)
        self.board.unblock(self._group_id)

    async def _wait_polling(
        self, consumer: Consumer, seconds: float, stop_event: asyncio.Event
    ) -> None:
        """Wait ``seconds`` while still polling, so the consumer keeps its group membership
        and serves rebalances: every partition is paused meanwhile and resumed at the end. A
        message that arrives anyway (from a partition assigned during the wait) is put back:
        its partition is paused and rewound to it, so it is fetched again after the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        _set_paused(consumer, paused=True)
        try:
            while True:
                if stop_event.is_set():
                    raise _Stopping
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                messages = await asyncio.to_thread(
                    consumer.consume, self._batch_size, min(remaining, self._poll_timeout)
                )
                self._put_back(consumer, messages)
                self._refresh_lag(consumer)
        finally:
            _set_paused(consumer, paused=False)

    def _put_back(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            if message.error() is not None:
                continue
            topic, partition, offset = _position(message)
            first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
        for (topic, partition), offset in first.items():
            where = TopicPartition(topic, partition, offset)
            consumer.pause([where])
            consumer.seek(where)

    def _owns(self, topic_partition: tuple[str, int]) -> bool:
        return topic_partition in self.assigned

    def _classify(self, messages: Sequence[Message]) -> _Batch:
        batch = _Batch()
        skipped: list[str] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer %s: %s", self._group_id, error)
                continue
            topic, partition, offset = _position(message)
            batch.last_offsets[(topic, partition)] = offset
            try:
                attributes = header_map(message.headers())
                declared = attributes.get(CE_TYPE)
                if declared is not None and event_name_of(declared) not in self._handlers:
                    self.stats.skipped += 1
                    skipped.append(event_name_of(declared))
                    continue
                envelope = self._codec.envelope_from(attributes, message.value())
            except DecodeError as exc:
                batch.poison.append((message, exc))
                continue
            handler = self._handlers.get(envelope.name)
            if handler is None:
                self.stats.skipped += 1
                skipped.append(envelope.name)
                continue
            traced = tracing.TracedEvent(
                key=(message.key() or b"").decode("utf-8", "replace"),
                name=envelope.name,
                event_id=str(envelope.event_id),
                traceparent=attributes.get(tracing.CE_TRACEPARENT),
                tracestate=attributes.get(tracing.CE_TRACESTATE),
            )
            batch.jobs.append(_Job(message, envelope, handler, traced))
        self._count_events(skipped, "skipped")
        return batch

    async def _apply(self, jobs: Sequence[_Job]) -> None:
        """Claim and handle ``jobs`` in one transaction; raises if any handler fails."""
        started = time.perf_counter()
        conn = await self._connection()
        try:
            with tracing.consuming(self._group_id, [job.traced for job in jobs]):
                new = await self._handle(conn, jobs)
        finally:
            await self._pool.putconn(conn)
        self._handler_seconds.observe(time.perf_counter() - started)
        self._batch_sizes.observe(len(jobs))
        self._count_events([j.envelope.name for j in jobs if j.envelope.event_id in new], "applied")
        self._count_events(
            [j.envelope.name for j in jobs if j.envelope.event_id not in new], "duplicate"
        )
        self.stats.applied += len(new)
        self.stats.duplicates += len(jobs) - len(new)

    async def _handle(self, conn: AsyncConnection[Any], jobs: Sequence[_Job]) -> set[uuid.UUID]:
        """The transaction of ``jobs``: claims their ids in the inbox and runs the handlers of
        the new ones (consecutive events of one batch handler together); returns the new ids."""
        async with self._maybe_pipeline(conn, len(jobs)), conn.transaction():
            fresh = await self._claim(conn, [job.envelope.event_id for job in jobs])
            new = set(fresh)
            run: list[EventEnvelope] = []
            handler: BatchHandler | None = None
            for job in jobs:
                if job.envelope.event_id not in fresh:
                    continue
                fresh.discard(job.envelope.event_id)
                if handler is not None and job.handler is not handler:
                    await handler(run, conn)
                    run = []
                handler = job.handler
                run.append(job.envelope)
            if handler is not None:
                await handler(run, conn)
        return new

    def _maybe_pipeline(
        self, conn: AsyncConnection[Any], size: int
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        if self._pipeline and size > 1:
            return conn.pipeline()
        return contextlib.nullcontext()

    async def _connection(self) -> AsyncConnection[Any]:
        conn: AsyncConnection[Any] = await self._pool.getconn()
        return conn

    async def _claim(
        self, conn: AsyncConnection[Any], event_ids: list[uuid.UUID]
    ) -> set[uuid.UUID]:
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(self._claim_sql, (self._group_id, event_ids))
        return {row[0] for row in await cursor.fetchall()}

    async def _dead_letter(  # noqa: PLR0917 (the loop's state, then the letter)
        self,
        consumer: Consumer,
        producer: Producer,
        message: Message,
        error: str,
        attempts: int,
        stop_event: asyncio.Event,
    ) -> None:
        """Copy ``message`` to the dead-letter topic; returns once Kafka acknowledged it
        (waiting out a broker outage, polling, like any dependency outage)."""
        headers = dead_letter_headers(message, error=error, group=self._group_id, attempts=attempts)
        failures = 0
        while True:
            tracker = DeliveryTracker(1)
            producer.produce(
                self._dead_letter_topic,
                message.value(),
                key=message.key(),
                headers=headers,
                on_delivery=tracker.callback(0),
            )
            await flush_until_reported(producer, tracker, 1, 60.0)
            if tracker.acknowledged[0]:
                self.stats.dead_lettered += 1
                self._dead_letters.inc()
                self._count_events([self._event_name(message)], "dead_lettered")
                self._recovered(failures)
                return
            failures += 1
            problem = str(tracker.errors.get(0) or "no delivery report")
            log.error("dead-lettering %s failed: %s", _where(message), problem)
            self.board.block(self._group_id, "kafka", f"dead-lettering failed: {problem}")
            self._retries.inc()
            await self._wait_polling(consumer, self._retry.backoff(failures), stop_event)

    def _event_name(self, message: Message) -> str:
        """The event type a message declares if this group handles it, else "unknown" (a
        label never takes a value from an arbitrary header)."""
        try:
            declared = header_map(message.headers()).get(CE_TYPE)
        except DecodeError:
            return "unknown"
        name = event_name_of(declared) if declared is not None else None
        return name if name in self._handlers else "unknown"


def _store(consumer: Consumer, last_offsets: Mapping[tuple[str, int], int]) -> None:
    if not last_offsets:
        return
    offsets = [
        TopicPartition(topic, partition, offset + 1)
        for (topic, partition), offset in last_offsets.items()
    ]
    try:
        consumer.store_offsets(offsets=offsets)
    except KafkaException as exc:
        log.info("offsets not stored (partition moved to another replica?): %s", exc)


def _one_at_a_time(handler: Handler) -> BatchHandler:
    async def handle(envelopes: Sequence[EventEnvelope], conn: AsyncConnection[Any]) -> None:
        for envelope in envelopes:
            await handler(envelope, conn)

    return handle


def _set_paused(consumer: Consumer, *, paused: bool) -> None:
    assignment = consumer.assignment()
    if assignment:
        (consumer.pause if paused else consumer.resume)(assignment)


def _partition_of(message: Message) -> tuple[str, int]:
    topic, partition, _ = _position(message)
    return topic, partition


def _position(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("message has no topic, partition or offset")
    return topic, partition, offset


def _where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


def _describe(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
