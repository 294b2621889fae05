"""The order service's event consumers: the order validator, the order status projector
and the live feed. Each handler runs inside the consumer's transaction (with its inbox row)
and never commits itself; the validator and projector lock the order rows first so every
writer of one order is serialised."""

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.common.clock import utc_now
from services.order.adapters.funnel import record_transitions
from services.order.adapters.outbox import order_outbox
from services.order.adapters.repository import fetch_orders, save_orders
from services.order.domain.events import (
    Event,
    OrderRejected,
    OrderReleased,
    OrderStatusChanged,
    OrderValidated,
)
from services.order.domain.lifecycle import (
    STATUS_BY_EVENT,
    StatusFact,
    apply_fact,
    validate,
)
from services.order.domain.live import StatusUpdate, message_for
from services.order.domain.model import Order, OrderStatus
from services.order.domain.ports import Catalog, LiveFeed
from services.order.domain.pricing import CatalogEntry
from services.platform.db import Connection
from services.platform.messaging.codec import EventCodec, EventEnvelope
from services.platform.messaging.consumer import Handlers

log = logging.getLogger(__name__)


class OrderValidator:
    """OrderCreated → OrderValidated or OrderRejected, checked against the live catalog.

    A polled batch of OrderCreated events is validated at once: its orders are locked in one
    query, the catalog is asked once (in chunks of ``CATALOG_BATCH`` products) and the
    verdicts are written to the outbox with one COPY."""

    # The inventory service answers at most this many product ids per BatchGetProducts.
    CATALOG_BATCH = 100

    def __init__(self, codec: EventCodec, catalog: Catalog) -> None:
        self._outbox = order_outbox(codec)
        self._catalog = catalog

    def handlers(self) -> Handlers:
        return Handlers(batch={"OrderCreated": self.on_orders_created})

    async def on_orders_created(self, envelopes: Sequence[EventEnvelope], conn: Connection) -> None:
        order_ids = [str(envelope.record["order_id"]) for envelope in envelopes]
        orders = await fetch_orders(conn, order_ids, for_update=True)
        pending = [
            order
            for order in (orders.get(order_id) for order_id in order_ids)
            if order is not None and order.status is OrderStatus.PENDING
        ]
        if not pending:
            return
        entries = await self._entries(
            {line.product_id for order in pending for line in order.lines}
        )
        now = utc_now()
        await self._outbox.write(conn, [verdict(order, entries, now) for order in pending])

    async def _entries(self, product_ids: Iterable[str]) -> dict[str, CatalogEntry]:
        ids = sorted(product_ids)
        chunks = [ids[i : i + self.CATALOG_BATCH] for i in range(0, len(ids), self.CATALOG_BATCH)]
        entries: dict[str, CatalogEntry] = {}
        for found in await asyncio.gather(*(self._catalog.entries(chunk) for chunk in chunks)):
            entries.update(found)
        return entries


def verdict(order: Order, catalog: Mapping[str, CatalogEntry], at: datetime) -> Event:
    rejection = validate(order, catalog)
    if rejection is None:
        return OrderValidated(order, at)
    return OrderRejected(order, rejection.reason, rejection.code, at)


def status_fact(event_name: str, record: Mapping[str, Any]) -> StatusFact | None:
    target = STATUS_BY_EVENT.get(event_name)
    if target is None:
        return None
    if event_name == "OutOfStock":
        short = ", ".join(
            f"{s['product_id']} ({s['available']} of {s['requested']} available)"
            for s in record["shortages"]
        )
        return StatusFact(target, f"out of stock: {short}; payment refunded")
    if event_name == "OrderShipped":
        return StatusFact(
            target,
            f"shipped with {record['carrier']}",
            carrier=str(record["carrier"]),
            tracking_number=str(record["tracking_number"]),
            estimated_delivery=record.get("estimated_delivery"),
        )
    return StatusFact(target, str(record.get("reason") or ""))


