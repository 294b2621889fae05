"""Issue 4's journeys through the public port: an order flows through the whole event
chain (validation, payment, stock, shipping) and the compensations add up."""

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc

from devstack import procs
from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from devstack.stack import app_env
from services.platform.messaging.registry import CONSUMER_GROUPS
from tests.e2e.conftest import SCARCE, STOCKED, User, order_body, wait_for_order

pytestmark = pytest.mark.e2e

PARTIAL = "e2e-workers-without-projector"
TERMINAL = {
    "ORDER_STATUS_SHIPPED",
    "ORDER_STATUS_DELIVERED",
    "ORDER_STATUS_FAILED",
    "ORDER_STATUS_CANCELLED",
}


def settled(order: dict[str, Any]) -> bool:
    return order["status"] in TERMINAL


def stock_of(http: httpx.Client, product_id: str) -> int:
    response = http.get(f"/api/v1/products/{product_id}")
    assert response.status_code == 200
    return int(response.json()["stock"])


def create(http: httpx.Client, user: User, **overrides: object) -> dict[str, Any]:
    response = http.post("/api/v1/orders", json=order_body(**overrides), headers=user.headers)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_paid_order_ships_with_tracking_number(
    http: httpx.Client, user: User, channel: grpc.aio.Channel
) -> None:
    order = create(http, user, payment_method="tok_visa")
    shipped = wait_for_order(http, user, order["order_id"], settled)
    assert shipped["status"] == "ORDER_STATUS_SHIPPED", shipped
    assert shipped["tracking_number"] and shipped["carrier"]
    assert shipped["version"] == 5  # PENDING, VALIDATED, PAID, FULFILLED, SHIPPED

    shipment = http.get(f"/api/v1/orders/{order['order_id']}/shipment", headers=user.headers)
    assert shipment.status_code == 200, shipment.text
    assert shipment.json()["tracking_number"] == shipped["tracking_number"]
    payment = http.get(f"/api/v1/orders/{order['order_id']}/payment", headers=user.headers)
    assert payment.json()["status"] == "PAYMENT_STATUS_CAPTURED"
    assert payment.json()["amount"]["amount_minor"] == order["total_amount"]["amount_minor"]

    reply = await order_pb2_grpc.OrderServiceStub(channel).GetOrder(
        order_pb2.GetOrderRequest(order_id=order["order_id"]), metadata=user.grpc_metadata
    )
    assert reply.order.status == order_pb2.ORDER_STATUS_SHIPPED
    assert reply.order.tracking_number == shipped["tracking_number"]


def test_declined_card_fails_the_order(http: httpx.Client, user: User) -> None:
    order = create(http, user, payment_method="tok_chargeDeclined")
    failed = wait_for_order(http, user, order["order_id"], settled)
    assert failed["status"] == "ORDER_STATUS_FAILED"
    assert "declined" in failed["status_reason"]
    payment = http.get(f"/api/v1/orders/{order['order_id']}/payment", headers=user.headers)
    assert payment.json()["status"] == "PAYMENT_STATUS_DECLINED"


def test_unknown_payment_method_fails_the_order(http: httpx.Client, user: User) -> None:
    order = create(http, user, payment_method="tok_unheard_of")
    failed = wait_for_order(http, user, order["order_id"], settled)
    assert failed["status"] == "ORDER_STATUS_FAILED"
    assert "payment method" in failed["status_reason"]


async def test_more_than_the_stock_is_cancelled_and_refunded(
    http: httpx.Client, user: User, channel: grpc.aio.Channel
) -> None:
    stock_before = stock_of(http, SCARCE)
    assert stock_before < 100
    order = create(http, user, items=[{"product_id": SCARCE, "quantity": 100}])
    cancelled = wait_for_order(http, user, order["order_id"], settled)
    assert cancelled["status"] == "ORDER_STATUS_CANCELLED"
    assert "out of stock" in cancelled["status_reason"]
    # CANCELLED is the projector's; the refund is the payment processor's, a moment later.
    payments = payment_pb2_grpc.PaymentServiceStub(channel)
    request = payment_pb2.GetPaymentRequest(order_id=order["order_id"])
    deadline = time.monotonic() + 30
    while True:
        reply = await payments.GetPayment(request, metadata=user.grpc_metadata)
        if reply.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED:
            break
        assert reply.payment.status == payment_pb2.PAYMENT_STATUS_CAPTURED, reply.payment
        assert time.monotonic() < deadline, "the refund did not come"
        await asyncio.sleep(0.05)
    assert str(reply.payment.amount.amount_minor) == cancelled["total_amount"]["amount_minor"]
    assert stock_of(http, SCARCE) == stock_before


