"""A poison message on the orders topic is dead-lettered with its error, and the workers keep
going: the partition it sat in moves on and a new order still gets validated.

"Malformed" here means a record whose CloudEvents headers look right (an ``OrderCreated``
the order validator would handle) but whose body cannot become that event: bytes that are
not Avro single-object encoded, an Avro body that does not decode with the schema its
fingerprint names, and a valid Avro body of another event type than ``ce_type`` declares.
A well-formed event of a type nobody handles is not poison: consumers select by
``ce_type`` and acknowledge what is not theirs, so it is skipped, not dead-lettered.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from devstack import kafka
from services.platform.messaging import registry
from services.platform.messaging.codec import (
    SINGLE_OBJECT_MAGIC,
    EventCodec,
    cloudevent_headers,
    event_type,
    header_map,
)
from services.platform.messaging.dead_letters import (
    DLQ_CONSUMER_GROUP,
    DLQ_ERROR,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_TOPIC,
    UnknownDeadLetterError,
    discard_dead_letters,
)
from tests.e2e.conftest import User, order_body
from tests.unit.test_codec import SAMPLES

pytestmark = pytest.mark.e2e

DEADLINE = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    admin: AdminClient
    codec: EventCodec


@pytest.fixture(scope="module")
def broker() -> Broker:
    bootstrap = kafka.bootstrap()
    return Broker(
        bootstrap, AdminClient({"bootstrap.servers": bootstrap}), EventCodec.from_directory()
    )


def _poison(codec: EventCodec, case: str) -> tuple[bytes, str]:
    """An ``OrderCreated`` body that is poison, and what the dead letter's error must name."""
    if case == "undecodable-bytes":
        return b"\x00\xffthis is not avro", "single-object"
    if case == "truncated-avro-body":
        body = SINGLE_OBJECT_MAGIC + codec.fingerprint("OrderCreated") + b"\x02"
        return body, "OrderCreated body does not decode"
    cancelled = codec.encode("OrderCancelled", SAMPLES["OrderCancelled"])
    return cancelled, "but payload is OrderCancelled"


def _produce(
    bootstrap: str, key: str, value: bytes, event_id: uuid.UUID, declared: str
) -> tuple[int, int]:
    """Produce one record to the orders topic; returns its (partition, offset)."""
    headers = cloudevent_headers(
        event_id=event_id,
        event_name="OrderCreated",
        source="/ordermesh/tests/poison",
        time=datetime.now(UTC),
        subject=key,
    )
    headers["ce_type"] = event_type(declared)
    delivered: list[Message] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        delivered.append(message)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(
        registry.ORDERS,
        value,
        key=key.encode(),
        headers=list(headers.items()),
        on_delivery=on_delivery,
    )
    assert producer.flush(10) == 0
    [message] = delivered
    return message.partition() or 0, message.offset() or 0


def _poll(check: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)


@dataclass(frozen=True)
class DeadLetterReader:
    """Reads the dead-letter topic from where it ended when the reader was made."""

    consumer: Consumer
    starts: dict[int, int]


@contextlib.contextmanager
def _dead_letter_reader(bootstrap: str) -> Iterator[DeadLetterReader]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        metadata = consumer.list_topics(registry.DEAD_LETTER, timeout=10)
        starts = {
            partition: _high(consumer, partition)
            for partition in metadata.topics[registry.DEAD_LETTER].partitions
        }
        consumer.assign([TopicPartition(registry.DEAD_LETTER, p, o) for p, o in starts.items()])
        yield DeadLetterReader(consumer, starts)
    finally:
        consumer.close()


def _high(consumer: Consumer, partition: int) -> int:
    _, high = consumer.get_watermark_offsets(
        TopicPartition(registry.DEAD_LETTER, partition), timeout=10
    )
    return int(high)


def _next_with_key(reader: DeadLetterReader, key: str) -> Callable[[], dict[str, str] | None]:
    def check() -> dict[str, str] | None:
        message = reader.consumer.poll(0.2)
        if message is None or message.error() is not None or message.key() != key.encode():
            return None
        return header_map(message.headers())

    return check


