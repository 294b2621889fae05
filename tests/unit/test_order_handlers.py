from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

import pytest

from services.common.errors import (
    Conflict,
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.identity import Principal, Role, Tier
from services.common.money import Money
from services.common.paging import Page
from services.order import handlers
from services.order.domain.commands import CancelOrder, CreateOrder, RequestedLine, UpdateOrder
from services.order.domain.events import OrderCancelled, OrderCreated, OrderStatusChanged
from services.order.domain.model import Address, Order, OrderStatus
from services.order.domain.pricing import CatalogEntry
from tests.unit.fakes.order import FakeCatalog, FakeOrderStore

ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("user-admin", "admin@example.com", Role.ADMIN, Tier.ENTERPRISE)
ADDRESS = Address("1 Main St", "Springfield", "IL", "62701", "US")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(
        {
            "kb": CatalogEntry("kb", "Keyboard", Money(8999, "USD"), True),
            "mouse": CatalogEntry("mouse", "Mouse", Money(2999, "USD"), True),
            "old": CatalogEntry("old", "Retired", Money(100, "USD"), False),
        }
    )


def command(*lines: RequestedLine, **overrides: object) -> CreateOrder:
    fields: dict[str, object] = {
        "principal": ALICE,
        "lines": lines or (RequestedLine("kb", 2),),
        "shipping_address": ADDRESS,
        "payment_method": "tok_visa",
    }
    fields.update(overrides)
    return CreateOrder(**fields)  # type: ignore[arg-type]


async def test_create_prices_from_catalog_and_emits_order_created(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(
        command(RequestedLine("kb", 2), RequestedLine("mouse", 1)), store, catalog, clock
    )
    assert order.status is OrderStatus.PENDING
    assert order.total == Money(2 * 8999 + 2999, "USD")
    assert order.version == 1
    assert [type(e) for e in store.published] == [OrderCreated]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "at least one item"),
        ((RequestedLine("kb", 0),), "quantity must be between 1 and 100"),
        ((RequestedLine("kb", 10_000),), "quantity must be between 1 and 100"),
        ((RequestedLine("nope", 1),), "unknown product 'nope'"),
        ((RequestedLine("old", 1),), "no longer sold"),
        ((RequestedLine("kb", 1), RequestedLine("kb", 1)), "appears more than once"),
        ((RequestedLine("", 1),), "product_id is required"),
    ],
)
async def test_bad_lines_are_refused_with_a_clear_message(
    catalog: FakeCatalog, lines: tuple[RequestedLine, ...], message: str
) -> None:
    cmd = command(lines=lines)
    with pytest.raises(InvalidArgument, match=message):
        await handlers.create_order(cmd, FakeOrderStore(), catalog, clock)


async def test_too_many_lines_are_refused(catalog: FakeCatalog) -> None:
    lines = tuple(RequestedLine(f"p{i}", 1) for i in range(51))
    with pytest.raises(InvalidArgument, match="at most 50 items"):
        await handlers.create_order(command(lines=lines), FakeOrderStore(), catalog, clock)


