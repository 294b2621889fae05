"""What the fault and outage tests share: products of their own, orders created through the
public port, waiting for outcomes in the system of record, the books, and the processes an
operator stops and starts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import psycopg

from devstack import kafka, postgres, procs
from devstack.paths import REPO_ROOT
from services.platform.messaging.dead_letters import list_dead_letters
from tests.e2e.conftest import User, order_body

TERMINAL = ("SHIPPED", "FAILED", "CANCELLED")
OUTBOX_SCHEMAS = ("orders", "payment", "inventory", "fulfillment")
UNIT_PRICE_MINOR = 1250
ORDERMESH = str(REPO_ROOT / ".venv" / "bin" / "ordermesh")


@dataclass
class Books:
    """Products a test created, their initial stock, and what each order asked for."""

    products: dict[str, int]
    quantities: dict[str, dict[str, int]] = field(default_factory=dict)


@contextmanager
def products(**stock: int) -> Iterator[Books]:
    """Products of this test only (``name=stock``), withdrawn from sale afterwards."""
    suffix = uuid.uuid4().hex[:10]
    created = {f"{name}-{suffix}": units for name, units in stock.items()}
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        for product_id, units in created.items():
            conn.execute(
                "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency,"
                " stock) VALUES (%s, %s, %s, 'USD', %s)",
                (product_id, f"Test {product_id}", UNIT_PRICE_MINOR, units),
            )
    try:
        yield Books(created)
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(
                "UPDATE inventory.products SET active = false WHERE product_id = ANY(%s)",
                (list(created),),
            )


def create_orders(
    http: httpx.Client,
    user: User,
    books: Books,
    lines: Sequence[Mapping[str, int]],
    methods: Sequence[str] | None = None,
) -> list[str]:
    """One order per entry of ``lines`` (product → quantity), created concurrently through
    the public port; returns their ids in the order of ``lines``."""
    methods = methods or ["tok_visa"] * len(lines)

    def create(index: int) -> str:
        items = [{"product_id": p, "quantity": q} for p, q in lines[index].items()]
        response = http.post(
            "/api/v1/orders",
            json=order_body(items=items, payment_method=methods[index]),
            headers={**user.headers, "Idempotency-Key": f"{user.user_id}-{index}"},
        )
        assert response.status_code == 200, response.text
        order_id: str = response.json()["order_id"]
        books.quantities[order_id] = dict(lines[index])
        return order_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(create, range(len(lines))))


def statuses_of(order_ids: Sequence[str]) -> dict[str, str]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT order_id::text, status FROM orders.orders WHERE order_id = ANY(%s::uuid[])",
            (list(order_ids),),
        ).fetchall()
    return dict(rows)


def wait_all_terminal(order_ids: Sequence[str], timeout: float = 240.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = statuses_of(order_ids)
        if len(statuses) == len(order_ids) and all(s in TERMINAL for s in statuses.values()):
            return statuses
        time.sleep(0.5)
    stuck = Counter(s for s in statuses.values() if s not in TERMINAL)
    raise AssertionError(f"orders not settled after {timeout}s: {dict(stuck)}")


def check_reasons(statuses: Mapping[str, str]) -> None:
    """Failed orders failed for their declined card; cancelled ones ran out of stock."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        reasons: dict[str, str] = dict(
            conn.execute(
                "SELECT order_id::text, status_reason FROM orders.orders"
                " WHERE order_id = ANY(%s::uuid[]) AND status IN ('FAILED', 'CANCELLED')",
                (list(statuses),),
            ).fetchall()
        )
    for order_id, status in statuses.items():
        if status == "FAILED":
            assert "declined" in reasons[order_id], (order_id, reasons[order_id])
        elif status == "CANCELLED":
            assert reasons[order_id].startswith("out of stock"), (order_id, reasons[order_id])


def wait_refunds_settled(statuses: Mapping[str, str], timeout: float = 60.0) -> None:
    """CANCELLED is the projector's doing; the refund is the payment processor's and comes
    a moment later: wait until every cancelled order's payment is refunded."""
    cancelled = [o for o, s in statuses.items() if s == "CANCELLED"]
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM payment.payments WHERE order_id = ANY(%s)"
                " AND status <> 'refunded'",
                (cancelled,),
            ).fetchone()
        if pending == (0,):
            return
        assert time.monotonic() < deadline, f"{pending} refunds still owed after {timeout}s"
        time.sleep(0.2)