def _keys_to_end(reader: DeadLetterReader) -> set[bytes]:
    """Keys of every record from the reader's start to the current end of the topic."""
    ends = {partition: _high(reader.consumer, partition) for partition in reader.starts}
    keys: set[bytes] = set()

    def at_end() -> bool | None:
        message = reader.consumer.poll(0.2)
        if message is not None and message.error() is None:
            keys.add(_bytes(message.key()))
        positions = reader.consumer.position(
            [TopicPartition(registry.DEAD_LETTER, p) for p in ends]
        )
        done = all(
            max(tp.offset, reader.starts[tp.partition]) >= ends[tp.partition] for tp in positions
        )
        return True if done else None

    _poll(at_end, "reading the dead-letter topic to its end")
    return keys


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _wait_for_validator_past(broker: Broker, partition: int, offset: int) -> None:
    """Wait until the order validator committed an offset past ``partition@offset``."""
    group = registry.ORDER_VALIDATOR_GROUP
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(registry.ORDERS, partition)])

    def past() -> bool | None:
        futures = broker.admin.list_consumer_group_offsets([request], request_timeout=5)
        [committed] = futures[group].result().topic_partitions
        return True if committed.offset > offset else None

    _poll(past, f"{group} committing past {registry.ORDERS}[{partition}]@{offset}")


def _order_ships(http: httpx.Client, user: User) -> dict[str, Any]:
    created = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
    assert created.status_code == 200, created.text
    order_id = created.json()["order_id"]

    def shipped() -> dict[str, Any] | None:
        response = http.get(f"/api/v1/orders/{order_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        assert order["status"] not in ("ORDER_STATUS_FAILED", "ORDER_STATUS_CANCELLED"), order
        return order if order["status"] == "ORDER_STATUS_SHIPPED" else None

    return _poll(shipped, f"order {order_id} shipping")


@pytest.mark.parametrize(
    "case", ["undecodable-bytes", "truncated-avro-body", "type-contradicts-payload"]
)
def test_poison_is_dead_lettered_and_the_workers_keep_going(
    http: httpx.Client, user: User, broker: Broker, case: str
) -> None:
    value, problem = _poison(broker.codec, case)
    key, event_id = str(uuid.uuid4()), uuid.uuid4()
    try:
        with _dead_letter_reader(broker.bootstrap) as reader:
            partition, offset = _produce(broker.bootstrap, key, value, event_id, "OrderCreated")
            # Every group that handles OrderCreated meets the poison and dead-letters it
            # (the order validator and the live feed), each once.
            handling = {
                group.group
                for group in registry.CONSUMER_GROUPS
                if registry.ORDERS in group.topics and "OrderCreated" in group.events
            }
            letters: dict[str, dict[str, str]] = {}

            def every_group_letter() -> dict[str, dict[str, str]] | None:
                headers = _next_with_key(reader, key)()
                if headers is not None:
                    assert headers[DLQ_CONSUMER_GROUP] not in letters, "dead-lettered twice"
                    letters[headers[DLQ_CONSUMER_GROUP]] = headers
                return letters if set(letters) == handling else None

            _poll(every_group_letter, f"a dead letter keyed {key} from each of {handling}")

        assert registry.ORDER_VALIDATOR_GROUP in handling
        for headers in letters.values():
            assert problem in headers[DLQ_ERROR], headers[DLQ_ERROR]
            assert headers[DLQ_ORIGINAL_TOPIC] == registry.ORDERS
            assert headers[DLQ_ORIGINAL_OFFSET] == str(offset)
            assert headers["ce_id"] == str(event_id)
        _wait_for_validator_past(broker, partition, offset)
        order = _order_ships(http, user)
        assert order["status"] == "ORDER_STATUS_SHIPPED"
    finally:
        with contextlib.suppress(UnknownDeadLetterError):
            discard_dead_letters(broker.bootstrap, [str(event_id)])


def test_an_event_type_nobody_handles_is_skipped_not_dead_lettered(
    http: httpx.Client, user: User, broker: Broker
) -> None:
    key, event_id = str(uuid.uuid4()), uuid.uuid4()
    value = broker.codec.encode("OrderCreated", {**SAMPLES["OrderCreated"], "order_id": key})
    with _dead_letter_reader(broker.bootstrap) as reader:
        partition, offset = _produce(broker.bootstrap, key, value, event_id, "OrderTeleported")
        _wait_for_validator_past(broker, partition, offset)
        _order_ships(http, user)
        assert key.encode() not in _keys_to_end(reader), "an unhandled event was dead-lettered"
