"""Faults while orders are in flight: kill -9 a worker process, the outbox relay, or the
Kafka broker, restart it, and check that every order still ends in exactly one terminal
state and that stock and payments add up, i.e. no effect was lost or applied twice.

These tests drive orders through the public port like the others, then inspect the system
of record (Postgres) to check the books, and control processes like an operator would.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devstack import kafka
from tests.e2e.conftest import User, order_body, register_and_login
from tests.e2e.pipeline import (
    Books,
    check_books,
    kill_9,
    products,
    restart_stack,
    wait_all_terminal,
)

pytestmark = pytest.mark.e2e

ORDERS = 500
PLENTY = 1_000_000
SCARCE = 40


@pytest.fixture
def books() -> Iterator[Books]:
    with products(**{"fault-plenty": PLENTY, "fault-scarce": SCARCE}) as created:
        yield created


def _order_lines(index: int, books: Books) -> tuple[dict[str, int], str]:
    plenty, scarce = books.products
    lines = {plenty: 1 + index % 3}
    if index % 5 == 0:
        lines[scarce] = 2
    method = "tok_chargeDeclined" if index % 10 == 7 else "tok_visa"
    return lines, method


def _create_orders(
    http: httpx.Client, user: User, books: Books, created: list[str], halfway: threading.Event
) -> None:
    def create(index: int) -> None:
        lines, method = _order_lines(index, books)
        items = [{"product_id": p, "quantity": q} for p, q in lines.items()]
        response = http.post(
            "/api/v1/orders",
            json=order_body(items=items, payment_method=method),
            headers={**user.headers, "Idempotency-Key": f"fault-{user.user_id}-{index}"},
        )
        assert response.status_code == 200, response.text
        order_id = response.json()["order_id"]
        books.quantities[order_id] = lines
        created.append(order_id)
        if len(created) == ORDERS // 3:
            halfway.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(ORDERS)))


def _kill_kafka() -> None:
    kill_9(kafka.NAME)


def _restart_kafka() -> None:
    kafka.start()


@pytest.mark.parametrize(
    ("what", "kill", "restart"),
    [
        ("worker process", lambda: kill_9("workers"), restart_stack),
        ("outbox relay", lambda: kill_9("relay"), restart_stack),
        ("kafka broker", _kill_kafka, _restart_kafka),
    ],
)
def test_orders_survive_a_kill_9(
    http: httpx.Client,
    books: Books,
    what: str,
    kill: Callable[[], None],
    restart: Callable[[], None],
) -> None:
    user = register_and_login(http)
    created: list[str] = []
    halfway = threading.Event()
    creator = threading.Thread(
        target=_create_orders, args=(http, user, books, created, halfway), daemon=True
    )
    creator.start()
    assert halfway.wait(120), "orders were not being created"
    kill()
    time.sleep(1.0)
    restart()
    creator.join(300)
    assert not creator.is_alive()
    assert len(created) == ORDERS
    statuses = wait_all_terminal(created)
    outcome = Counter(statuses.values())
    assert outcome["SHIPPED"] > 0 and outcome["FAILED"] > 0, outcome
    check_books(books, statuses)
