"""Outbox → relay → Kafka → consumer with inbox, against real Postgres and Kafka."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from devstack import kafka
from services.common.errors import DependencyUnavailable
from services.platform.messaging import parked
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import SCHEMA_DIR, EventCodec, EventEnvelope
from services.platform.messaging.consumer import EventConsumer, Handler, RetryPolicy
from services.platform.messaging.dead_letters import (
    DeadLetter,
    list_dead_letters,
    replay_dead_letters,
)
from services.platform.messaging.outbox import (
    OUTBOX_CHANNEL,
    add_messages_to_outbox,
    inbox_ddl,
    outbox_ddl,
    outbox_message,
)
from services.platform.messaging.registry import TopicSpec
from services.platform.messaging.relay import OutboxRelay, advisory_lock_key
from services.platform.settings import Settings
from tests.unit.test_codec import SAMPLES, add_schema_version, schema_file

pytestmark = pytest.mark.integration

SOURCE = "/ordermesh/tests"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
FAST_CONSUMER = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


async def add_to_outbox(
    conn: AsyncConnection[Any], schema: str, *, codec: EventCodec, **event: Any
) -> uuid.UUID:
    """One event into ``schema``'s outbox, as a service's outbox writer stores it."""
    message = outbox_message(codec, **event)
    await add_messages_to_outbox(conn, schema, [message])
    return message.event_id


@dataclass(frozen=True)
class Bus:
    bootstrap: str
    dsn: str
    schema: str
    topic: str
    dead_letter_topic: str
    group: str
    pool: AsyncConnectionPool[Any]
    codec: EventCodec

    def relay(self, **producer: str | int) -> OutboxRelay:
        config = {"bootstrap.servers": self.bootstrap, **producer}
        return OutboxRelay(self.pool, config, [self.schema], poll_interval=0.2)

    def consumer(self, handlers: Mapping[str, Handler], group: str | None = None) -> EventConsumer:
        return EventConsumer(
            self.bootstrap,
            group or self.group,
            [self.topic],
            handlers,
            pool=self.pool,
            codec=self.codec,
            inbox_schema=self.schema,
            dead_letter_topic=self.dead_letter_topic,
            retry=FAST_RETRY,
            poll_timeout=0.1,
            consumer_config=FAST_CONSUMER,
        )

    async def emit(self, count: int, event_name: str = "OrderCreated") -> list[uuid.UUID]:
        ids = []
        async with self.pool.connection() as conn, conn.transaction():
            for _ in range(count):
                order_id = str(uuid.uuid4())
                ids.append(
                    await add_to_outbox(
                        conn,
                        self.schema,
                        codec=self.codec,
                        topic=self.topic,
                        key=order_id,
                        event_name=event_name,
                        record=RECORDS[event_name](order_id),
                        source=SOURCE,
                    )
                )
        return ids

    async def scalar(self, query: str, *params: Any) -> Any:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query.format(schema=self.schema), params)
            row = await cursor.fetchone()
            return None if row is None else row[0]

    async def dead_letters(self, replay_group: str) -> list[DeadLetter]:
        return await asyncio.to_thread(
            list_dead_letters,
            self.bootstrap,
            10,
            topic=self.dead_letter_topic,
            replay_group=replay_group,
        )

    async def replay_dead_letters(self, replay_group: str) -> int:
        return await asyncio.to_thread(
            replay_dead_letters,
            self.bootstrap,
            topic=self.dead_letter_topic,
            replay_group=replay_group,
        )

    def apply_handler(self) -> Handler:
        async def apply(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                f"INSERT INTO {self.schema}.applied (event_id, order_id) VALUES (%s, %s)",
                (envelope.event_id, envelope.record["order_id"]),
            )

        return apply

    def recording_handler(self, applied: dict[uuid.UUID, EventEnvelope]) -> Handler:
        """Like :meth:`apply_handler`, also keeping each event it applies in ``applied``."""
        apply = self.apply_handler()

        async def apply_and_record(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
            await apply(envelope, conn)
            applied[envelope.event_id] = envelope

        return apply_and_record


def order_created(order_id: str) -> dict[str, Any]:
    return {**SAMPLES["OrderCreated"], "order_id": order_id}


def order_cancelled(order_id: str) -> dict[str, Any]:
    return {**SAMPLES["OrderCancelled"], "order_id": order_id}


RECORDS: Mapping[str, Callable[[str], dict[str, Any]]] = {
    "OrderCreated": order_created,
    "OrderCancelled": order_cancelled,
}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check.__name__} not true within {within}s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(*workers: OutboxRelay | EventConsumer) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.fixture(scope="session")
def bootstrap(servers: None) -> str:
    return kafka.bootstrap()


@pytest.fixture(scope="session")
def codec() -> EventCodec:
    return EventCodec.from_directory(SCHEMA_DIR)


@pytest.fixture(scope="session")
async def bus_pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database_url, min_size=2, max_size=12, open=False
    )
    await pool.open(wait=True)
    yield pool
    await pool.close()


@pytest.fixture
async def bus(
    bootstrap: str,
    bus_pool: AsyncConnectionPool[Any],
    codec: EventCodec,
    settings: Settings,
    migrated: None,
) -> AsyncIterator[Bus]:
    suffix = uuid.uuid4().hex[:12]
    bus = Bus(
        bootstrap=bootstrap,
        dsn=settings.database_url,
        schema=f"evbus_{suffix}",
        topic=f"test.{suffix}.orders",
        dead_letter_topic=f"test.{suffix}.deadletter",
        group=f"test.{suffix}.group",
        pool=bus_pool,
        codec=codec,
    )
    async with bus_pool.connection() as conn:
        await conn.execute(f"CREATE SCHEMA {bus.schema}")
        await conn.execute(outbox_ddl(bus.schema))
        await conn.execute(inbox_ddl(bus.schema))
        await conn.execute(
            f"CREATE TABLE {bus.schema}.applied (event_id uuid NOT NULL, order_id text NOT NULL)"
        )
    await asyncio.to_thread(
        ensure_topics,
        bootstrap,
        [TopicSpec(bus.topic, partitions=3), TopicSpec(bus.dead_letter_topic, partitions=1)],
    )
    yield bus
    await asyncio.to_thread(delete_topics, bootstrap, [bus.topic, bus.dead_letter_topic])
    async with bus_pool.connection() as conn:
        await conn.execute(f"DROP SCHEMA {bus.schema} CASCADE")


@pytest.fixture
def raw_producer(bootstrap: str) -> Iterator[Producer]:
    producer = Producer({"bootstrap.servers": bootstrap})
    yield producer
    producer.flush(10)


def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    try:
        for _ in range(200):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
            if len(messages) >= expected:
                break
    finally:
        consumer.close()
    return messages


async def test_outbox_ddl_is_idempotent_and_inserts_notify_the_relay(bus: Bus) -> None:
    async with await AsyncConnection.connect(bus.dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        async with bus.pool.connection() as conn:
            await conn.execute(outbox_ddl(bus.schema))
            await conn.execute(inbox_ddl(bus.schema))
        await bus.emit(2)
        payloads = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [bus.schema]


async def test_outbox_row_rolls_back_with_the_callers_transaction(bus: Bus) -> None:
    with pytest.raises(RuntimeError, match="state change failed"):
        async with bus.pool.connection() as conn, conn.transaction():
            await add_to_outbox(
                conn,
                bus.schema,
                codec=bus.codec,
                topic=bus.topic,
                key="order-rolled-back",
                event_name="OrderCreated",
                record=order_created("order-rolled-back"),
                source=SOURCE,
            )
            raise RuntimeError("state change failed")
    assert await bus.scalar("SELECT count(*) FROM {schema}.outbox") == 0


@pytest.mark.parametrize("schema", ["Orders", "orders; DROP TABLE x", "", "1orders"])
def test_schema_names_that_are_not_plain_identifiers_are_refused(schema: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        outbox_ddl(schema)


async def test_every_event_is_applied_once_even_when_delivered_twice(
    bus: Bus, raw_producer: Producer
) -> None:
    consumer = bus.consumer({"OrderCreated": bus.apply_handler()})
    relay = bus.relay()
    async with running(relay, consumer):
        event_ids = await bus.emit(40)

        async def all_applied() -> bool:
            return bool(
                await bus.scalar("SELECT count(DISTINCT event_id) = 40 FROM {schema}.applied")
            )

        await eventually(all_applied)
        async with bus.pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT topic, message_key, payload, headers FROM {bus.schema}.outbox"
                " ORDER BY id LIMIT 3"
            )
            for topic, key, payload, headers in await cursor.fetchall():
                raw_producer.produce(
                    topic, payload, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
                )
        raw_producer.flush(10)

        async def duplicates_seen() -> bool:
            return consumer.stats.duplicates >= 3

        await eventually(duplicates_seen)

    assert await bus.scalar("SELECT count(*) FROM {schema}.applied") == len(event_ids)
    assert await bus.scalar("SELECT count(DISTINCT event_id) FROM {schema}.applied") == 40
    assert await bus.scalar("SELECT count(*) FROM {schema}.inbox") == 40
    assert await bus.scalar("SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0
    assert consumer.stats.applied == 40


async def test_a_batch_handler_gets_the_new_events_of_a_batch_at_once(bus: Bus) -> None:
    runs: list[list[uuid.UUID]] = []
    poisoned: set[uuid.UUID] = set()

    async def apply_all(envelopes: Sequence[EventEnvelope], conn: AsyncConnection[Any]) -> None:
        if poisoned & {envelope.event_id for envelope in envelopes}:
            raise RuntimeError("cannot apply this one")
        runs.append([envelope.event_id for envelope in envelopes])
        async with conn.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO {bus.schema}.applied (event_id, order_id) VALUES (%s, %s)",
                [(e.event_id, e.record["order_id"]) for e in envelopes],
            )

    relay = bus.relay()
    async with running(relay):
        first = await bus.emit(30)

        async def published() -> bool:
            return relay.published == 30

        await eventually(published)
        consumer = EventConsumer(
            bus.bootstrap,
            bus.group,
            [bus.topic],
            {},
            batch_handlers={"OrderCreated": apply_all},
            pool=bus.pool,
            codec=bus.codec,
            inbox_schema=bus.schema,
            dead_letter_topic=bus.dead_letter_topic,
            retry=FAST_RETRY,
            poll_timeout=0.1,
            consumer_config=FAST_CONSUMER,
        )
        async with running(consumer):

            async def first_applied() -> bool:
                return bool(await bus.scalar("SELECT count(*) = 30 FROM {schema}.applied"))

            await eventually(first_applied)
            # The backlog was there before the consumer started: it came in a few batches.
            assert max(len(run) for run in runs) > 1
            assert sorted(e for run in runs for e in run) == sorted(first)

            # A batch whose handler fails is retried one event at a time.
            second = await bus.emit(5)
            poisoned.add(second[2])

            async def second_settled() -> bool:
                applied = await bus.scalar("SELECT count(*) FROM {schema}.applied")
                return bool(applied == 34 and consumer.stats.dead_lettered == 1)

            await eventually(second_settled)
    assert await bus.scalar("SELECT count(DISTINCT event_id) FROM {schema}.applied") == 34
    (letter,) = await bus.dead_letters(f"{bus.group}.replayer")
    assert letter.event_id == str(second[2])
    assert "cannot apply this one" in letter.error


async def test_an_outage_is_waited_out_without_limit_while_the_consumer_stays_in_its_group(
    bus: Bus,
) -> None:
    outage = asyncio.Event()
    outage.set()
    attempts = 0

    async def apply(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
        nonlocal attempts
        attempts += 1
        if outage.is_set():
            raise DependencyUnavailable("inventory is restarting", dependency="inventory")
        await bus.apply_handler()(envelope, conn)

    consumer = EventConsumer(
        bus.bootstrap,
        bus.group,
        [bus.topic],
        {"OrderCreated": apply},
        pool=bus.pool,
        codec=bus.codec,
        inbox_schema=bus.schema,
        dead_letter_topic=bus.dead_letter_topic,
        retry=FAST_RETRY,
        poll_timeout=0.1,
        # A consumer that stopped polling for 6 s would be evicted from its group.
        consumer_config={**FAST_CONSUMER, "max.poll.interval.ms": 6000},
    )
    async with running(bus.relay(), consumer):
        event_ids = await bus.emit(6)

        async def blocked_many_times() -> bool:
            return attempts > 4 * FAST_RETRY.max_attempts

        await eventually(blocked_many_times)
        assigned = consumer.assigned
        assert assigned, "the consumer owns partitions while it waits"
        [blockage] = consumer.board.blocked()
        assert (blockage.worker, blockage.dependency) == (bus.group, "inventory")
        assert "inventory is restarting" in blockage.error
        # Outlast the poll interval: a consumer that did not poll while waiting is evicted.
        await asyncio.sleep(8)
        assert consumer.assigned == assigned
        assert consumer.stats.dead_lettered == 0
        outage.clear()

        async def all_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(DISTINCT event_id) = 6 FROM {schema}.applied"
                    " WHERE event_id = ANY(%s)",
                    event_ids,
                )
            )

        await eventually(all_applied)
        assert consumer.board.blocked() == ()
        assert consumer.stats.dead_lettered == 0
        assert consumer.stats.outage_retries > 4 * FAST_RETRY.max_attempts
    assert await bus.scalar("SELECT count(*) FROM {schema}.applied") == 6
    assert await bus.dead_letters(f"{bus.group}.replayer") == []


async def test_poison_and_failing_events_are_dead_lettered_and_replayed(
    bus: Bus, raw_producer: Producer
) -> None:
    healthy = asyncio.Event()

    async def cancel(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
        if not healthy.is_set():
            raise RuntimeError("payment service unreachable")
        await bus.apply_handler()(envelope, conn)

    handlers = {"OrderCreated": bus.apply_handler(), "OrderCancelled": cancel}
    consumer = bus.consumer(handlers)
    raw_producer.produce(bus.topic, b"\x00not avro at all", key=b"order-poison")
    raw_producer.flush(10)
    replay_group = f"{bus.group}.replayer"
    async with running(bus.relay(), consumer):
        cancelled = await bus.emit(1, "OrderCancelled")
        created = await bus.emit(2)

        async def processed() -> bool:
            applied = await bus.scalar("SELECT count(*) FROM {schema}.applied")
            return bool(applied == 2 and consumer.stats.dead_lettered == 2)

        await eventually(processed)
        letters = await bus.dead_letters(replay_group)
        by_attempts = {letter.attempts: letter for letter in letters}
        assert sorted(by_attempts) == [0, FAST_RETRY.max_attempts]
        poison, failed = by_attempts[0], by_attempts[FAST_RETRY.max_attempts]
        assert poison.value == b"\x00not avro at all"
        assert poison.original_topic == bus.topic
        assert "single-object" in poison.error
        assert failed.event_id == str(cancelled[0])
        assert "payment service unreachable" in failed.error
        assert failed.consumer_group == bus.group
        assert failed.headers["ce_type"] == "ordermesh.events.v1.OrderCancelled"

        healthy.set()
        assert await bus.replay_dead_letters(replay_group) == 2

        async def cancel_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(*) FROM {schema}.applied WHERE event_id = %s", cancelled[0]
                )
                == 1
                and consumer.stats.dead_lettered == 3
            )

        await eventually(cancel_applied)

    remaining = await bus.dead_letters(replay_group)
    assert [letter.value for letter in remaining] == [b"\x00not avro at all"]
    assert await bus.scalar("SELECT count(*) FROM {schema}.applied") == len(created) + 1


async def test_rows_are_marked_published_only_after_kafka_acknowledges(bus: Bus) -> None:
    missing_topic = f"{bus.topic}.created-later"
    async with bus.pool.connection() as conn, conn.transaction():
        event_id = await add_to_outbox(
            conn,
            bus.schema,
            codec=bus.codec,
            topic=missing_topic,
            key="order-1",
            event_name="OrderCreated",
            record=order_created("order-1"),
            source=SOURCE,
        )
    relay = bus.relay(**{"message.timeout.ms": 1500})
    try:
        async with running(relay):

            async def delivery_failed() -> bool:
                return relay.failed_deliveries > 0

            await eventually(delivery_failed)
            assert await bus.scalar(
                "SELECT published_at IS NULL FROM {schema}.outbox WHERE event_id = %s", event_id
            )
            await asyncio.to_thread(ensure_topics, bus.bootstrap, [TopicSpec(missing_topic, 1)])

            async def published() -> bool:
                return bool(
                    await bus.scalar(
                        "SELECT published_at IS NOT NULL FROM {schema}.outbox WHERE event_id = %s",
                        event_id,
                    )
                )

            await eventually(published, within=60)
        messages = await asyncio.to_thread(read_all, bus.bootstrap, missing_topic, 1)
        assert [bus.codec.open_envelope(m.headers(), m.value()).event_id for m in messages] == [
            event_id
        ]
    finally:
        await asyncio.to_thread(delete_topics, bus.bootstrap, [missing_topic])


async def _emit_for(bus: Bus, key: str, event_name: str, **fields: Any) -> uuid.UUID:
    async with bus.pool.connection() as conn, conn.transaction():
        return await add_to_outbox(
            conn,
            bus.schema,
            codec=bus.codec,
            topic=bus.topic,
            key=key,
            event_name=event_name,
            record={**RECORDS[event_name](key), **fields},
            source=SOURCE,
        )


def _keyed(bootstrap: str, topic: str, expected: int, key: str, codec: EventCodec) -> list[Any]:
    return [
        codec.open_envelope(m.headers(), m.value()).event_id
        for m in read_all(bootstrap, topic, expected)
        if m.key() == key.encode()
    ]


async def test_a_row_kafka_never_accepts_is_parked_and_everything_else_flows_in_key_order(
    bus: Bus,
) -> None:
    stuck_key = f"order-{uuid.uuid4()}"
    # About 1.1 MB encoded: over the producer's (and the broker's) maximum message size.
    too_large = await _emit_for(bus, stuck_key, "OrderCancelled", reason="x" * 1_100_000)
    held_first = await _emit_for(bus, stuck_key, "OrderCreated")
    others = await bus.emit(5)
    consumer = bus.consumer({"OrderCreated": bus.apply_handler()})
    relay = bus.relay()
    dsn, schemas = bus.dsn, [bus.schema]
    async with running(relay, consumer):

        async def others_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(*) = 5 FROM {schema}.applied WHERE event_id = ANY(%s)", others
                )
            )

        await eventually(others_applied)
        parked_rows = await asyncio.to_thread(parked.list_parked, dsn, schemas)
        assert [(row.event_id, row.held_behind is None) for row in parked_rows] == [
            (str(too_large), True),
            (str(held_first), False),
        ]
        assert parked_rows[0].reason == (
            "Kafka refuses it: Unable to produce message: Broker: Message size too large"
        )
        assert parked_rows[1].held_behind == parked_rows[0].outbox_id
        assert relay.parked == 2
        # Rows written after the parking flow at once; a later row of the stuck key waits.
        later = await bus.emit(3)
        held_second = await _emit_for(bus, stuck_key, "OrderCreated")

        async def later_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(*) = 3 FROM {schema}.applied WHERE event_id = ANY(%s)", later
                )
            )

        await eventually(later_applied)

        async def second_held() -> bool:
            rows = await asyncio.to_thread(parked.list_parked, dsn, schemas)
            return str(held_second) in {row.event_id for row in rows}

        await eventually(second_held)
        assert (
            await bus.scalar("SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0
        )
        # Discarding the row that can never be produced releases the rows held behind it,
        # which reach Kafka in their original order.
        discarded = await asyncio.to_thread(parked.discard_parked, dsn, schemas, [str(too_large)])
        assert discarded == 1

        async def held_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(*) = 2 FROM {schema}.applied WHERE event_id = ANY(%s)",
                    [held_first, held_second],
                )
            )

        await eventually(held_applied)
    assert await asyncio.to_thread(parked.list_parked, dsn, schemas) == []
    delivered = await asyncio.to_thread(_keyed, bus.bootstrap, bus.topic, 10, stuck_key, bus.codec)
    assert delivered == [held_first, held_second]


async def test_a_parked_row_is_replayed_once_its_cause_is_fixed(bus: Bus) -> None:
    key = f"order-{uuid.uuid4()}"
    event_id = await _emit_for(bus, key, "OrderCreated")
    async with bus.pool.connection() as conn:
        # A bug wrote a header that is not a string: no CloudEvents header can carry it.
        await conn.execute(
            f"UPDATE {bus.schema}.outbox SET headers = headers || '{{\"ce_subject\": 7}}'"
            " WHERE event_id = %s",
            (event_id,),
        )
    consumer = bus.consumer({"OrderCreated": bus.apply_handler()})
    relay = bus.relay()
    dsn, schemas = bus.dsn, [bus.schema]
    async with running(relay, consumer):

        async def is_parked() -> bool:
            return bool(await asyncio.to_thread(parked.list_parked, dsn, schemas))

        await eventually(is_parked)
        [row] = await asyncio.to_thread(parked.list_parked, dsn, schemas)
        assert row.reason == "header 'ce_subject' is not a string"
        with pytest.raises(parked.UnknownParkedRowError):
            await asyncio.to_thread(parked.replay_parked, dsn, schemas, [str(uuid.uuid4())])
        async with bus.pool.connection() as conn:
            await conn.execute(
                f"UPDATE {bus.schema}.outbox_parked SET headers = headers || %s::jsonb",
                (json.dumps({"ce_subject": key}),),
            )
        assert await asyncio.to_thread(parked.replay_parked, dsn, schemas, None) == 1

        async def applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(*) = 1 FROM {schema}.applied WHERE event_id = %s", event_id
                )
            )

        await eventually(applied)
    assert await asyncio.to_thread(parked.list_parked, dsn, schemas) == []


async def test_a_notification_wakes_the_relay_for_its_schema_between_polls(bus: Bus) -> None:
    relay = OutboxRelay(
        bus.pool, {"bootstrap.servers": bus.bootstrap}, [bus.schema], poll_interval=60.0
    )
    async with running(relay):

        async def active() -> bool:
            return relay.owned_schemas == {bus.schema}

        await eventually(active)
        await asyncio.sleep(0.2)  # past the first poll: the next one is a minute away
        await bus.emit(3)

        async def published() -> bool:
            return relay.published == 3

        await eventually(published, within=20)


async def test_rows_whose_notification_was_lost_are_published_by_the_poll(bus: Bus) -> None:
    async with bus.pool.connection() as conn:
        await conn.execute(f"ALTER TABLE {bus.schema}.outbox DISABLE TRIGGER outbox_notify")
    relay = bus.relay()
    async with running(relay):

        async def active() -> bool:
            return relay.owned_schemas == {bus.schema}

        await eventually(active)
        await bus.emit(3)

        async def published() -> bool:
            return relay.published == 3

        await eventually(published)
    assert await bus.scalar("SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0


async def test_one_relay_per_schema_and_a_standby_takes_over(bus: Bus) -> None:
    first, second = bus.relay(), bus.relay()
    async with running(first) as stop_first, running(second) as stop_second:

        async def one_active() -> bool:
            return len(first.owned_schemas) + len(second.owned_schemas) == 1

        await eventually(one_active)
        active, standby = (first, second) if first.owned_schemas else (second, first)
        await bus.emit(5)

        async def active_published() -> bool:
            return active.published == 5

        await eventually(active_published)
        (stop_first if active is first else stop_second).set()

        async def standby_took_over() -> bool:
            return standby.owned_schemas == {bus.schema}

        await eventually(standby_took_over)
        await bus.emit(5)

        async def standby_published() -> bool:
            return standby.published == 5

        await eventually(standby_published)
    assert active.published == 5
    assert await bus.scalar("SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0


async def test_relay_reconnects_when_its_postgres_session_dies(bus: Bus) -> None:
    relay = bus.relay()
    key = advisory_lock_key(bus.schema) & (2**64 - 1)
    async with running(relay):
        await bus.emit(5)

        async def first_published() -> bool:
            return relay.published == 5

        await eventually(first_published)
        terminated = await bus.scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objid = %s AND objsubid = 1 AND granted",
            key >> 32,
            key & 0xFFFFFFFF,
        )
        assert terminated
        await bus.emit(5)

        async def all_published() -> bool:
            return relay.published == 10 and relay.owned_schemas == {bus.schema}

        await eventually(all_published)
    assert await bus.scalar("SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0


async def test_replicas_in_one_group_share_partitions_and_apply_each_event_once(bus: Bus) -> None:
    handlers = {"OrderCreated": bus.apply_handler()}
    first, second = bus.consumer(handlers), bus.consumer(handlers)
    async with running(bus.relay(), first):
        await bus.emit(30)
        async with running(second):

            async def both_assigned() -> bool:
                return bool(first.assigned) and bool(second.assigned)

            await eventually(both_assigned, within=60)
            await bus.emit(30)

            async def all_applied() -> bool:
                return bool(await bus.scalar("SELECT count(*) = 60 FROM {schema}.applied"))

            await eventually(all_applied)
    assert await bus.scalar("SELECT count(DISTINCT event_id) FROM {schema}.applied") == 60
    assert await bus.scalar("SELECT count(*) FROM {schema}.applied") == 60
    assert second.stats.applied > 0


def with_sales_channel(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The next version of an event: one new field with a default, a compatible change."""
    evolved = copy.deepcopy(dict(schema))
    evolved["fields"].append(
        {"name": "sales_channel", "type": "string", "default": "web", "doc": "Where it was sold."}
    )
    return evolved


