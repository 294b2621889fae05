"""Order events as Avro records in the order service's outbox (same transaction as the
state change; the outbox relay publishes them to the orders topic, keyed by order id)."""

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from services.order.domain.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderRejected,
    OrderReleased,
    OrderStatusChanged,
    OrderValidated,
)
from services.order.domain.model import Order, OrderStatus
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import EventOutbox, EventRecord

SCHEMA = "orders"
SOURCE = "/ordermesh/order"


def _string_map(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in values.items()
    }


def order_items(order: Order) -> list[dict[str, Any]]:
    """The order's lines as every order event carries them."""
    return [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price.amount_minor,
        }
        for line in order.lines
    ]


def _shipment(order: Order) -> dict[str, str]:
    """Carrier, tracking number and estimated delivery of a shipped order, as text."""
    if order.status is not OrderStatus.SHIPPED:
        return {}
    details = {"carrier": order.carrier, "tracking_number": order.tracking_number}
    if order.estimated_delivery is not None:
        details["estimated_delivery"] = order.estimated_delivery.isoformat()
    return details


def event_record(event: Event) -> EventRecord:
    """A domain event as the Avro record of its event type."""
    order = event.order
    common = {"order_id": order.order_id, "user_id": order.user_id, "version": order.version}
    match event:
        case OrderCreated():
            return EventRecord(
                "OrderCreated",
                order.order_id,
                {
                    **common,
                    "items": order_items(order),
                    "total_minor": order.total.amount_minor,
                    "currency": order.currency,
                    "payment_method": order.payment_method,
                    "shipping_address": asdict(order.shipping_address),
                    "created_at": order.created_at,
                    "metadata": _string_map(order.metadata),
                },
                order.created_at,
            )
        case OrderValidated():
            return EventRecord(
                "OrderValidated",
                order.order_id,
                {
                    **common,
                    "items": order_items(order),
                    "total_minor": order.total.amount_minor,
                    "currency": order.currency,
                    "payment_method": order.payment_method,
                    "shipping_address": asdict(order.shipping_address),
                    "validated_at": event.at,
                },
                event.at,
            )
        case OrderRejected():
            return EventRecord(
                "OrderRejected",
                order.order_id,
                {
                    **common,
                    "reason": event.reason,
                    "reason_code": event.code,
                    "rejected_at": event.at,
                },
                event.at,
            )
        case OrderReleased():
            return EventRecord(
                "OrderReadyToShip",
                order.order_id,
                {
                    **common,
                    "items": order_items(order),
                    "shipping_address": asdict(order.shipping_address),
                    "released_at": order.updated_at,
                },
                order.updated_at,
            )
        case OrderCancelled():
            return EventRecord(
                "OrderCancelled",
                order.order_id,
                {
                    **common,
                    "reason": event.reason,
                    "previous_status": event.previous_status.value,
                    "cancelled_by": None,
                    "cancelled_at": order.updated_at,
                },
                order.updated_at,
            )
        case OrderStatusChanged() if order.status is OrderStatus.DELIVERED:
            return EventRecord(
                "OrderDelivered",
                order.order_id,
                {**common, "delivered_at": event.occurred_at},
                event.occurred_at,
            )
        case OrderStatusChanged():
            return EventRecord(
                "OrderStatusChanged",
                order.order_id,
                {
                    **common,
                    "status": order.status.value,
                    "previous_status": event.previous_status.value,
                    "reason": event.reason,
                    "details": _shipment(order),
                    "occurred_at": event.occurred_at,
                },
                event.occurred_at,
            )


def order_outbox(codec: EventCodec) -> EventOutbox[Event]:
    return EventOutbox(codec, schema=SCHEMA, source=SOURCE, to_record=event_record)
