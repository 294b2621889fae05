"""Inventory events as Avro records in the inventory outbox (same transaction as the stock
change; the outbox relay publishes them to the inventory topic, keyed by order id)."""

from typing import Any

from services.inventory.domain.events import Event, OrderFulfilled, OutOfStock, StockReleased
from services.inventory.domain.reservations import StockLine
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import EventOutbox, EventRecord

SCHEMA = "inventory"
SOURCE = "/ordermesh/inventory"


def _lines(lines: tuple[StockLine, ...]) -> list[dict[str, Any]]:
    return [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
        }
        for line in lines
    ]


def event_record(event: Event) -> EventRecord:
    """A domain event as the Avro record of its event type."""
    match event:
        case OrderFulfilled(reservation=reservation):
            return EventRecord(
                "OrderFulfilled",
                reservation.order_id,
                {
                    "order_id": reservation.order_id,
                    "user_id": reservation.user_id,
                    "reservation_id": reservation.reservation_id,
                    "items": _lines(reservation.lines),
                    "shipping_address": dict(event.shipping_address),
                    "reserved_at": reservation.created_at,
                },
                reservation.created_at,
            )
        case OutOfStock():
            return EventRecord(
                "OutOfStock",
                event.order_id,
                {
                    "order_id": event.order_id,
                    "user_id": event.user_id,
                    "payment_id": event.payment_id,
                    "amount_minor": event.amount_minor,
                    "currency": event.currency,
                    "shortages": [
                        {
                            "product_id": s.product_id,
                            "requested": s.requested,
                            "available": s.available,
                        }
                        for s in event.shortages
                    ],
                    "occurred_at": event.occurred_at,
                },
                event.occurred_at,
            )
        case StockReleased(reservation=reservation):
            return EventRecord(
                "StockReleased",
                reservation.order_id,
                {
                    "order_id": reservation.order_id,
                    "user_id": reservation.user_id,
                    "reservation_id": reservation.reservation_id,
                    "items": _lines(reservation.lines),
                    "reason": event.reason,
                    "released_at": event.released_at,
                },
                event.released_at,
            )


def inventory_outbox(codec: EventCodec) -> EventOutbox[Event]:
    return EventOutbox(codec, schema=SCHEMA, source=SOURCE, to_record=event_record)