@pytest.fixture
def evolved_schemas(tmp_path: Path) -> Path:
    """A copy of ``schemas/`` where OrderCreated has one more version, adding ``sales_channel``."""
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, directory)
    add_schema_version(directory, with_sales_channel(schema_file("OrderCreated")))
    return directory


async def test_a_consumer_applies_events_written_with_any_released_version(
    bus: Bus, evolved_schemas: Path
) -> None:
    upgraded = replace(bus, codec=EventCodec.from_directory(evolved_schemas))
    written_before = await _emit_for(bus, f"order-{uuid.uuid4()}", "OrderCreated")
    written_after = await _emit_for(
        upgraded, f"order-{uuid.uuid4()}", "OrderCreated", sales_channel="app"
    )
    applied: dict[uuid.UUID, EventEnvelope] = {}
    consumer = upgraded.consumer({"OrderCreated": upgraded.recording_handler(applied)})
    async with running(bus.relay(), consumer):

        async def both_applied() -> bool:
            return bool(
                await bus.scalar(
                    "SELECT count(DISTINCT event_id) = 2 FROM {schema}.applied"
                    " WHERE event_id = ANY(%s)",
                    [written_before, written_after],
                )
            )

        await eventually(both_applied)
    older, newer = applied[written_before], applied[written_after]
    assert older.payload[2:10] == bus.codec.fingerprint("OrderCreated")
    assert newer.payload[2:10] == upgraded.codec.fingerprint("OrderCreated") != older.payload[2:10]
    assert older.record["sales_channel"] == "web"
    assert newer.record["sales_channel"] == "app"
    assert consumer.stats.dead_lettered == 0