@pytest.fixture
def projector_paused() -> Iterator[None]:
    """Runs every consumer except the order status projector, so the order service keeps
    seeing PENDING while payment and stock move on: a cancellation then lands after the
    payment and the reservation, deterministically. The normal workers come back after."""
    procs.stop("workers")
    others = [g.worker for g in CONSUMER_GROUPS if g.worker != "order_status_projector"]
    procs.start_daemon(
        PARTIAL,
        [sys.executable, "-m", "workers", "--components", ",".join(others)],
        env=app_env(Ports.from_env()),
        cwd=REPO_ROOT,
    )
    try:
        yield
    finally:
        procs.stop(PARTIAL)
        subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "ordermesh"), "up"],
            check=True,
            capture_output=True,
            timeout=180,
        )


def poll(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cancelling_a_paid_order_refunds_it_and_restores_stock(
    http: httpx.Client, user: User, projector_paused: None
) -> None:
    product = STOCKED
    stock_before = stock_of(http, product)
    order = create(http, user, items=[{"product_id": product, "quantity": 3}])
    payment_url = f"/api/v1/orders/{order['order_id']}/payment"

    def payment_status() -> str | None:
        response = http.get(payment_url, headers=user.headers)
        return str(response.json()["status"]) if response.status_code == 200 else None

    poll(lambda: payment_status() == "PAYMENT_STATUS_CAPTURED", "the payment")
    poll(lambda: stock_of(http, product) == stock_before - 3, "the stock reservation")

    cancel = http.delete(f"/api/v1/orders/{order['order_id']}", headers=user.headers)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "ORDER_STATUS_CANCELLED"

    poll(lambda: payment_status() == "PAYMENT_STATUS_REFUNDED", "the refund")
    poll(lambda: stock_of(http, product) == stock_before, "the stock release")
    shipment = http.get(f"/api/v1/orders/{order['order_id']}/shipment", headers=user.headers)
    assert shipment.status_code == 404


def test_cancelling_a_shipped_order_is_refused(http: httpx.Client, user: User) -> None:
    order = create(http, user)
    wait_for_order(http, user, order["order_id"], settled)
    response = http.delete(f"/api/v1/orders/{order['order_id']}", headers=user.headers)
    assert response.status_code == 400
    assert "can no longer be cancelled" in response.json()["message"]
    still = http.get(f"/api/v1/orders/{order['order_id']}", headers=user.headers).json()
    assert still["status"] == "ORDER_STATUS_SHIPPED"


def test_only_admins_mark_a_shipped_order_delivered(
    http: httpx.Client, user: User, admin: User
) -> None:
    failed = create(http, user, payment_method="tok_chargeDeclined")
    wait_for_order(http, user, failed["order_id"], settled)
    illegal = http.patch(
        f"/api/v1/orders/{failed['order_id']}", json={"status": "delivered"}, headers=admin.headers
    )
    assert illegal.status_code == 400
    assert "cannot become DELIVERED" in illegal.json()["message"]

    order = create(http, user)
    url = f"/api/v1/orders/{order['order_id']}"
    shipped = wait_for_order(http, user, order["order_id"], settled)
    assert shipped["status"] == "ORDER_STATUS_SHIPPED"
    by_owner = http.patch(url, json={"status": "delivered"}, headers=user.headers)
    assert by_owner.status_code == 403
    delivered = http.patch(
        url,
        json={"status": "DELIVERED", "metadata": {"signed_by": "front desk"}},
        headers=admin.headers,
    )
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["status"] == "ORDER_STATUS_DELIVERED"
    assert delivered.json()["metadata"]["signed_by"] == "front desk"
    assert delivered.json()["version"] == shipped["version"] + 1
    again = http.patch(url, json={"status": "shipped"}, headers=admin.headers)
    assert again.status_code == 400
