"""Shipments against real Postgres: the repository the fulfillment worker will use, the
table's constraints, and FulfillmentService.GetShipment over real gRPC."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from ordermesh.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

from services.auth import bootstrap as auth_bootstrap
from services.auth.create_admin import create_admin
from services.common.errors import InvalidArgument
from services.fulfillment import bootstrap as fulfillment_bootstrap
from services.fulfillment.adapters.repository import ShipmentRepository
from services.fulfillment.domain.model import NewShipment, Shipment
from services.platform.db import Pool
from services.platform.settings import Settings
from tests.integration.grpc_harness import PASSWORD, GrpcStack, grpc_stack, rpc_error, sign_in

pytestmark = pytest.mark.integration

SHIPPED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def new_shipment(user_id: str = "user-1", order_id: str | None = None) -> NewShipment:
    return NewShipment(
        shipment_id=str(uuid.uuid4()),
        order_id=order_id or f"order-{uuid.uuid4()}",
        user_id=user_id,
        carrier="UPS",
        tracking_number=f"1Z{uuid.uuid4().hex[:16].upper()}",
        shipped_at=SHIPPED_AT,
        estimated_delivery=SHIPPED_AT + timedelta(days=3),
    )


async def create_all(pool: Pool, *shipments: NewShipment) -> list[Shipment]:
    async with pool.connection() as conn, conn.transaction():
        return await ShipmentRepository(conn).create_all(shipments)


async def create(pool: Pool, shipment: NewShipment) -> Shipment:
    [stored] = await create_all(pool, shipment)
    return stored


async def test_a_batch_records_new_shipments_in_order_and_keeps_earlier_ones(pool: Pool) -> None:
    earlier = await create(pool, new_shipment())
    first, last = new_shipment(), new_shipment()
    created = await create_all(pool, first, new_shipment(order_id=earlier.order_id), last)
    assert [(s.shipment_id, s.order_id) for s in created] == [
        (first.shipment_id, first.order_id),
        (last.shipment_id, last.order_id),
    ]
    async with pool.connection() as conn:
        assert await ShipmentRepository(conn).by_order(earlier.order_id) == earlier


async def test_an_order_ships_once(pool: Pool) -> None:
    first = new_shipment()
    stored = await create(pool, first)
    assert (stored.shipment_id, stored.carrier, stored.tracking_number) == (
        first.shipment_id,
        "UPS",
        first.tracking_number,
    )
    assert (stored.shipped_at, stored.estimated_delivery) == (
        SHIPPED_AT,
        SHIPPED_AT + timedelta(days=3),
    )
    second = new_shipment(order_id=first.order_id)
    assert await create_all(pool, second) == [], "the order keeps its first shipment"
    async with pool.connection() as conn:
        assert await ShipmentRepository(conn).by_order(first.order_id) == stored
        assert await ShipmentRepository(conn).by_order(f"order-{uuid.uuid4()}") is None


async def test_malformed_shipments_are_refused(pool: Pool) -> None:
    shipment = new_shipment()
    early = NewShipment(
        shipment.shipment_id,
        shipment.order_id,
        shipment.user_id,
        shipment.carrier,
        shipment.tracking_number,
        shipped_at=SHIPPED_AT,
        estimated_delivery=SHIPPED_AT - timedelta(days=1),
    )
    with pytest.raises(InvalidArgument, match="estimated_delivery"):
        await create(pool, early)
    nameless = NewShipment(
        shipment.shipment_id,
        shipment.order_id,
        shipment.user_id,
        "",
        shipment.tracking_number,
        shipment.shipped_at,
        shipment.estimated_delivery,
    )
    with pytest.raises(InvalidArgument, match="carrier"):
        await create(pool, nameless)


async def test_a_tracking_number_belongs_to_one_shipment(pool: Pool) -> None:
    first = await create(pool, new_shipment())
    duplicate = new_shipment()
    reused = NewShipment(
        duplicate.shipment_id,
        duplicate.order_id,
        duplicate.user_id,
        first.carrier,
        first.tracking_number,
        duplicate.shipped_at,
        duplicate.estimated_delivery,
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        await create(pool, reused)


@pytest.fixture(scope="module")
async def stack(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    components = [auth_bootstrap.component, fulfillment_bootstrap.component]
    async with grpc_stack(settings, pool, components) as running:
        yield running


async def test_get_shipment_shows_a_user_only_their_own(stack: GrpcStack, pool: Pool) -> None:
    owner, stranger = await sign_in(stack.channel), await sign_in(stack.channel)
    stored = await create(pool, new_shipment(user_id=owner.user_id))
    shipments = fulfillment_pb2_grpc.FulfillmentServiceStub(stack.channel)
    request = fulfillment_pb2.GetShipmentRequest(order_id=stored.order_id)

    shown = (await shipments.GetShipment(request, metadata=owner.metadata)).shipment
    assert (shown.shipment_id, shown.order_id, shown.user_id) == (
        stored.shipment_id,
        stored.order_id,
        owner.user_id,
    )
    assert (shown.carrier, shown.tracking_number) == ("UPS", stored.tracking_number)
    assert shown.shipped_at.ToDatetime(UTC) == SHIPPED_AT
    assert shown.estimated_delivery.ToDatetime(UTC) == SHIPPED_AT + timedelta(days=3)

    for caller, order_id in ((stranger, stored.order_id), (owner, f"order-{uuid.uuid4()}")):
        missing = fulfillment_pb2.GetShipmentRequest(order_id=order_id)
        error = await rpc_error(shipments.GetShipment(missing, metadata=caller.metadata))
        assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await rpc_error(shipments.GetShipment(request))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_admins_see_every_shipment(stack: GrpcStack, pool: Pool, settings: Settings) -> None:
    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    await create_admin(settings, email=email, password=PASSWORD, full_name="Admin")
    admin = await sign_in(stack.channel, email)
    stored = await create(pool, new_shipment(user_id="someone-else"))
    shipments = fulfillment_pb2_grpc.FulfillmentServiceStub(stack.channel)
    shown = await shipments.GetShipment(
        fulfillment_pb2.GetShipmentRequest(order_id=stored.order_id), metadata=admin.metadata
    )
    assert shown.shipment.tracking_number == stored.tracking_number
