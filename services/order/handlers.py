"""One function per order command, run against ports (real adapters or test fakes)."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from services.common.clock import new_id as clock_new_id
from services.common.errors import Conflict, DomainError, InvalidArgument, NotFound
from services.common.identity import Principal
from services.common.paging import Page
from services.order.domain import pricing
from services.order.domain.commands import CancelOrder, CreateOrder, UpdateOrder
from services.order.domain.events import Event, OrderCancelled, OrderCreated, OrderStatusChanged
from services.order.domain.idempotency import IdempotencyClaim, claim_for, ensure_same_request
from services.order.domain.model import Order, OrderStatus, ensure_metadata_fits
from services.order.domain.ports import Catalog, OrderStore

Clock = Callable[[], datetime]

CONFLICT_RETRIES = 5


async def create_order(
    command: CreateOrder,
    store: OrderStore,
    catalog: Catalog,
    clock: Clock,
    new_id: Callable[[], str] = clock_new_id,
) -> Order:
    pricing.check_request(command)
    ensure_metadata_fits(command.metadata)
    claim = claim_for(command)
    try:
        entries = await catalog.entries([line.product_id for line in command.lines])
        lines = pricing.price_lines(command, entries)
    except DomainError:
        # A retry gets the first result even when it could not be priced now (a product
        # retired since, the catalog away). Otherwise the key is looked up only when it is
        # claimed, in the order's own transaction (store.add), not in a round trip before.
        existing = await _order_named_by(claim, command, store)
        if existing is None:
            raise
        return existing
    now = clock()
    order = Order(
        order_id=new_id(),
        user_id=command.principal.user_id,
        status=OrderStatus.PENDING,
        lines=lines,
        shipping_address=command.shipping_address,
        payment_method=command.payment_method.strip(),
        created_at=now,
        updated_at=now,
        metadata=dict(command.metadata),
    )
    return await store.add(order, [OrderCreated(order)], claim)


async def _order_named_by(
    claim: IdempotencyClaim | None, command: CreateOrder, store: OrderStore
) -> Order | None:
    if claim is None:
        return None
    found = await store.find_by_idempotency_key(command.principal.user_id, claim.key)
    if found is None:
        return None
    existing, stored_fingerprint = found
    ensure_same_request(claim, stored_fingerprint)
    return existing


async def get_order(principal: Principal, order_id: str, store: OrderStore) -> Order:
    order = await _load(order_id, store)
    principal.ensure_owner(order.user_id, "order")
    return order


async def list_orders(
    principal: Principal, store: OrderStore, page: Page, *, status: str, user_id: str
) -> tuple[list[Order], int]:
    owner: str | None = principal.user_id
    if user_id and user_id != principal.user_id:
        principal.require_privileged("list other users' orders")
        owner = user_id
    elif principal.is_privileged and not user_id:
        owner = None
    wanted = OrderStatus.parse(status) if status else None
    return await store.list(owner, wanted, page)


async def cancel_order(command: CancelOrder, store: OrderStore, clock: Clock) -> Order:
    return await _retrying_conflicts(lambda: _cancel_once(command, store, clock))


async def _cancel_once(command: CancelOrder, store: OrderStore, clock: Clock) -> Order:
    order = await get_order(command.principal, command.order_id, store)
    if order.status is OrderStatus.CANCELLED:
        return order
    reason = command.reason.strip() or "cancelled by the customer"
    cancelled = order.cancel(reason=reason, at=clock())
    await store.update(cancelled, order.version, [OrderCancelled(cancelled, order.status, reason)])
    return cancelled


async def update_order(command: UpdateOrder, store: OrderStore, clock: Clock) -> Order:
    return await _retrying_conflicts(lambda: _update_once(command, store, clock))


async def _update_once(command: UpdateOrder, store: OrderStore, clock: Clock) -> Order:
    order = await get_order(command.principal, command.order_id, store)
    now = clock()
    events: list[Event] = []
    updated = order
    if command.status:
        target = OrderStatus.parse(command.status)
        if target is not order.status:
            command.principal.require_privileged("change an order's status")
            if target is OrderStatus.CANCELLED:
                raise InvalidArgument("use CancelOrder (DELETE) to cancel an order", field="status")
            if target is not OrderStatus.DELIVERED:
                raise InvalidArgument(
                    "only the carrier step SHIPPED → DELIVERED is set by hand; the other "
                    "steps follow the order's events",
                    field="status",
                )
            reason = command.reason.strip() or "delivered"
            updated = updated.transition(target, reason=reason, at=now)
            events.append(OrderStatusChanged(updated, order.status, reason, now))
    if command.metadata:
        updated = updated.with_metadata(command.metadata, at=now)
    if updated is order:
        return order
    updated = _single_version_step(order, updated)
    await store.update(updated, order.version, events)
    return updated


async def _retrying_conflicts(attempt: Callable[[], Awaitable[Order]]) -> Order:
    """Re-reads and re-applies a change that lost a race with another writer of the order
    (typically the status projector); the guards are checked again on the fresh state."""
    for _ in range(CONFLICT_RETRIES - 1):
        try:
            return await attempt()
        except Conflict:
            continue
    return await attempt()


def _single_version_step(before: Order, after: Order) -> Order:
    return replace(after, version=before.version + 1)


async def _load(order_id: str, store: OrderStore) -> Order:
    if not order_id:
        raise InvalidArgument("order_id is required", field="order_id")
    try:
        uuid.UUID(order_id)
    except ValueError:
        raise NotFound("order not found") from None
    order = await store.get(order_id)
    if order is None:
        raise NotFound("order not found")
    return order