def wait_outboxes_drained(timeout: float = 30.0) -> None:
    """Every outbox row has been published (nothing left behind, nothing parked)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            left = {
                schema: conn.execute(
                    f"SELECT (SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL)"
                    f" + (SELECT count(*) FROM {schema}.outbox_parked)"
                ).fetchone()
                for schema in OUTBOX_SCHEMAS
            }
        if all(count == (0,) for count in left.values()):
            return
        assert time.monotonic() < deadline, f"outboxes not drained: {left}"
        time.sleep(0.2)


def stock_of(product_id: str) -> int:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT stock FROM inventory.products WHERE product_id = %s", (product_id,)
        ).fetchone()
    assert row is not None, product_id
    return int(row[0])


def check_books(books: Books, statuses: Mapping[str, str]) -> None:
    """No effect lost or doubled: one terminal state each, versions match the history,
    payments match outcomes and amounts, one shipment per shipped order, and the stock taken
    equals what the shipped orders asked for."""
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
            order_id: (status, amount)
            for order_id, status, amount in conn.execute(
                "SELECT order_id, status, amount_minor FROM payment.payments"
                " WHERE order_id = ANY(%s)",
                (order_ids,),
            ).fetchall()
        }
        shipments = Counter(
            order_id
            for (order_id,) in conn.execute(
                "SELECT order_id FROM fulfillment.shipments WHERE order_id = ANY(%s)",
                (order_ids,),
            ).fetchall()
        )
        stock: dict[str, int] = dict(
            conn.execute(
                "SELECT product_id, stock FROM inventory.products WHERE product_id = ANY(%s)",
                (list(books.products),),
            ).fetchall()
        )
    for order_id, status in statuses.items():
        payment, amount = payments.get(order_id, (None, None))
        if status == "SHIPPED":
            assert payment == "captured", (order_id, status, payment)
            assert amount == total_minor(books.quantities[order_id]), (order_id, amount)
        elif status == "CANCELLED":
            assert payment == "refunded", (order_id, status, payment)
            assert amount == total_minor(books.quantities[order_id]), (order_id, amount)
        else:
            assert payment in (None, "declined"), (order_id, status, payment)
    assert set(shipments) == set(shipped) and set(shipments.values()) <= {1}
    for product_id, initial in books.products.items():
        sold = sum(books.quantities[o].get(product_id, 0) for o in shipped)
        assert initial - stock[product_id] == sold, (product_id, initial, stock[product_id], sold)


def total_minor(lines: Mapping[str, int]) -> int:
    return UNIT_PRICE_MINOR * sum(lines.values())


def money_balance(order_ids: Sequence[str]) -> tuple[int, int]:
    """(captured minus refunded, the totals of the shipped orders), in minor units."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        [(net, shipped)] = conn.execute(
            "SELECT"
            " coalesce(sum(p.amount_minor) FILTER (WHERE p.status = 'captured'), 0),"
            " coalesce((SELECT sum(o.total_minor) FROM orders.orders o"
            "   WHERE o.order_id = ANY(%s::uuid[]) AND o.status = 'SHIPPED'), 0)"
            " FROM payment.payments p WHERE p.order_id = ANY(%s)",
            (list(order_ids), list(order_ids)),
        ).fetchall()
    return int(net), int(shipped)


def pending_dead_letters() -> set[str]:
    """Event ids of the dead letters not replayed yet."""
    return {
        letter.event_id or f"offset-{letter.offset}"
        for letter in list_dead_letters(kafka.bootstrap(), 100_000)
    }


def kill_9(name: str) -> None:
    pid = procs.read_pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    procs.wait_until(lambda: not procs.is_running(name), 10, f"{name} to die")


def restart_stack() -> None:
    """``ordermesh up``: starts whatever is not running."""
    subprocess.run([ORDERMESH, "up"], check=True, capture_output=True, timeout=180)


def status_text() -> str:
    return subprocess.run(
        [ORDERMESH, "status"], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def wait_for_status_line(fragment: str, timeout: float = 30.0) -> str:
    """The first ``ordermesh status`` line containing ``fragment``, polled until it shows."""
    deadline = time.monotonic() + timeout
    while True:
        for line in status_text().splitlines():
            if fragment in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"ordermesh status never showed {fragment!r}")
        time.sleep(0.5)
