"""Fulfillment events as Avro records in the fulfillment outbox (same transaction as the
shipment; the outbox relay publishes them to the fulfillment topic, keyed by order id)."""

from typing import Any

from psycopg import AsyncConnection

from services.fulfillment.domain.events import OrderShipped
from services.platform.messaging import registry
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import add_to_outbox

SCHEMA = "fulfillment"
SOURCE = "/ordermesh/fulfillment"


def order_shipped_record(event: OrderShipped) -> dict[str, Any]:
    shipment = event.shipment
    return {
        "order_id": shipment.order_id,
        "user_id": shipment.user_id,
        "shipment_id": shipment.shipment_id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "estimated_delivery": shipment.estimated_delivery,
        "shipped_at": shipment.shipped_at,
    }


class FulfillmentOutbox:
    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec

    async def write(self, conn: AsyncConnection[Any], event: OrderShipped) -> None:
        await add_to_outbox(
            conn,
            SCHEMA,
            codec=self._codec,
            topic=registry.FULFILLMENT,
            key=event.shipment.order_id,
            event_name="OrderShipped",
            record=order_shipped_record(event),
            source=SOURCE,
        )
