"""Inventory events as Avro records in the inventory outbox (same transaction as the stock
change; the outbox relay publishes them to the inventory topic, keyed by order id)."""

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from services.inventory.domain.events import Event, OrderFulfilled, OutOfStock, StockReleased
from services.inventory.domain.reservations import StockLine
from services.platform.messaging import registry
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import (
    OutboxMessage,
    add_messages_to_outbox,
    add_to_outbox,
    outbox_message,
)

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


def event_record(event: Event) -> tuple[str, str, dict[str, Any]]:
    """The order id, Avro schema name and record of a domain event."""
    match event:
        case OrderFulfilled(reservation=reservation):
            return (
                reservation.order_id,
                "OrderFulfilled",
                {
                    "order_id": reservation.order_id,
                    "user_id": reservation.user_id,
                    "reservation_id": reservation.reservation_id,
                    "items": _lines(reservation.lines),
                    "shipping_address": dict(event.shipping_address),
                    "reserved_at": reservation.created_at,
                },
            )
        case OutOfStock():
            return (
                event.order_id,
                "OutOfStock",
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
            )
        case StockReleased(reservation=reservation):
            return (
                reservation.order_id,
                "StockReleased",
                {
                    "order_id": reservation.order_id,
                    "user_id": reservation.user_id,
                    "reservation_id": reservation.reservation_id,
                    "items": _lines(reservation.lines),
                    "reason": event.reason,
                    "released_at": event.released_at,
                },
            )


class InventoryOutbox:
    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec

    async def write(self, conn: AsyncConnection[Any], event: Event) -> None:
        order_id, name, record = event_record(event)
        await add_to_outbox(
            conn,
            SCHEMA,
            codec=self._codec,
            topic=registry.topic_for(name),
            key=order_id,
            event_name=name,
            record=record,
            source=SOURCE,
        )

    def message(self, event: Event) -> OutboxMessage:
        """``event`` encoded for :meth:`write_all`."""
        order_id, name, record = event_record(event)
        return outbox_message(
            self._codec,
            topic=registry.topic_for(name),
            key=order_id,
            event_name=name,
            record=record,
            source=SOURCE,
        )

    async def write_all(self, conn: AsyncConnection[Any], events: Iterable[Event]) -> None:
        """Stores several events with one COPY."""
        await add_messages_to_outbox(conn, SCHEMA, [self.message(event) for event in events])
