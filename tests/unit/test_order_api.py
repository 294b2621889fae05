"""OrderService's servicer through grpc_testing, behind the platform interceptor, over a fake
store and catalog: every RPC's translation (money, statuses, timestamps, metadata), its
errors' statuses and details, idempotency keys, outages, the contract's bounds and tokens."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import grpc
import psycopg
import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.message_factory import GetMessageClass
from ordermesh.common.v1 import common_pb2
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from services.common.errors import Conflict, DependencyUnavailable
from services.common.identity import Principal, Role, Tier
from services.common.money import Money
from services.order.api import OrderApi
from services.order.domain.events import OrderCancelled, OrderCreated, OrderStatusChanged
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.order.domain.pricing import CatalogEntry
from tests.unit.fakes.order import FakeCatalog, FakeLiveFeed, FakeOrderStore
from tests.unit.servicer_harness import BAD_CREDENTIALS, ServicerHarness, TokenMint

DESCRIPTOR = order_pb2.DESCRIPTOR.services_by_name["OrderService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("user-admin", "admin@example.com", Role.ADMIN, Tier.ENTERPRISE)
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

ADDRESS = Address("1 Main St", "Springfield", "IL", "62701", "US")
ADDRESS_PB = common_pb2.Address(
    street="1 Main St", city="Springfield", state="IL", zip="62701", country="US"
)
KEYBOARD = CatalogEntry("kb", "Keyboard", Money(8999, "USD"), True)
MOUSE = CatalogEntry("mouse", "Mouse", Money(2999, "USD"), True)
RETIRED = CatalogEntry("old", "Ball mouse", Money(100, "USD"), False)


def usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency="USD", amount_minor=minor, amount=f"{minor / 100:.2f}")


def priced_line(entry: CatalogEntry, quantity: int) -> order_pb2.OrderItem:
    price = entry.unit_price.amount_minor
    return order_pb2.OrderItem(
        product_id=entry.product_id,
        name=entry.name,
        quantity=quantity,
        unit_price=usd(price),
        total_price=usd(price * quantity),
    )


def struct(content: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(content)
    return message


def value(content: Any) -> struct_pb2.Value:
    return json_format.ParseDict(content, struct_pb2.Value())


def item(
    product_id: str = "kb", quantity: int = 1, unit_price: Any = None
) -> order_pb2.CreateOrderItem:
    line = order_pb2.CreateOrderItem(product_id=product_id, quantity=quantity)
    if unit_price is not None:
        line.unit_price.CopyFrom(value(unit_price))
    return line


def create_request(**fields: Any) -> order_pb2.CreateOrderRequest:
    request = order_pb2.CreateOrderRequest(
        items=[item("kb", 2)],
        shipping_address=ADDRESS_PB,
        payment_method="tok_visa",
    )
    for name, content in fields.items():
        field = getattr(request, name)
        if name == "items":
            del field[:]
            field.extend(content)
        elif isinstance(content, str):
            setattr(request, name, content)
        else:
            field.CopyFrom(content)
    return request


def seed(
    store: FakeOrderStore,
    owner: Principal = ALICE,
    status: OrderStatus = OrderStatus.PENDING,
    *,
    created_at: datetime = T0,
    **fields: Any,
) -> Order:
    order = Order(
        order_id=str(uuid.uuid4()),
        user_id=owner.user_id,
        status=status,
        lines=(OrderLine("kb", "Keyboard", 2, Money(8999, "USD")),),
        shipping_address=ADDRESS,
        payment_method="tok_visa",
        created_at=created_at,
        updated_at=created_at + timedelta(minutes=5),
        **fields,
    )
    store.orders[order.order_id] = order
    return order


@pytest.fixture
def store() -> FakeOrderStore:
    return FakeOrderStore()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog({e.product_id: e for e in (KEYBOARD, MOUSE, RETIRED)})


@pytest.fixture
def feed() -> FakeLiveFeed:
    return FakeLiveFeed()


@pytest.fixture
def orders(
    mint: TokenMint, store: FakeOrderStore, catalog: FakeCatalog, feed: FakeLiveFeed
) -> Iterator[ServicerHarness]:
    with ServicerHarness(
        DESCRIPTOR,
        OrderApi(store, catalog, feed, heartbeat_seconds=0.2),
        order_pb2_grpc.add_OrderServiceServicer_to_server,
        mint=mint,
    ) as harness:
        yield harness


# CreateOrder


def test_an_order_is_priced_from_the_catalog_and_answered_in_full(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    request = create_request(
        items=[item("kb", 2, unit_price=89.99), item("mouse", 1, unit_price="29.99")],
        total_amount=value("209.97"),
        user_id=ALICE.user_id,
        metadata=struct({"gift": True, "note": "ring twice", "tags": ["fragile"]}),
    )
    before = datetime.now(UTC)
    order = orders.unary("CreateOrder", request, caller=ALICE).ok().order
    after = datetime.now(UTC)

    assert order == order_pb2.Order(
        order_id=order.order_id,
        user_id=ALICE.user_id,
        status=order_pb2.ORDER_STATUS_PENDING,
        items=[
            priced_line(KEYBOARD, 2),
            priced_line(MOUSE, 1),
        ],
        total_amount=usd(20997),
        shipping_address=ADDRESS_PB,
        payment_method="tok_visa",
        version=1,
        created_at=order.created_at,
        updated_at=order.created_at,
        metadata=struct({"gift": True, "note": "ring twice", "tags": ["fragile"]}),
    )
    assert before <= order.created_at.ToDatetime(tzinfo=UTC) <= after
    kept = store.orders[order.order_id]
    assert kept.metadata == {"gift": True, "note": "ring twice", "tags": ["fragile"]}
    assert kept.shipping_address == ADDRESS
    assert store.published == [OrderCreated(kept)]


def test_the_idempotency_key_metadata_takes_precedence_over_the_field(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    key = (("idempotency-key", "key-from-metadata"),)
    first = orders.unary(
        "CreateOrder", create_request(idempotency_key="key-in-body"), caller=ALICE, metadata=key
    )
    retry = orders.unary(
        "CreateOrder",
        create_request(idempotency_key="another-body-key"),
        caller=ALICE,
        metadata=key,
    )
    assert first.ok().order.order_id == retry.ok().order.order_id
    assert set(store.keys) == {(ALICE.user_id, "key-from-metadata")}
    assert len(store.orders) == 1


def test_without_metadata_the_idempotency_key_field_is_used(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    request = create_request(idempotency_key="key-in-body")
    first = orders.unary("CreateOrder", request, caller=ALICE).ok()
    assert orders.unary("CreateOrder", request, caller=ALICE).ok() == first
    assert set(store.keys) == {(ALICE.user_id, "key-in-body")}


def test_a_key_reused_for_another_order_is_aborted(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    key = (("idempotency-key", "key-1"),)
    orders.unary("CreateOrder", create_request(), caller=ALICE, metadata=key).ok()
    other = create_request(items=[item("kb", 3)])
    outcome = orders.unary("CreateOrder", other, caller=ALICE, metadata=key)
    assert outcome.code is grpc.StatusCode.ABORTED
    assert outcome.details.startswith("this idempotency key was already used")
    assert len(store.orders) == 1


@pytest.mark.parametrize(
    ("request_", "field", "details"),
    [
        (
            create_request(items=[item("nope")]),
            "items[0].product_id",
            "items[0]: unknown product 'nope'",
        ),
        (
            create_request(items=[item("old")]),
            "items[0].product_id",
            "items[0]: product 'old' is no longer sold",
        ),
        (
            create_request(items=[item("kb", 0)]),
            "items[0].quantity",
            "items[0].quantity must be between 1 and 100, got 0",
        ),
        (
            create_request(items=[item("kb", unit_price=79)]),
            "items[0].unit_price",
            "items[0].unit_price 79.0 does not match the catalog price of 'kb', 89.99 USD;"
            " refresh the catalog and try again",
        ),
        (
            create_request(items=[item("kb", unit_price=True)]),
            "items[0].unit_price",
            "items[0].unit_price must be a number or a decimal string",
        ),
        (
            create_request(total_amount=value("12,00")),
            "total_amount",
            "total_amount must be a decimal number, got '12,00'",
        ),
        (
            create_request(total_amount=value(1)),
            "total_amount",
            "total_amount 1.0 does not match the order total, 179.98 USD;"
            " refresh the catalog and try again",
        ),
        (create_request(items=[]), "items", "an order needs at least one item"),
        (create_request(payment_method=" "), "payment_method", "payment_method is required"),
        (
            create_request(shipping_address=common_pb2.Address(city="Springfield")),
            "shipping_address.street",
            "shipping_address.street is required",
        ),
        (
            create_request(idempotency_key="key\twith a tab"),
            "idempotency_key",
            "idempotency key must be 1..200 printable characters",
        ),
    ],
)
def test_a_bad_order_is_invalid_naming_the_field(
    orders: ServicerHarness,
    store: FakeOrderStore,
    request_: order_pb2.CreateOrderRequest,
    field: str,
    details: str,
) -> None:
    outcome = orders.unary("CreateOrder", request_, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, details)
    assert outcome.field_violations() == [(field, details)]
    assert store.orders == {}


def test_an_order_for_someone_else_is_denied(orders: ServicerHarness) -> None:
    outcome = orders.unary("CreateOrder", create_request(user_id=BOB.user_id), caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "user_id must be the caller's own id",
    )
    assert outcome.status().details == []


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (
            create_request(items=[item("kb")] * 51),
            ("items", "items has 51 items; at most 50 are allowed"),
        ),
        (
            create_request(
                metadata=struct({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}})
            ),
            ("metadata", "metadata nests 9 levels deep; at most 8 are allowed"),
        ),
        (
            create_request(metadata=struct({"note": "n" * 4090})),
            ("metadata", "metadata is 4101 bytes as JSON; at most 4096 are allowed"),
        ),
        (
            create_request(items=[item("kb", unit_price="1" * 40)]),
            (
                "items[0].unit_price",
                "items[0].unit_price is 42 bytes as JSON; at most 32 are allowed",
            ),
        ),
        (
            create_request(idempotency_key="k" * 201),
            ("idempotency_key", "idempotency_key is 201 characters long; at most 200 are allowed"),
        ),
        (
            create_request(shipping_address=common_pb2.Address(street="1 Main St", zip="9" * 21)),
            (
                "shipping_address.zip",
                "shipping_address.zip is 21 characters long; at most 20 are allowed",
            ),
        ),
    ],
)
def test_an_order_beyond_the_contract_never_reaches_the_handlers(
    orders: ServicerHarness,
    catalog: FakeCatalog,
    request_: order_pb2.CreateOrderRequest,
    violation: tuple[str, str],
) -> None:
    outcome = orders.unary("CreateOrder", request_, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]
    assert catalog.calls == 0


def test_the_catalog_being_away_is_unavailable(
    orders: ServicerHarness, catalog: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(product_ids: object) -> NoReturn:
        raise DependencyUnavailable("catalog unavailable: UNAVAILABLE", dependency="inventory")

    monkeypatch.setattr(catalog, "entries", away)
    outcome = orders.unary("CreateOrder", create_request(), caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.UNAVAILABLE,
        "catalog unavailable: UNAVAILABLE",
    )
    assert outcome.retry_after is None


def test_the_database_being_away_is_unavailable_naming_the_request(
    orders: ServicerHarness, store: FakeOrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*args: object) -> NoReturn:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(store, "add", away)
    outcome = orders.unary(
        "CreateOrder", create_request(), caller=ALICE, metadata=(("x-request-id", "req-db"),)
    )
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.UNAVAILABLE,
        "the database is unavailable right now; retry later (request id req-db)",
    )
    assert outcome.request_id == "req-db"


def test_an_unexpected_failure_is_internal_naming_only_the_request(
    orders: ServicerHarness, store: FakeOrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> NoReturn:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(store, "add", broken)
    outcome = orders.unary("CreateOrder", create_request(), caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {outcome.request_id})",
    )


# GetOrder


def test_an_order_is_read_back_with_its_status_shipment_and_metadata(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(
        store,
        status=OrderStatus.SHIPPED,
        status_reason="handed to the carrier",
        carrier="UPS",
        tracking_number="1Z999",
        metadata={"gift": True},
        version=5,
    )
    response = orders.unary(
        "GetOrder", order_pb2.GetOrderRequest(order_id=order.order_id), caller=ALICE
    ).ok()
    expected = order_pb2.Order(
        order_id=order.order_id,
        user_id=ALICE.user_id,
        status=order_pb2.ORDER_STATUS_SHIPPED,
        status_reason="handed to the carrier",
        items=[priced_line(KEYBOARD, 2)],
        total_amount=usd(17998),
        shipping_address=ADDRESS_PB,
        payment_method="tok_visa",
        version=5,
        carrier="UPS",
        tracking_number="1Z999",
        metadata=struct({"gift": True}),
    )
    expected.created_at.FromDatetime(T0)
    expected.updated_at.FromDatetime(T0 + timedelta(minutes=5))
    assert response.order == expected


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_status_has_its_proto_name(
    orders: ServicerHarness, store: FakeOrderStore, status: OrderStatus
) -> None:
    order = seed(store, status=status)
    response = orders.unary(
        "GetOrder", order_pb2.GetOrderRequest(order_id=order.order_id), caller=ALICE
    ).ok()
    assert order_pb2.OrderStatus.Name(response.order.status) == f"ORDER_STATUS_{status.value}"


@pytest.mark.parametrize("order_id", ["not-a-uuid", str(uuid.uuid4()), "bobs"])
def test_an_order_that_is_not_the_callers_is_not_found(
    orders: ServicerHarness, store: FakeOrderStore, order_id: str
) -> None:
    if order_id == "bobs":
        order_id = seed(store, owner=BOB).order_id
    outcome = orders.unary("GetOrder", order_pb2.GetOrderRequest(order_id=order_id), caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "order not found")


def test_an_admin_reads_anyones_order(orders: ServicerHarness, store: FakeOrderStore) -> None:
    order = seed(store, owner=BOB)
    request = order_pb2.GetOrderRequest(order_id=order.order_id)
    assert orders.unary("GetOrder", request, caller=ADMIN).ok().order.user_id == BOB.user_id


def test_an_order_id_is_required(orders: ServicerHarness) -> None:
    outcome = orders.unary("GetOrder", order_pb2.GetOrderRequest(), caller=ALICE)
    assert outcome.field_violations() == [("order_id", "order_id is required")]


# ListOrders


def test_the_callers_orders_are_listed_newest_first_by_page(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    mine = [seed(store, created_at=T0 + timedelta(hours=hour)) for hour in range(3)]
    seed(store, owner=BOB)
    first = orders.unary("ListOrders", order_pb2.ListOrdersRequest(page_size=2), caller=ALICE).ok()
    second = orders.unary(
        "ListOrders", order_pb2.ListOrdersRequest(page=2, page_size=2), caller=ALICE
    ).ok()
    assert [o.order_id for o in first.orders] == [mine[2].order_id, mine[1].order_id]
    assert (first.total, first.page, first.page_size, first.has_next) == (3, 1, 2, True)
    assert [o.order_id for o in second.orders] == [mine[0].order_id]
    assert (second.total, second.page, second.page_size, second.has_next) == (3, 2, 2, False)


def test_the_default_page_is_the_first_twenty(orders: ServicerHarness) -> None:
    response = orders.unary("ListOrders", order_pb2.ListOrdersRequest(), caller=ALICE).ok()
    assert (response.page, response.page_size, response.total) == (1, 20, 0)


@pytest.mark.parametrize("status", ["shipped", "SHIPPED", "ORDER_STATUS_SHIPPED"])
def test_orders_are_filtered_by_status_in_any_spelling(
    orders: ServicerHarness, store: FakeOrderStore, status: str
) -> None:
    shipped = seed(store, status=OrderStatus.SHIPPED)
    seed(store, status=OrderStatus.PAID)
    response = orders.unary(
        "ListOrders", order_pb2.ListOrdersRequest(status=status), caller=ALICE
    ).ok()
    assert [o.order_id for o in response.orders] == [shipped.order_id]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (order_pb2.ListOrdersRequest(status="lost"), "status"),
        (order_pb2.ListOrdersRequest(page_size=101), "page_size"),
        (order_pb2.ListOrdersRequest(page=-1), "page"),
    ],
)
def test_a_bad_listing_is_invalid_naming_the_field(
    orders: ServicerHarness, request_: order_pb2.ListOrdersRequest, field: str
) -> None:
    outcome = orders.unary("ListOrders", request_, caller=ALICE)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in outcome.field_violations()] == [field]


def test_only_admins_list_other_users_orders(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    bobs = seed(store, owner=BOB)
    seed(store, owner=ALICE)
    request = order_pb2.ListOrdersRequest(user_id=BOB.user_id)
    denied = orders.unary("ListOrders", request, caller=ALICE)
    assert (denied.code, denied.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "only admins may list other users' orders",
    )
    listed = orders.unary("ListOrders", request, caller=ADMIN).ok()
    assert [o.order_id for o in listed.orders] == [bobs.order_id]
    everyone = orders.unary("ListOrders", order_pb2.ListOrdersRequest(), caller=ADMIN).ok()
    assert everyone.total == 2


# UpdateOrderStatus


def test_an_admin_marks_a_shipped_order_delivered(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, status=OrderStatus.SHIPPED, version=4)
    request = order_pb2.UpdateOrderStatusRequest(
        order_id=order.order_id, status="delivered", reason="left at the door"
    )
    before = datetime.now(UTC)
    updated = orders.unary("UpdateOrderStatus", request, caller=ADMIN).ok().order
    assert updated.status == order_pb2.ORDER_STATUS_DELIVERED
    assert (updated.status_reason, updated.version) == ("left at the door", 5)
    assert updated.updated_at.ToDatetime(tzinfo=UTC) >= before
    [event] = store.published
    assert isinstance(event, OrderStatusChanged)
    assert (event.previous_status, event.reason) == (OrderStatus.SHIPPED, "left at the door")


def test_the_owner_merges_metadata_into_the_order(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, metadata={"gift": True})
    request = order_pb2.UpdateOrderStatusRequest(
        order_id=order.order_id, metadata=struct({"note": "leave at the door"})
    )
    updated = orders.unary("UpdateOrderStatus", request, caller=ALICE).ok().order
    assert json_format.MessageToDict(updated.metadata) == {
        "gift": True,
        "note": "leave at the door",
    }
    assert updated.version == 2
    assert store.orders[order.order_id].metadata == {"gift": True, "note": "leave at the door"}


def test_only_admins_change_a_status(orders: ServicerHarness, store: FakeOrderStore) -> None:
    order = seed(store, status=OrderStatus.SHIPPED)
    request = order_pb2.UpdateOrderStatusRequest(order_id=order.order_id, status="delivered")
    outcome = orders.unary("UpdateOrderStatus", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "only admins may change an order's status",
    )
    assert store.orders[order.order_id] == order


@pytest.mark.parametrize(
    ("status", "details"),
    [
        ("cancelled", "use CancelOrder (DELETE) to cancel an order"),
        (
            "paid",
            "only the carrier step SHIPPED → DELIVERED is set by hand; the other steps follow"
            " the order's events",
        ),
        (
            "lost",
            "unknown status 'lost'; expected one of pending, validated, paid, fulfilled,"
            " shipped, delivered, failed, cancelled",
        ),
    ],
)
def test_a_status_not_set_by_hand_is_invalid(
    orders: ServicerHarness, store: FakeOrderStore, status: str, details: str
) -> None:
    order = seed(store, status=OrderStatus.SHIPPED)
    request = order_pb2.UpdateOrderStatusRequest(order_id=order.order_id, status=status)
    outcome = orders.unary("UpdateOrderStatus", request, caller=ADMIN)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, details)
    assert outcome.field_violations() == [("status", details)]
    assert store.orders[order.order_id] == order


def test_an_illegal_transition_is_a_failed_precondition(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, status=OrderStatus.PENDING)
    request = order_pb2.UpdateOrderStatusRequest(order_id=order.order_id, status="delivered")
    outcome = orders.unary("UpdateOrderStatus", request, caller=ADMIN)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"order {order.order_id} is PENDING; it cannot become DELIVERED",
    )


def test_metadata_that_would_outgrow_its_bound_when_merged_is_invalid(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, metadata={"old": "o" * 3000})
    request = order_pb2.UpdateOrderStatusRequest(
        order_id=order.order_id, metadata=struct({"new": "n" * 3000})
    )
    outcome = orders.unary("UpdateOrderStatus", request, caller=ALICE)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = outcome.field_violations()
    assert field == "metadata" and description.endswith("at most 4096 are allowed")


def test_a_change_that_keeps_losing_races_is_aborted(
    orders: ServicerHarness, store: FakeOrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_changed(*args: object) -> NoReturn:
        raise Conflict("order changed concurrently; retry")

    order = seed(store)
    monkeypatch.setattr(store, "update", always_changed)
    request = order_pb2.UpdateOrderStatusRequest(
        order_id=order.order_id, metadata=struct({"note": "x"})
    )
    outcome = orders.unary("UpdateOrderStatus", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.ABORTED,
        "order changed concurrently; retry",
    )


def test_a_reason_beyond_its_bound_is_invalid(orders: ServicerHarness) -> None:
    request = order_pb2.UpdateOrderStatusRequest(order_id=str(uuid.uuid4()), reason="r" * 501)
    outcome = orders.unary("UpdateOrderStatus", request, caller=ADMIN)
    assert outcome.field_violations() == [
        ("reason", "reason is 501 characters long; at most 500 are allowed")
    ]


# CancelOrder


@pytest.mark.parametrize(
    ("reason", "recorded"),
    [("changed my mind", "changed my mind"), ("", "cancelled by the customer")],
)
def test_a_pending_order_is_cancelled_at_once(
    orders: ServicerHarness, store: FakeOrderStore, reason: str, recorded: str
) -> None:
    order = seed(store)
    request = order_pb2.CancelOrderRequest(order_id=order.order_id, reason=reason)
    cancelled = orders.unary("CancelOrder", request, caller=ALICE).ok().order
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert (cancelled.status_reason, cancelled.version) == (recorded, 2)
    [event] = store.published
    assert isinstance(event, OrderCancelled) and event.reason == recorded


def test_an_order_handed_to_the_warehouse_cannot_be_cancelled(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, status=OrderStatus.FULFILLED)
    outcome = orders.unary(
        "CancelOrder", order_pb2.CancelOrderRequest(order_id=order.order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"order {order.order_id} is FULFILLED and can no longer be cancelled:"
        " it has been handed to the warehouse",
    )


def test_someone_elses_order_cannot_be_cancelled(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, owner=BOB)
    outcome = orders.unary(
        "CancelOrder", order_pb2.CancelOrderRequest(order_id=order.order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "order not found")
    assert store.orders[order.order_id].status is OrderStatus.PENDING


# WatchOrders


def test_watching_another_users_order_is_not_found(
    orders: ServicerHarness, store: FakeOrderStore
) -> None:
    order = seed(store, BOB)
    outcome = orders.unary_stream(
        "WatchOrders",
        order_pb2.WatchOrdersRequest(order_id=order.order_id),
        caller=ALICE,
        metadata=(("x-request-id", "req-watch"),),
    )
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.NOT_FOUND,
        f"order {order.order_id} not found",
    )
    assert outcome.responses == ()
    assert outcome.request_id == "req-watch"


def test_watching_another_users_orders_needs_an_admin(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream(
        "WatchOrders", order_pb2.WatchOrdersRequest(user_id=BOB.user_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "only admins may watch other users' orders",
    )


def test_a_cursor_this_service_never_handed_out_is_invalid(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream(
        "WatchOrders", order_pb2.WatchOrdersRequest(cursor="c-1"), caller=ALICE
    )
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.details.startswith("cursor is not one this service handed out")


def test_watching_needs_a_token(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream("WatchOrders", order_pb2.WatchOrdersRequest())
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED


def test_a_watch_cursor_beyond_its_bound_is_invalid(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream(
        "WatchOrders", order_pb2.WatchOrdersRequest(cursor="c" * 129), caller=ALICE
    )
    assert outcome.field_violations() == [
        ("cursor", "cursor is 129 characters long; at most 128 are allowed")
    ]


# Every method needs a valid access token


@pytest.fixture
def unreachable_ports(
    store: FakeOrderStore, catalog: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every use of a port fails the test."""

    async def refuse(*args: object) -> NoReturn:
        raise AssertionError("the call must not reach the ports")

    for name in ("find_by_idempotency_key", "add", "get", "list", "update"):
        monkeypatch.setattr(store, name, refuse)
    monkeypatch.setattr(catalog, "entries", refuse)


@pytest.mark.usefixtures("unreachable_ports")
@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
@pytest.mark.parametrize("method", list(DESCRIPTOR.methods_by_name))
def test_every_method_needs_a_valid_access_token(
    orders: ServicerHarness, mint: TokenMint, method: str, kind: str
) -> None:
    request = GetMessageClass(DESCRIPTOR.methods_by_name[method].input_type)()
    metadata = mint.bad_credentials(kind, ALICE)
    call = orders.unary_stream if method == "WatchOrders" else orders.unary
    outcome = call(method, request, metadata=metadata)
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED
    assert BAD_CREDENTIALS[kind] in outcome.details


def test_the_callers_request_id_is_echoed_on_success_and_on_error(
    orders: ServicerHarness,
) -> None:
    metadata = (("x-request-id", "req-order-1"),)
    good = orders.unary("CreateOrder", create_request(), caller=ALICE, metadata=metadata)
    bad = orders.unary(
        "GetOrder", order_pb2.GetOrderRequest(order_id="nope"), caller=ALICE, metadata=metadata
    )
    unauthenticated = orders.unary("ListOrders", order_pb2.ListOrdersRequest(), metadata=metadata)
    assert good.request_id == bad.request_id == unauthenticated.request_id == "req-order-1"
