"""Faults while orders are in flight: kill -9 a worker process, the outbox relay, or the
Kafka broker, restart it, and check that every order ends exactly as it was built to end,
with nothing dead-lettered, the outboxes drained, and stock and payments adding up: no
effect lost or applied twice.

The mix is deterministic by construction: a declined card fails whatever the order holds;
an order with a unit of the product that has none in stock is cancelled out of stock (and
reserves nothing of its other lines); every other order ships, including those with the
"exact" product, whose stock is exactly what they ask for together, so a lost or doubled
reservation would cancel one of them or leave stock behind.

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
    check_reasons,
    kill_9,
    pending_dead_letters,
    products,
    restart_stack,
    stock_of,
    wait_all_terminal,
    wait_outboxes_drained,
    wait_refunds_settled,
)

pytestmark = pytest.mark.e2e

ORDERS = 500
PLENTY = 1_000_000


def _declined(index: int) -> bool:
    return index % 10 == 7


def _wants_none(index: int) -> bool:
    return index % 7 == 3


def _wants_exact(index: int) -> bool:
    return index % 5 == 0


def expected_outcome(index: int) -> str:
    if _declined(index):
        return "FAILED"
    if _wants_none(index):
        return "CANCELLED"
    return "SHIPPED"


# Two units per order that wants the exact product and ships: its whole stock.
EXACT_STOCK = 2 * sum(
    1 for i in range(ORDERS) if _wants_exact(i) and expected_outcome(i) == "SHIPPED"
)


@pytest.fixture
def books() -> Iterator[Books]:
    stock = {"fault-plenty": PLENTY, "fault-exact": EXACT_STOCK, "fault-none": 0}
    with products(**stock) as created:
        yield created


def _order_lines(index: int, books: Books) -> tuple[dict[str, int], str]:
    plenty, exact, none = books.products
    lines = {plenty: 1 + index % 3}
    if _wants_exact(index):
        lines[exact] = 2
    if _wants_none(index):
        lines[none] = 1
    return lines, "tok_chargeDeclined" if _declined(index) else "tok_visa"


def _create_orders(
    http: httpx.Client,
    user: User,
    books: Books,
    created: dict[str, int],
    halfway: threading.Event,
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
        created[order_id] = index
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
    letters_before = pending_dead_letters()
    user = register_and_login(http)
    created: dict[str, int] = {}
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
    statuses = wait_all_terminal(list(created))
    expected = {order_id: expected_outcome(index) for order_id, index in created.items()}
    wrong = {o: (statuses[o], expected[o]) for o in created if statuses[o] != expected[o]}
    assert not wrong, f"{len(wrong)} orders ended wrongly, e.g. {list(wrong.items())[:5]}"
    assert Counter(statuses.values()) == Counter(expected.values())
    check_reasons(statuses)
    wait_refunds_settled(statuses)
    check_books(books, statuses)
    none = list(books.products)[2]
    exact = list(books.products)[1]
    assert stock_of(exact) == 0 and stock_of(none) == 0
    assert pending_dead_letters() == letters_before, "a fault dead-lettered events"
    wait_outboxes_drained()
