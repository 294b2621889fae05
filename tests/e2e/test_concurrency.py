"""Races through the public port: concurrent orders for the last units of a product, and
concurrent retries of one idempotent create."""

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from devstack import postgres
from tests.e2e.conftest import User, order_body, register_and_login

pytestmark = pytest.mark.e2e

SETTLED = {"ORDER_STATUS_SHIPPED", "ORDER_STATUS_FAILED", "ORDER_STATUS_CANCELLED"}


@pytest.fixture
def scarce_product() -> Iterator[str]:
    product_id = f"last-five-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency, stock)"
            " VALUES (%s, 'Last five', 1999, 'USD', 5)",
            (product_id,),
        )
    yield product_id
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE inventory.products SET active = false WHERE product_id = %s", (product_id,)
        )


def _settle(http: httpx.Client, user: User, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        order: dict[str, Any] = http.get(f"/api/v1/orders/{order_id}", headers=user.headers).json()
        if order["status"] in SETTLED:
            return order
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} did not settle")


def test_twenty_concurrent_orders_for_five_units_ship_exactly_five(
    http: httpx.Client, scarce_product: str
) -> None:
    buyers = [register_and_login(http) for _ in range(20)]

    def buy(user: User) -> tuple[User, str]:
        body = order_body(items=[{"product_id": scarce_product, "quantity": 1}])
        response = http.post("/api/v1/orders", json=body, headers=user.headers)
        assert response.status_code == 200, response.text
        return user, response.json()["order_id"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        placed = list(pool.map(buy, buyers))
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda placed: _settle(http, *placed), placed))

    statuses = Counter(order["status"] for order in outcomes)
    assert statuses == {"ORDER_STATUS_SHIPPED": 5, "ORDER_STATUS_CANCELLED": 15}, statuses
    cancelled = [o for o in outcomes if o["status"] == "ORDER_STATUS_CANCELLED"]
    assert all("out of stock" in o["status_reason"] for o in cancelled)
    assert http.get(f"/api/v1/products/{scarce_product}").json()["stock"] == 0
    # Each order's payment matches its outcome: a shipped order keeps its capture; a cancelled
    # one is refunded (the refund follows CANCELLED by a moment: wait for it, bounded).
    expected = {
        "ORDER_STATUS_SHIPPED": "PAYMENT_STATUS_CAPTURED",
        "ORDER_STATUS_CANCELLED": "PAYMENT_STATUS_REFUNDED",
    }
    for (user, order_id), order in zip(placed, outcomes, strict=True):
        assert order["order_id"] == order_id
        wanted = expected[order["status"]]
        payment = _wait_payment(http, user, order_id, wanted)
        assert payment["amount"]["amount_minor"] == order["total_amount"]["amount_minor"]


def _wait_payment(http: httpx.Client, user: User, order_id: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        payment: dict[str, Any] = http.get(
            f"/api/v1/orders/{order_id}/payment", headers=user.headers
        ).json()
        if payment["status"] == wanted:
            return payment
        assert payment["status"] == "PAYMENT_STATUS_CAPTURED", (order_id, payment)
        assert time.monotonic() < deadline, f"{order_id}: {payment['status']}, not {wanted}"
        time.sleep(0.1)


def test_racing_retries_with_one_idempotency_key_make_one_order(http: httpx.Client) -> None:
    user = register_and_login(http)
    headers = {**user.headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}

    def create(_: int) -> httpx.Response:
        return http.post("/api/v1/orders", json=order_body(), headers=headers)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(create, range(10)))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert len({r.json()["order_id"] for r in responses}) == 1
    listed = http.get("/api/v1/orders", headers=user.headers).json()
    assert listed["total"] == 1
