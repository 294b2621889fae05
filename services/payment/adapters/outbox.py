"""Payment events as Avro records in the payment service's outbox (same transaction as the
payment row; the outbox relay publishes them to the payments topic, keyed by order id)."""

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection

from services.payment.domain.events import Event, PaymentFailed, PaymentProcessed, PaymentRefunded
from services.platform.messaging import registry
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import add_to_outbox

SCHEMA = "payment"
SOURCE = "/ordermesh/payment"


def event_record(event: Event, cause: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Avro schema name and record for a domain event. ``cause`` is the record of the
    event it answers: a capture carries the OrderValidated lines and address on to stock
    reservation and shipping, which the payment itself has no use for."""
    payment = event.payment
    common = {
        "order_id": payment.order_id,
        "user_id": payment.user_id,
        "payment_id": payment.payment_id,
        "amount_minor": payment.amount.amount_minor,
        "currency": payment.amount.currency,
    }
    match event:
        case PaymentProcessed():
            return "PaymentProcessed", {
                **common,
                "payment_method": payment.method,
                "items": cause["items"],
                "shipping_address": cause["shipping_address"],
                "processed_at": payment.created_at,
            }
        case PaymentFailed():
            return "PaymentFailed", {
                **common,
                "reason": event.reason,
                "reason_code": event.reason_code,
                "failed_at": payment.created_at,
            }
        case PaymentRefunded():
            assert payment.refund_reference is not None and payment.refunded_at is not None
            return "PaymentRefunded", {
                **common,
                "refund_id": payment.refund_reference,
                "reason": event.reason,
                "refunded_at": payment.refunded_at,
            }


class PaymentOutbox:
    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec

    async def write(
        self, conn: AsyncConnection[Any], event: Event, cause: Mapping[str, Any]
    ) -> None:
        name, record = event_record(event, cause)
        await add_to_outbox(
            conn,
            SCHEMA,
            codec=self._codec,
            topic=registry.PAYMENTS,
            key=event.payment.order_id,
            event_name=name,
            record=record,
            source=SOURCE,
        )