class OrderStatusProjector:
    """Applies the other services' facts to orders through the guarded status machine.

    Reaching FULFILLED also releases the order to the warehouse (OrderReadyToShip) in the
    same transaction: fulfillment ships only released orders, and a released order can no
    longer be cancelled, so a shipment and a cancellation never both happen."""

    EVENTS = tuple(STATUS_BY_EVENT)

    def __init__(self, codec: EventCodec) -> None:
        self._outbox = order_outbox(codec)

    def handlers(self) -> Handlers:
        # One handler object for every event, so a batch's consecutive facts (whatever
        # their types) reach it as one run.
        return Handlers(batch=dict.fromkeys(self.EVENTS, self.on_events))

    async def on_events(self, envelopes: Sequence[EventEnvelope], conn: Connection) -> None:
        """Applies the facts in offset order to the orders they name, locked in one query;
        then stores every changed order, its history and its warehouse release at once."""
        facts = [
            (envelope, str(envelope.record["order_id"]), fact)
            for envelope in envelopes
            if (fact := status_fact(envelope.name, envelope.record)) is not None
        ]
        if not facts:
            return
        orders = await fetch_orders(conn, [order_id for _, order_id, _ in facts], for_update=True)
        read_versions = {order_id: order.version for order_id, order in orders.items()}
        orders_before = dict(orders)
        states: list[Order] = []
        for envelope, order_id, fact in facts:
            order = orders.get(order_id)
            if order is None:
                log.warning("event for an unknown order", extra={"order_id": order_id})
                continue
            moved = apply_fact(order, fact, at=utc_now())
            if not moved:
                log.info(
                    "event does not apply",
                    extra={"order_id": order_id, "event": envelope.name, "status": order.status},
                )
                continue
            states.extend(moved)
            orders[order_id] = moved[-1]
        if not states:
            return
        await save_orders(conn, states, read_versions)
        events = list(_events_of(states, orders_before))
        await self._outbox.write(conn, events)
        # Counted inside the consumer's transaction: a batch whose commit fails (an outage)
        # is counted again when it is retried.
        record_transitions(events)


def _events_of(states: Sequence[Order], before: Mapping[str, Order]) -> Iterable[Event]:
    """For each state an order reached: the status change (what the live feed and webhooks
    follow) and, on reaching FULFILLED, the release to the warehouse."""
    previous = dict(before)
    for state in states:
        yield OrderStatusChanged(
            state, previous[state.order_id].status, state.status_reason, state.updated_at
        )
        previous[state.order_id] = state
        if state.status is OrderStatus.FULFILLED:
            yield OrderReleased(state)


def live_update(event_name: str, record: Mapping[str, Any]) -> StatusUpdate | None:
    """The status an order event records, as the live feed shows it."""
    match event_name:
        case "OrderCreated":
            status, at, reason = OrderStatus.PENDING, record["created_at"], ""
        case "OrderStatusChanged":
            status, at = OrderStatus(record["status"]), record["occurred_at"]
            reason = str(record.get("reason") or "")
        case "OrderCancelled":
            status, at = OrderStatus.CANCELLED, record["cancelled_at"]
            reason = str(record.get("reason") or "")
        case "OrderDelivered":
            status, at, reason = OrderStatus.DELIVERED, record["delivered_at"], ""
        case _:
            return None
    details = record.get("details") or {}
    eta = details.get("estimated_delivery")
    return StatusUpdate(
        order_id=str(record["order_id"]),
        user_id=str(record["user_id"]),
        status=status,
        version=int(record["version"]),
        message=message_for(status, reason),
        occurred_at=at,
        carrier=str(details.get("carrier", "")),
        tracking_number=str(details.get("tracking_number", "")),
        estimated_delivery=datetime.fromisoformat(eta) if eta else None,
    )


class LiveFeedWriter:
    """Appends every status an order reaches to its user's live feed (Redis). The feed is
    derived from these committed events only; the feed skips a version it already has, so
    a redelivered event is appended once. Redis being away is an outage the consumer waits
    out (no order waits for it: this group only feeds watchers)."""

    EVENTS = ("OrderCreated", "OrderStatusChanged", "OrderCancelled", "OrderDelivered")

    def __init__(self, feed: LiveFeed) -> None:
        self._feed = feed

    def handlers(self) -> Handlers:
        return Handlers(batch=dict.fromkeys(self.EVENTS, self.on_events))

    async def on_events(self, envelopes: Sequence[EventEnvelope], conn: Connection) -> None:
        updates = [
            update
            for envelope in envelopes
            if (update := live_update(envelope.name, envelope.record)) is not None
        ]
        await self._feed.publish(updates)
