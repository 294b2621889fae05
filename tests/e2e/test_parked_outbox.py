"""One outbox row Kafka can never accept does not stop anyone's orders: the relay parks it,
the operator sees it in ``ordermesh status`` and ``ordermesh outbox list``, orders created
after it ship, and ``ordermesh outbox discard`` clears it."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from devstack import postgres
from devstack.paths import LOG_DIR
from services.platform.messaging import registry
from services.platform.messaging.codec import SCHEMA_DIR, EventCodec
from services.platform.messaging.outbox import outbox_message
from tests.e2e.conftest import User
from tests.e2e.pipeline import (
    ORDERMESH,
    Books,
    create_orders,
    products,
    status_text,
    wait_all_terminal,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def books() -> Iterator[Books]:
    with products(**{"parked-widget": 100}) as created:
        yield created


def ordermesh(*args: str) -> str:
    done = subprocess.run(
        [ORDERMESH, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_unproducible_row() -> str:
    """An OrderCancelled of about 1.1 MB, as a bug (or a bound forgotten) would write it:
    over Kafka's maximum message size."""
    codec = EventCodec.from_directory(SCHEMA_DIR)
    order_id = str(uuid.uuid4())
    message = outbox_message(
        codec,
        topic=registry.ORDERS,
        key=order_id,
        event_name="OrderCancelled",
        record={
            "order_id": order_id,
            "user_id": "parked-test",
            "reason": "x" * 1_100_000,
            "previous_status": "PENDING",
            "cancelled_by": "parked-test",
            "cancelled_at": datetime.now(UTC),
            "version": 2,
        },
        source="/ordermesh/order",
    )
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders.outbox (event_id, topic, message_key, event_type, payload,"
            " headers, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                message.event_id,
                message.topic,
                message.key,
                message.event_type,
                message.payload,
                Jsonb(dict(message.headers)),
                message.occurred_at,
            ),
        )
    return str(message.event_id)


def parked_line(event_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in ordermesh("outbox", "list").splitlines():
            if f"id={event_id}" in line:
                return line
        assert time.monotonic() < deadline, f"{event_id} was not parked"
        time.sleep(0.3)


def test_an_unproducible_row_is_parked_and_orders_after_it_ship(
    http: httpx.Client, user: User, books: Books
) -> None:
    event_id = write_unproducible_row()
    line = parked_line(event_id)
    assert "OrderCancelled" in line
    assert "Message size too large" in line
    status = status_text()
    [orders_outbox] = [row for row in status.splitlines() if row.startswith("orders ")]
    assert orders_outbox.split()[1:3] == ["0", "1"], orders_outbox
    assert "ordermesh outbox list" in status
    assert "outbox row parked" in (LOG_DIR / "relay.log").read_text()

    [product] = books.products
    started = time.monotonic()
    order_ids = create_orders(http, user, books, [{product: 1}] * 3)
    statuses = wait_all_terminal(order_ids, timeout=30)
    assert set(statuses.values()) == {"SHIPPED"}
    assert time.monotonic() - started < 30

    assert "discarded 1 parked row(s)" in ordermesh("outbox", "discard", "--event-id", event_id)
    assert event_id not in ordermesh("outbox", "list")
    [orders_outbox] = [row for row in status_text().splitlines() if row.startswith("orders ")]
    assert orders_outbox.split()[1:3] == ["0", "0"], orders_outbox


def test_operator_commands_refuse_unknown_rows_cleanly() -> None:
    unknown = str(uuid.uuid4())
    for command in ("replay", "discard"):
        done = subprocess.run(
            [ORDERMESH, "outbox", command, "--event-id", unknown],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert f"no parked outbox row with event id {unknown}" in done.stderr
