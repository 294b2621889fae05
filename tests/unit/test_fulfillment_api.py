"""FulfillmentService's servicer through grpc_testing, behind the platform interceptor, over a
fake shipment ledger: the shipment's translation, who may read it, its errors' statuses, the
contract's bounds and tokens."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from ordermesh.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

from services.common.identity import Principal, Role, Tier
from services.fulfillment.api import FulfillmentApi
from services.fulfillment.domain.model import Shipment
from tests.unit.fakes.fulfillment import FakeShipmentLedger
from tests.unit.servicer_harness import BAD_CREDENTIALS, ServicerHarness, TokenMint

DESCRIPTOR = fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("user-admin", "admin@example.com", Role.ADMIN, Tier.ENTERPRISE)
SHIPPED_AT = datetime(2026, 11, 25, 12, 0, 30, 250000, tzinfo=UTC)
ARRIVES = SHIPPED_AT + timedelta(days=3)


def shipment(owner: Principal = ALICE, order_id: str = "order-1") -> Shipment:
    return Shipment(
        shipment_id=f"shipment-of-{order_id}",
        order_id=order_id,
        user_id=owner.user_id,
        carrier="UPS",
        tracking_number="1Z999AA10123456784",
        shipped_at=SHIPPED_AT,
        estimated_delivery=ARRIVES,
        created_at=SHIPPED_AT,
    )


@pytest.fixture
def ledger() -> FakeShipmentLedger:
    return FakeShipmentLedger()


@pytest.fixture
def fulfillment(mint: TokenMint, ledger: FakeShipmentLedger) -> Iterator[ServicerHarness]:
    with ServicerHarness(
        DESCRIPTOR,
        FulfillmentApi(ledger),
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server,
        mint=mint,
    ) as harness:
        yield harness


def test_the_orders_shipment_is_answered_with_its_times(
    fulfillment: ServicerHarness, ledger: FakeShipmentLedger
) -> None:
    ledger.shipments["order-1"] = shipment()
    request = fulfillment_pb2.GetShipmentRequest(order_id="order-1")
    answered = fulfillment.unary("GetShipment", request, caller=ALICE).ok().shipment
    assert (
        answered.shipment_id,
        answered.order_id,
        answered.user_id,
        answered.carrier,
        answered.tracking_number,
    ) == ("shipment-of-order-1", "order-1", ALICE.user_id, "UPS", "1Z999AA10123456784")
    assert answered.shipped_at.ToDatetime(tzinfo=UTC) == SHIPPED_AT
    assert answered.estimated_delivery.ToDatetime(tzinfo=UTC) == ARRIVES


@pytest.mark.parametrize("order_id", ["order-not-shipped", "bobs-order"])
def test_a_shipment_that_is_not_the_callers_is_not_found(
    fulfillment: ServicerHarness, ledger: FakeShipmentLedger, order_id: str
) -> None:
    ledger.shipments["bobs-order"] = shipment(BOB, "bobs-order")
    outcome = fulfillment.unary(
        "GetShipment", fulfillment_pb2.GetShipmentRequest(order_id=order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "shipment not found")


def test_an_admin_reads_anyones_shipment(
    fulfillment: ServicerHarness, ledger: FakeShipmentLedger
) -> None:
    ledger.shipments["bobs-order"] = shipment(BOB, "bobs-order")
    request = fulfillment_pb2.GetShipmentRequest(order_id="bobs-order")
    answered = fulfillment.unary("GetShipment", request, caller=ADMIN).ok()
    assert answered.shipment.user_id == BOB.user_id


@pytest.mark.parametrize(
    ("order_id", "violation"),
    [
        ("", ("order_id", "order_id is required")),
        ("o" * 65, ("order_id", "order_id is 65 characters long; at most 64 are allowed")),
    ],
)
def test_a_bad_order_id_is_invalid(
    fulfillment: ServicerHarness, order_id: str, violation: tuple[str, str]
) -> None:
    outcome = fulfillment.unary(
        "GetShipment", fulfillment_pb2.GetShipmentRequest(order_id=order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_a_shipment_is_read_with_a_valid_access_token_only(
    fulfillment: ServicerHarness, ledger: FakeShipmentLedger, mint: TokenMint, kind: str
) -> None:
    ledger.shipments["order-1"] = shipment()
    outcome = fulfillment.unary(
        "GetShipment",
        fulfillment_pb2.GetShipmentRequest(order_id="order-1"),
        metadata=mint.bad_credentials(kind, ALICE),
    )
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED
    assert BAD_CREDENTIALS[kind] in outcome.details


def test_the_callers_request_id_is_echoed_on_success_and_on_error(
    fulfillment: ServicerHarness, ledger: FakeShipmentLedger
) -> None:
    ledger.shipments["order-1"] = shipment()
    metadata = (("x-request-id", "req-shipment-1"),)
    found = fulfillment.unary(
        "GetShipment",
        fulfillment_pb2.GetShipmentRequest(order_id="order-1"),
        caller=ALICE,
        metadata=metadata,
    )
    missing = fulfillment.unary(
        "GetShipment",
        fulfillment_pb2.GetShipmentRequest(order_id="order-2"),
        caller=ALICE,
        metadata=metadata,
    )
    assert found.request_id == missing.request_id == "req-shipment-1"
