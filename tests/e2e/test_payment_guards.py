"""Money moves once, and never for a cancelled order: a replayed validation of a cancelled
order captures nothing, and a duplicate payment event after a refund refunds nothing twice.
Events are replayed the way an operator would (``ordermesh dlq replay``) or re-sent as a
misbehaving producer would."""

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from devstack import kafka, postgres, procs, stack
from services.platform.messaging import registry
from services.platform.messaging.codec import SCHEMA_DIR, EventCodec, cloudevent_headers
from services.platform.messaging.dead_letters import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
)
from tests.e2e.conftest import User, order_body
from tests.e2e.pipeline import ORDERMESH, Books, money_balance, products, wait_all_terminal

pytestmark = pytest.mark.e2e

DEADLINE = 60.0


@pytest.fixture
def books() -> Iterator[Books]:
    with products(**{"guard-plenty": 1000, "guard-single": 1}) as created:
        yield created


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory(SCHEMA_DIR)


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} not within {DEADLINE}s"
        time.sleep(0.2)
    return found


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def applied(schema: str, group: str, event_id: uuid.UUID) -> bool:
    rows = query(
        f"SELECT 1 FROM {schema}.inbox WHERE consumer_group = %s AND event_id = %s",
        group,
        event_id,
    )
    return bool(rows)


def produce(topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap()})
    producer.produce(topic, value, key=key.encode(), headers=list(headers.items()))
    assert producer.flush(10) == 0


def test_a_replayed_validation_of_a_cancelled_order_captures_nothing(
    http: httpx.Client, user: User, books: Books, codec: EventCodec
) -> None:
    plenty = next(iter(books.products))
    # Cancelled while PENDING: nothing consumes until the cancellation is in.
    procs.stop("workers")
    try:
        created = http.post(
            "/api/v1/orders",
            json=order_body(items=[{"product_id": plenty, "quantity": 2}]),
            headers=user.headers,
        )
        assert created.status_code == 200, created.text
        order = created.json()
        cancelled = http.delete(f"/api/v1/orders/{order['order_id']}", headers=user.headers)
        assert cancelled.json()["status"] == "ORDER_STATUS_CANCELLED", cancelled.text
    finally:
        stack.start_app("workers")
    order_id = order["order_id"]
    eventually(
        lambda: query("SELECT 1 FROM payment.cancelled_orders WHERE order_id = %s", order_id),
        "the payment service recording the cancellation",
    )
    # A validation of the order that a payment processor once dead-lettered, now replayed.
    event_id = uuid.uuid4()
    record = {
        "order_id": order_id,
        "user_id": user.user_id,
        "items": [{"product_id": plenty, "quantity": 2, "unit_price_minor": 1250}],
        "total_minor": 2500,
        "currency": "USD",
        "payment_method": "tok_visa",
        "shipping_address": order["shipping_address"],
        "validated_at": datetime.now(UTC),
        "version": 2,
    }
    headers = cloudevent_headers(
        event_id=event_id,
        event_name="OrderValidated",
        source="/ordermesh/order",
        time=datetime.now(UTC),
        subject=order_id,
    )
    headers.update(
        {
            DLQ_ERROR: "DependencyUnavailable('payment provider timed out')",
            DLQ_ORIGINAL_TOPIC: registry.ORDERS,
            DLQ_ORIGINAL_PARTITION: "0",
            DLQ_ORIGINAL_OFFSET: "-1",
            DLQ_CONSUMER_GROUP: registry.PAYMENT_PROCESSOR_GROUP,
            DLQ_ATTEMPTS: "5",
            DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    produce(registry.DEAD_LETTER, order_id, codec.encode("OrderValidated", record), headers)
    replay = subprocess.run(
        [ORDERMESH, "dlq", "replay", "--event-id", str(event_id)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1" in replay.stdout
    eventually(
        lambda: applied("payment", registry.PAYMENT_PROCESSOR_GROUP, event_id),
        "the payment processor handling the replayed validation",
    )
    assert query("SELECT status FROM payment.payments WHERE order_id = %s", order_id) == []
    assert http.get(f"/api/v1/orders/{order_id}", headers=user.headers).json()["status"] == (
        "ORDER_STATUS_CANCELLED"
    )


def test_a_duplicate_payment_event_after_a_refund_refunds_nothing_twice(
    http: httpx.Client, user: User, books: Books
) -> None:
    plenty, single = books.products
    shipped = http.post(
        "/api/v1/orders",
        json=order_body(items=[{"product_id": plenty, "quantity": 3}]),
        headers=user.headers,
    ).json()["order_id"]
    short = http.post(
        "/api/v1/orders",
        json=order_body(items=[{"product_id": single, "quantity": 2}]),
        headers=user.headers,
    ).json()["order_id"]
    statuses = wait_all_terminal([shipped, short])
    assert statuses == {shipped: "SHIPPED", short: "CANCELLED"}
    eventually(
        lambda: query(
            "SELECT 1 FROM payment.payments WHERE order_id = %s AND status = 'refunded'", short
        ),
        "the refund of the order that ran out of stock",
    )
    [(payload, original_headers)] = query(
        "SELECT payload, headers FROM payment.outbox WHERE message_key = %s"
        " AND event_type = 'ordermesh.events.v1.PaymentProcessed'",
        short,
    )
    # The same event again (a redelivery), and a copy under a new id (a buggy producer).
    copy_id = uuid.uuid4()
    produce(registry.PAYMENTS, short, bytes(payload), original_headers)
    produce(registry.PAYMENTS, short, bytes(payload), {**original_headers, "ce_id": str(copy_id)})
    eventually(
        lambda: applied("inventory", registry.INVENTORY_MANAGER_GROUP, copy_id),
        "the inventory manager handling the copy",
    )
    assert query("SELECT status FROM payment.payments WHERE order_id = %s", short) == [
        ("refunded",)
    ]
    refunds = query(
        "SELECT count(*) FROM payment.outbox WHERE message_key = %s"
        " AND event_type = 'ordermesh.events.v1.PaymentRefunded'",
        short,
    )
    assert refunds == [(1,)]
    shortages = query(
        "SELECT count(*) FROM inventory.outbox WHERE message_key = %s"
        " AND event_type = 'ordermesh.events.v1.OutOfStock'",
        short,
    )
    assert shortages == [(1,)]
    net, shipped_total = money_balance([shipped, short])
    assert (net, shipped_total) == (3 * 1250, 3 * 1250)
