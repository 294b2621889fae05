"""The order service's event consumers: the order validator and the order status
projector. Each handler runs inside the consumer's transaction (with its inbox row), locks
the order row first so every writer of one order is serialised, and never commits itself."""

import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from services.order.adapters.outbox import SCHEMA, SOURCE
from services.order.adapters.repository import fetch_order, save_order
from services.order.domain.lifecycle import STATUS_BY_EVENT, StatusFact, apply_fact, validate
from services.order.domain.model import Order, OrderStatus
from services.order.domain.ports import Catalog
from services.platform.db import Connection
from workers import topics
from workers.codec import EventCodec, EventEnvelope
from workers.consumer import Handler
from workers.outbox import add_to_outbox

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _lines(order: Order) -> list[dict[str, Any]]:
    return [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price.amount_minor,
        }
        for line in order.lines
    ]


class OrderValidator:
    """OrderCreated → OrderValidated or OrderRejected, checked against the live catalog."""

    def __init__(self, codec: EventCodec, catalog: Catalog) -> None:
        self._codec = codec
        self._catalog = catalog

    def handlers(self) -> Mapping[str, Handler]:
        return {"OrderCreated": self.on_order_created}

    async def on_order_created(self, envelope: EventEnvelope, conn: Connection) -> None:
        order = await fetch_order(conn, str(envelope.record["order_id"]), for_update=True)
        if order is None or order.status is not OrderStatus.PENDING:
            return
        entries = await self._catalog.entries([line.product_id for line in order.lines])
        rejection = validate(order, entries)
        now = _now()
        if rejection is None:
            name, record = (
                "OrderValidated",
                {
                    "order_id": order.order_id,
                    "user_id": order.user_id,
                    "items": _lines(order),
                    "total_minor": order.total.amount_minor,
                    "currency": order.currency,
                    "payment_method": order.payment_method,
                    "shipping_address": asdict(order.shipping_address),
                    "validated_at": now,
                    "version": order.version,
                },
            )
        else:
            name, record = (
                "OrderRejected",
                {
                    "order_id": order.order_id,
                    "user_id": order.user_id,
                    "reason": rejection.reason,
                    "reason_code": rejection.code,
                    "rejected_at": now,
                    "version": order.version,
                },
            )
        await add_to_outbox(
            conn,
            SCHEMA,
            codec=self._codec,
            topic=topics.ORDERS,
            key=order.order_id,
            event_name=name,
            record=record,
            source=SOURCE,
        )


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
        )
    return StatusFact(target, str(record.get("reason") or ""))


class OrderStatusProjector:
    """Applies the other services' facts to orders through the guarded status machine.

    Reaching FULFILLED also releases the order to the warehouse (OrderReadyToShip) in the
    same transaction: fulfillment ships only released orders, and a released order can no
    longer be cancelled, so a shipment and a cancellation never both happen."""

    EVENTS = tuple(STATUS_BY_EVENT)

    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec

    def handlers(self) -> Mapping[str, Handler]:
        return dict.fromkeys(self.EVENTS, self.on_event)

    async def on_event(self, envelope: EventEnvelope, conn: Connection) -> None:
        fact = status_fact(envelope.name, envelope.record)
        if fact is None:
            return
        order_id = str(envelope.record["order_id"])
        order = await fetch_order(conn, order_id, for_update=True)
        if order is None:
            log.warning("event for an unknown order", extra={"order_id": order_id})
            return
        states = apply_fact(order, fact, at=_now())
        if not states:
            log.info(
                "event does not apply",
                extra={"order_id": order_id, "event": envelope.name, "status": order.status},
            )
            return
        previous = order
        for state in states:
            await save_order(conn, state, previous.version)
            if state.status is OrderStatus.FULFILLED:
                await self._release_to_warehouse(conn, state)
            previous = state

    async def _release_to_warehouse(self, conn: Connection, order: Order) -> None:
        await add_to_outbox(
            conn,
            SCHEMA,
            codec=self._codec,
            topic=topics.ORDERS,
            key=order.order_id,
            event_name="OrderReadyToShip",
            record={
                "order_id": order.order_id,
                "user_id": order.user_id,
                "items": _lines(order),
                "shipping_address": asdict(order.shipping_address),
                "released_at": order.updated_at,
                "version": order.version,
            },
            source=SOURCE,
        )