async def test_client_prices_are_checked_not_trusted(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    agreed = command(RequestedLine("kb", 1, Decimal("89.99")), expected_total=Decimal("89.990"))
    assert (await handlers.create_order(agreed, store, catalog, clock)).total.amount_minor == 8999
    cheaper = command(RequestedLine("kb", 1, Decimal("1.00")))
    with pytest.raises(InvalidArgument, match=r"items\[0\].unit_price 1.00 does not match"):
        await handlers.create_order(cheaper, store, catalog, clock)
    wrong_total = command(RequestedLine("kb", 1), expected_total=Decimal("10"))
    with pytest.raises(InvalidArgument, match="total_amount 10 does not match"):
        await handlers.create_order(wrong_total, store, catalog, clock)


async def test_user_id_in_body_must_be_the_callers(catalog: FakeCatalog) -> None:
    with pytest.raises(PermissionDenied):
        await handlers.create_order(
            command(claimed_user_id=BOB.user_id), FakeOrderStore(), catalog, clock
        )
    order = await handlers.create_order(
        command(claimed_user_id=ALICE.user_id), FakeOrderStore(), catalog, clock
    )
    assert order.user_id == ALICE.user_id


async def test_missing_address_and_payment_method_are_named(catalog: FakeCatalog) -> None:
    with pytest.raises(InvalidArgument, match="payment_method is required"):
        await handlers.create_order(command(payment_method=" "), FakeOrderStore(), catalog, clock)
    no_city = Address("1 Main St", "", "", "62701", "US")
    with pytest.raises(InvalidArgument, match=r"shipping_address.city is required"):
        await handlers.create_order(
            command(shipping_address=no_city), FakeOrderStore(), catalog, clock
        )


async def test_idempotency_key_returns_the_first_order(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    first = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    again = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    assert again.order_id == first.order_id
    assert len(store.orders) == 1
    other_user = await handlers.create_order(
        command(idempotency_key="k1", principal=BOB), store, catalog, clock
    )
    assert other_user.order_id != first.order_id
    with pytest.raises(Conflict, match="different request"):
        await handlers.create_order(
            command(RequestedLine("mouse", 1), idempotency_key="k1"), store, catalog, clock
        )


async def test_a_keyed_create_looks_its_key_up_only_when_it_cannot_be_priced(
    catalog: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is claimed in the order's own transaction; a lookup before it would be one
    more round trip per create."""
    store = FakeOrderStore()
    lookups: list[str] = []
    find = store.find_by_idempotency_key

    async def counting(user_id: str, key: str) -> tuple[Order, str] | None:
        lookups.append(key)
        return await find(user_id, key)

    monkeypatch.setattr(store, "find_by_idempotency_key", counting)
    first = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    again = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    assert again.order_id == first.order_id
    assert lookups == []


async def test_a_retry_gets_the_first_order_even_if_it_cannot_be_priced_now(
    catalog: FakeCatalog,
) -> None:
    store = FakeOrderStore()
    first = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    retired = replace(catalog.entries_by_id["kb"], active=False)
    catalog.entries_by_id["kb"] = retired
    again = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    assert again.order_id == first.order_id
    with pytest.raises(InvalidArgument, match="no longer sold"):
        await handlers.create_order(command(idempotency_key="k2"), store, catalog, clock)
    with pytest.raises(Conflict, match="different request"):
        await handlers.create_order(
            command(RequestedLine("kb", 1), idempotency_key="k1"), store, catalog, clock
        )
    assert len(store.orders) == 1


async def test_a_retry_gets_the_first_order_while_the_catalog_is_away(
    catalog: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeOrderStore()
    first = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)

    async def away(product_ids: object) -> NoReturn:
        raise DependencyUnavailable("catalog unavailable", dependency="inventory")

    monkeypatch.setattr(catalog, "entries", away)
    again = await handlers.create_order(command(idempotency_key="k1"), store, catalog, clock)
    assert again.order_id == first.order_id
    with pytest.raises(DependencyUnavailable):
        await handlers.create_order(command(idempotency_key="k2"), store, catalog, clock)


async def test_other_users_orders_are_invisible(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    with pytest.raises(NotFound):
        await handlers.get_order(BOB, order.order_id, store)
    assert (await handlers.get_order(ADMIN, order.order_id, store)).order_id == order.order_id
    with pytest.raises(NotFound):
        await handlers.get_order(ALICE, "not-a-uuid", store)


async def test_listing_is_scoped_and_paginated(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    for _ in range(3):
        await handlers.create_order(command(), store, catalog, clock)
    await handlers.create_order(command(principal=BOB), store, catalog, clock)
    orders, total = await handlers.list_orders(ALICE, store, Page(1, 2), status="", user_id="")
    assert (len(orders), total) == (2, 3)
    _, total = await handlers.list_orders(ALICE, store, Page(1, 2), status="shipped", user_id="")
    assert total == 0
    with pytest.raises(PermissionDenied):
        await handlers.list_orders(ALICE, store, Page(1, 2), status="", user_id=BOB.user_id)
    _, total = await handlers.list_orders(ADMIN, store, Page(1, 10), status="", user_id="")
    assert total == 4
    with pytest.raises(InvalidArgument, match="unknown status 'lost'"):
        await handlers.list_orders(ALICE, store, Page(1, 2), status="lost", user_id="")


async def test_cancel_before_shipping_and_not_after(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    cancelled = await handlers.cancel_order(CancelOrder(ALICE, order.order_id), store, clock)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.version == 2
    assert isinstance(store.published[-1], OrderCancelled)
    assert (
        await handlers.cancel_order(CancelOrder(ALICE, order.order_id), store, clock)
    ) == cancelled

    shipped = await handlers.create_order(command(), store, catalog, clock)
    store.orders[shipped.order_id] = replace(shipped, status=OrderStatus.SHIPPED)
    with pytest.raises(FailedPrecondition, match="can no longer be cancelled"):
        await handlers.cancel_order(CancelOrder(ALICE, shipped.order_id), store, clock)


async def test_only_admins_mark_shipped_orders_delivered(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    with pytest.raises(FailedPrecondition, match="cannot become DELIVERED"):
        await handlers.update_order(UpdateOrder(ADMIN, order.order_id, "delivered"), store, clock)
    store.orders[order.order_id] = replace(order, status=OrderStatus.SHIPPED)
    with pytest.raises(PermissionDenied):
        await handlers.update_order(UpdateOrder(ALICE, order.order_id, "delivered"), store, clock)
    delivered = await handlers.update_order(
        UpdateOrder(ADMIN, order.order_id, "DELIVERED", {"signed_by": "Bob"}), store, clock
    )
    assert delivered.status is OrderStatus.DELIVERED
    assert delivered.metadata["signed_by"] == "Bob"
    assert delivered.version == order.version + 1
    assert isinstance(store.published[-1], OrderStatusChanged)


async def test_owner_may_patch_metadata_only(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    patched = await handlers.update_order(
        UpdateOrder(ALICE, order.order_id, metadata={"gift": True}), store, clock
    )
    assert patched.metadata == {"gift": True}
    assert patched.status is OrderStatus.PENDING
    with pytest.raises(InvalidArgument, match="use CancelOrder"):
        await handlers.update_order(UpdateOrder(ADMIN, order.order_id, "cancelled"), store, clock)


async def test_cancel_retries_when_the_projector_wins_a_race(catalog: FakeCatalog) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    original_update = store.update
    raced: list[bool] = []

    async def update_after_projector(order: Order, expected_version: int, events: Any) -> None:
        if not raced:
            raced.append(True)
            current = store.orders[order.order_id]
            store.orders[order.order_id] = current.transition(
                OrderStatus.VALIDATED, reason="", at=NOW
            )
        await original_update(order, expected_version, events)

    store.update = update_after_projector  # type: ignore[method-assign]
    cancelled = await handlers.cancel_order(CancelOrder(ALICE, order.order_id), store, clock)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.version == 3


async def test_an_order_released_to_the_warehouse_cannot_be_cancelled(
    catalog: FakeCatalog,
) -> None:
    store = FakeOrderStore()
    order = await handlers.create_order(command(), store, catalog, clock)
    store.orders[order.order_id] = replace(order, status=OrderStatus.FULFILLED)
    with pytest.raises(FailedPrecondition, match="handed to the warehouse"):
        await handlers.cancel_order(CancelOrder(ALICE, order.order_id), store, clock)
