"""Fulfillment events as Avro records in the fulfillment outbox (same transaction as the
shipment; the outbox relay publishes them to the fulfillment topic, keyed by order id)."""

from services.fulfillment.domain.events import OrderShipped
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import EventOutbox, EventRecord

SCHEMA = "fulfillment"
SOURCE = "/ordermesh/fulfillment"


def event_record(event: OrderShipped) -> EventRecord:
    shipment = event.shipment
    return EventRecord(
        "OrderShipped",
        shipment.order_id,
        {
            "order_id": shipment.order_id,
            "user_id": shipment.user_id,
            "shipment_id": shipment.shipment_id,
            "carrier": shipment.carrier,
            "tracking_number": shipment.tracking_number,
            "estimated_delivery": shipment.estimated_delivery,
            "shipped_at": shipment.shipped_at,
        },
        shipment.shipped_at,
    )


def fulfillment_outbox(codec: EventCodec) -> EventOutbox[OrderShipped]:
    return EventOutbox(codec, schema=SCHEMA, source=SOURCE, to_record=event_record)
