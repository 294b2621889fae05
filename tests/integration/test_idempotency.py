"""Idempotent creation through the real order service (real catalog, real Postgres): keys
are per user, the gRPC `idempotency-key` metadata wins over the request field, and a key
lives ORDERMESH_IDEMPOTENCY_TTL_SECONDS, after which it names a new order."""

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from services.auth import bootstrap as auth_bootstrap
from services.inventory import bootstrap as inventory_bootstrap
from services.order import bootstrap as order_bootstrap
from services.platform.db import Pool
from services.platform.settings import Settings
from tests.integration.grpc_harness import GrpcStack, grpc_stack, rpc_error, sign_in

pytestmark = pytest.mark.integration

TTL_SECONDS = 600


@pytest.fixture(scope="module")
async def stack(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    short_lived = dataclasses.replace(settings, idempotency_ttl_seconds=TTL_SECONDS)
    components = [
        auth_bootstrap.component,
        inventory_bootstrap.component,
        order_bootstrap.component,
    ]
    async with grpc_stack(short_lived, pool, components) as running:
        yield running


@pytest.fixture(scope="module")
async def product(pool: Pool) -> str:
    product_id = f"it-idem-{uuid.uuid4().hex[:10]}"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency,"
            " stock) VALUES (%s, 'Idempotency test', 1500, 'USD', 1000)",
            (product_id,),
        )
    return product_id


def request(product: str, key: str = "") -> order_pb2.CreateOrderRequest:
    created = order_pb2.CreateOrderRequest(payment_method="tok_visa", idempotency_key=key)
    created.items.add(product_id=product, quantity=1)
    created.shipping_address.street = "1 Main St"
    created.shipping_address.city = "Springfield"
    created.shipping_address.zip = "62701"
    created.shipping_address.country = "US"
    return created


async def test_keys_are_per_user(stack: GrpcStack, product: str) -> None:
    orders = order_pb2_grpc.OrderServiceStub(stack.channel)
    ada, bob = await sign_in(stack.channel), await sign_in(stack.channel)
    key = f"shared-{uuid.uuid4()}"
    first = await orders.CreateOrder(request(product, key), metadata=ada.metadata)
    again = await orders.CreateOrder(request(product, key), metadata=ada.metadata)
    other = await orders.CreateOrder(request(product, key), metadata=bob.metadata)
    assert again.order.order_id == first.order.order_id
    assert other.order.order_id != first.order.order_id
    assert (first.order.user_id, other.order.user_id) == (ada.user_id, bob.user_id)


async def test_the_metadata_key_wins_over_the_request_field(stack: GrpcStack, product: str) -> None:
    orders = order_pb2_grpc.OrderServiceStub(stack.channel)
    user = await sign_in(stack.channel)
    header_key = (("idempotency-key", f"meta-{uuid.uuid4()}"),)
    first = await orders.CreateOrder(
        request(product, "field-one"), metadata=user.metadata + header_key
    )
    second = await orders.CreateOrder(
        request(product, "field-two"), metadata=user.metadata + header_key
    )
    assert second.order.order_id == first.order.order_id
    by_field = await orders.CreateOrder(request(product, "field-one"), metadata=user.metadata)
    assert by_field.order.order_id != first.order.order_id, "field-one was never used as a key"


async def test_a_key_lives_its_ttl_then_names_a_new_order(
    stack: GrpcStack, product: str, pool: Pool
) -> None:
    orders = order_pb2_grpc.OrderServiceStub(stack.channel)
    user = await sign_in(stack.channel)
    key = f"ttl-{uuid.uuid4()}"
    first = await orders.CreateOrder(request(product, key), metadata=user.metadata)
    changed = request(product, key)
    changed.items[0].quantity = 2
    conflict = await rpc_error(orders.CreateOrder(changed, metadata=user.metadata))
    assert "already used with a different request" in (conflict.details() or "")

    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders.idempotency_keys SET created_at = now() - make_interval(secs => %s)"
            " WHERE user_id = %s AND key = %s",
            (TTL_SECONDS + 1, user.user_id, key),
        )
    renewed = await orders.CreateOrder(changed, metadata=user.metadata)
    assert renewed.order.order_id != first.order.order_id
    assert renewed.order.items[0].quantity == 2
    again = await orders.CreateOrder(changed, metadata=user.metadata)
    assert again.order.order_id == renewed.order.order_id
