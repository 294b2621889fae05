"""Issue 3's journey through the public port: health, register, login, create and read an
order over REST and gRPC, and its OrderCreated event on Kafka."""

import time
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from devstack import kafka
from services.platform.contexts import PUBLIC_SERVICE_NAMES
from services.platform.messaging import registry
from services.platform.messaging.codec import EventCodec, header_map
from services.platform.paths import SCHEMAS_DIR
from tests.e2e.conftest import STOCKED, STOCKED_PRICE_MINOR, User, order_body

pytestmark = pytest.mark.e2e


def test_health_through_envoy(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200


def test_catalog_is_public(http: httpx.Client) -> None:
    products: dict[str, dict[str, object]] = {}
    for page in range(1, 51):
        response = http.get("/api/v1/products", params={"page": page, "page_size": 100})
        assert response.status_code == 200
        body = response.json()
        products.update({p["product_id"]: p for p in body["products"]})
        if not body["has_next"]:
            break
    assert body["total"] == len(products)
    keyboard = products["kb-mech-01"]
    assert keyboard["unit_price"] == {"currency": "USD", "amount_minor": "8999", "amount": "89.99"}
    assert "webcam-07" not in products, "inactive products are not listed"
    single = http.get("/api/v1/products/kb-mech-01")
    assert single.status_code == 200
    assert single.json()["name"] == keyboard["name"]
    assert http.get("/api/v1/products/no-such-product").status_code == 404


class _OrderTopic:
    """Reads the orders topic from the offsets it had when opened."""

    def __init__(self) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap(),
                "group.id": f"e2e-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(registry.ORDERS, timeout=10)
        partitions = metadata.topics[registry.ORDERS].partitions
        self._start = []
        for partition in partitions:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(registry.ORDERS, partition), timeout=10
            )
            self._start.append(TopicPartition(registry.ORDERS, partition, high))

    def find(self, order_id: str, timeout: float = 30.0) -> tuple[dict[str, str], bytes]:
        self._consumer.assign(self._start)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = self._consumer.poll(0.5)
                if message is None or message.error():
                    continue
                if message.key() == order_id.encode():
                    headers = header_map(message.headers())
                    return headers, message.value() or b""
        finally:
            self._consumer.close()
        raise AssertionError(f"no event for order {order_id} on {registry.ORDERS} in {timeout}s")


async def test_register_login_create_read_over_rest_and_grpc(
    http: httpx.Client, user: User, channel: grpc.aio.Channel
) -> None:
    order_topic = _OrderTopic()
    created = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
    assert created.status_code == 200, created.text
    order = created.json()
    assert order["user_id"] == user.user_id
    assert order["status"] == "ORDER_STATUS_PENDING"
    total_minor = 2 * STOCKED_PRICE_MINOR
    assert order["total_amount"] == {
        "currency": "USD",
        "amount_minor": str(total_minor),
        "amount": f"{total_minor // 100}.{total_minor % 100:02d}",
    }
    assert order["items"][0]["unit_price"]["amount_minor"] == str(STOCKED_PRICE_MINOR)
    assert order["items"][0]["total_price"]["amount_minor"] == str(total_minor)
    assert order["version"] == 1

    fetched = http.get(f"/api/v1/orders/{order['order_id']}", headers=user.headers)
    assert fetched.status_code == 200
    assert fetched.json()["order_id"] == order["order_id"]
    assert fetched.json()["status"].startswith("ORDER_STATUS_")
    assert fetched.json()["status"] not in ("ORDER_STATUS_FAILED", "ORDER_STATUS_CANCELLED")

    stub = order_pb2_grpc.OrderServiceStub(channel)
    reply = await stub.GetOrder(
        order_pb2.GetOrderRequest(order_id=order["order_id"]), metadata=user.grpc_metadata
    )
    assert reply.order.user_id == user.user_id
    assert reply.order.total_amount.amount_minor == total_minor

    headers, payload = order_topic.find(order["order_id"])
    assert headers["ce_type"] == "ordermesh.events.v1.OrderCreated"
    assert headers["ce_source"] == "/ordermesh/order"
    decoded = EventCodec.from_directory(SCHEMAS_DIR).decode(payload)
    assert decoded.record["order_id"] == order["order_id"]
    assert decoded.record["total_minor"] == total_minor


def test_list_is_paginated_and_trailing_slash_works(http: httpx.Client, user: User) -> None:
    created = []
    for method in ("tok_visa", "tok_visa", "tok_chargeDeclined"):
        body = order_body(payment_method=method)
        response = http.post("/api/v1/orders/", json=body, headers=user.headers)
        assert response.status_code == 200, response.text
        created.append(response.json()["order_id"])
    page = http.get("/api/v1/orders/?page=1&page_size=2", headers=user.headers)
    assert page.status_code == 200, page.text
    body = page.json()
    assert (len(body["orders"]), body["total"], body["page"], body["page_size"]) == (2, 3, 1, 2)
    assert body["has_next"] is True
    last = http.get("/api/v1/orders", params={"page": 2, "page_size": 2}, headers=user.headers)
    assert last.json()["has_next"] is False
    assert len(last.json()["orders"]) == 1
    listed = {o["order_id"] for o in body["orders"] + last.json()["orders"]}
    assert listed == set(created)

    def failed() -> list[str]:
        response = http.get(
            "/api/v1/orders",
            params={"status": "failed", "user_id": user.user_id},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        return [o["order_id"] for o in response.json()["orders"]]

    deadline = time.monotonic() + 30
    while failed() != [created[2]] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failed() == [created[2]]


def test_original_clients_prices_and_user_id_are_checked(http: httpx.Client, user: User) -> None:
    price = f"{STOCKED_PRICE_MINOR // 100}.{STOCKED_PRICE_MINOR % 100:02d}"
    agreeing = order_body(
        items=[{"product_id": STOCKED, "quantity": 1, "unit_price": float(price)}],
        total_amount=price,
        user_id=user.user_id,
        metadata={"source": "legacy-client", "gift": True},
    )
    response = http.post("/api/v1/orders", json=agreeing, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"source": "legacy-client", "gift": True}

    cheaper = order_body(items=[{"product_id": STOCKED, "quantity": 1, "unit_price": 1.5}])
    response = http.post("/api/v1/orders", json=cheaper, headers=user.headers)
    assert response.status_code == 400
    assert "does not match the catalog price" in response.json()["message"]

    wrong_total = order_body(total_amount=1)
    response = http.post("/api/v1/orders", json=wrong_total, headers=user.headers)
    assert response.status_code == 400
    assert "total_amount" in response.json()["message"]


def test_idempotency_key_header_returns_the_first_order(http: httpx.Client, user: User) -> None:
    headers = {**user.headers, "Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/api/v1/orders", json=order_body(), headers=headers)
    second = http.post("/api/v1/orders", json=order_body(), headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["order_id"] == second.json()["order_id"]
    changed = http.post(
        "/api/v1/orders", json=order_body(payment_method="tok_other"), headers=headers
    )
    assert changed.status_code == 409
    assert "different request" in changed.json()["message"]


async def test_reflection_through_envoy_lists_every_service(channel: grpc.aio.Channel) -> None:
    """What `grpcurl -plaintext localhost:8000 list` asks."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(ask()):
        names.update(s.name for s in reply.list_services_response.service)
    assert set(PUBLIC_SERVICE_NAMES) | {"grpc.health.v1.Health"} <= names


async def test_grpc_health_through_envoy(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="ordermesh.order.v1.OrderService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
