"""Faults while orders are in flight: kill -9 a worker process, the outbox relay, or the
Kafka broker, restart it, and check that every order still ends in exactly one terminal
state and that stock and payments add up, i.e. no effect was lost or applied twice.

These tests drive orders through the public port like the others, then inspect the system
of record (Postgres) to check the books, and control processes like an operator would.
"""

import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from devstack import kafka, postgres, procs
from devstack.paths import REPO_ROOT
from tests.e2e.conftest import User, order_body, register_and_login

pytestmark = pytest.mark.e2e

ORDERS = 500
TERMINAL = ("SHIPPED", "FAILED", "CANCELLED")
PLENTY = 1_000_000
SCARCE = 40


@dataclass
class Books:
    products: dict[str, int]
    quantities: dict[str, dict[str, int]] = field(default_factory=dict)


@pytest.fixture
def books() -> Iterator[Books]:
    suffix = uuid.uuid4().hex[:10]
    products = {f"fault-plenty-{suffix}": PLENTY, f"fault-scarce-{suffix}": SCARCE}
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        for product_id, stock in products.items():
            conn.execute(
                "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency,"
                " stock) VALUES (%s, %s, 1250, 'USD', %s)",
                (product_id, f"Fault test {product_id}", stock),
            )
    yield Books(products)
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE inventory.products SET active = false WHERE product_id = ANY(%s)",
            (list(products),),
        )


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


def _kill_9(name: str) -> None:
    pid = procs.read_pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    procs.wait_until(lambda: not procs.is_running(name), 10, f"{name} to die")


def _restart_stack() -> None:
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "ordermesh"), "up"],
        check=True,
        capture_output=True,
        timeout=180,
    )


def _kill_kafka() -> None:
    _kill_9(kafka.NAME)


def _restart_kafka() -> None:
    kafka.start()


def _wait_all_terminal(order_ids: list[str], timeout: float = 240.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT order_id::text, status FROM orders.orders WHERE order_id = ANY(%s::uuid[])",
                (order_ids,),
            ).fetchall()
            statuses = dict(rows)
            if len(statuses) == len(order_ids) and all(s in TERMINAL for s in statuses.values()):
                return statuses
            time.sleep(0.5)
    stuck = Counter(s for s in statuses.values() if s not in TERMINAL)
    raise AssertionError(f"orders not settled after {timeout}s: {dict(stuck)}")


def _check_books(books: Books, statuses: dict[str, str]) -> None:
    order_ids = list(statuses)
    shipped = [o for o, s in statuses.items() if s == "SHIPPED"]
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        terminal_entries: dict[str, int] = dict(
            conn.execute(
                "SELECT order_id::text, count(*) FROM orders.status_history"
                " WHERE order_id = ANY(%s::uuid[]) AND status = ANY(%s) GROUP BY order_id",
                (order_ids, list(TERMINAL)),
            ).fetchall()
        )
        assert all(terminal_entries.get(o) == 1 for o in order_ids), "a terminal state twice"
        gaps = conn.execute(
            "SELECT o.order_id FROM orders.orders o JOIN orders.status_history h USING (order_id)"
            " WHERE o.order_id = ANY(%s::uuid[]) GROUP BY o.order_id, o.version"
            " HAVING count(*) <> o.version OR max(h.version) <> o.version",
            (order_ids,),
        ).fetchall()
        assert not gaps, f"versions and history disagree for {len(gaps)} orders"

        payments = {
            order_id: status
            for order_id, status in conn.execute(
                "SELECT order_id, status FROM payment.payments WHERE order_id = ANY(%s)",
                (order_ids,),
            ).fetchall()
        }
        for order_id, status in statuses.items():
            payment = payments.get(order_id)
            if status == "SHIPPED":
                assert payment == "captured", (order_id, status, payment)
            elif status == "CANCELLED":
                assert payment == "refunded", (order_id, status, payment)
            else:
                assert payment in (None, "declined"), (order_id, status, payment)

        shipments = Counter(
            order_id
            for (order_id,) in conn.execute(
                "SELECT order_id FROM fulfillment.shipments WHERE order_id = ANY(%s)",
                (order_ids,),
            ).fetchall()
        )
        assert set(shipments) == set(shipped) and set(shipments.values()) <= {1}

        stock: dict[str, int] = dict(
            conn.execute(
                "SELECT product_id, stock FROM inventory.products WHERE product_id = ANY(%s)",
                (list(books.products),),
            ).fetchall()
        )
    for product_id, initial in books.products.items():
        sold = sum(books.quantities[o].get(product_id, 0) for o in shipped)
        assert initial - stock[product_id] == sold, (product_id, initial, stock[product_id], sold)


@pytest.mark.parametrize(
    ("what", "kill", "restart"),
    [
        ("worker process", lambda: _kill_9("workers"), _restart_stack),
        ("outbox relay", lambda: _kill_9("relay"), _restart_stack),
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
    statuses = _wait_all_terminal(created)
    outcome = Counter(statuses.values())
    assert outcome["SHIPPED"] > 0 and outcome["FAILED"] > 0, outcome
    _check_books(books, statuses)