async def test_a_consumer_on_the_older_version_reads_a_newer_one_it_was_given(
    bus: Bus, evolved_schemas: Path
) -> None:
    upgraded = replace(bus, codec=EventCodec.from_directory(evolved_schemas))
    told = EventCodec.from_directory(SCHEMA_DIR)
    told.register_writer_schema(upgraded.codec.schema("OrderCreated"))
    assert told.fingerprint("OrderCreated") == bus.codec.fingerprint("OrderCreated")
    key = f"order-{uuid.uuid4()}"
    written = await _emit_for(upgraded, key, "OrderCreated", sales_channel="app")
    applied: dict[uuid.UUID, EventEnvelope] = {}
    consumer = replace(bus, codec=told).consumer({"OrderCreated": bus.recording_handler(applied)})
    async with running(bus.relay(), consumer):

        async def read() -> bool:
            return written in applied

        await eventually(read)
    assert applied[written].payload[2:10] == upgraded.codec.fingerprint("OrderCreated")
    assert applied[written].record == order_created(key)
    assert consumer.stats.dead_lettered == 0


async def test_a_version_a_consumer_does_not_know_is_dead_lettered_until_it_is_upgraded(
    bus: Bus, evolved_schemas: Path
) -> None:
    upgraded = replace(bus, codec=EventCodec.from_directory(evolved_schemas))
    written = await _emit_for(
        upgraded, f"order-{uuid.uuid4()}", "OrderCreated", sales_channel="app"
    )
    not_upgraded = bus.consumer({"OrderCreated": bus.apply_handler()})
    async with running(bus.relay(), not_upgraded):

        async def dead_lettered() -> bool:
            return not_upgraded.stats.dead_lettered == 1

        await eventually(dead_lettered)
    replay_group = f"{bus.group}.replayer"
    [letter] = await bus.dead_letters(replay_group)
    assert letter.event_id == str(written)
    unknown = upgraded.codec.fingerprint("OrderCreated").hex()
    assert f"unknown writer schema fingerprint {unknown}" in letter.error

    applied: dict[uuid.UUID, EventEnvelope] = {}
    consumer = upgraded.consumer({"OrderCreated": upgraded.recording_handler(applied)})
    async with running(consumer):
        assert await bus.replay_dead_letters(replay_group) == 1

        async def applied_after_the_replay() -> bool:
            return written in applied

        await eventually(applied_after_the_replay)
    assert applied[written].record["sales_channel"] == "app"
    assert (consumer.stats.applied, consumer.stats.duplicates) == (1, 0)
