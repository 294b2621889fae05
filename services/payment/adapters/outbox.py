"""Payment events as Avro records in the payment service's outbox (same transaction as the
payment row; the outbox relay publishes them to the payments topic, keyed by order id)."""

from services.payment.domain.events import Event, PaymentFailed, PaymentProcessed, PaymentRefunded
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import EventOutbox, EventRecord

SCHEMA = "payment"
SOURCE = "/ordermesh/payment"


def event_record(event: Event) -> EventRecord:
    """A domain event as the Avro record of its event type. A capture carries the order's
    items and shipping address on to stock reservation and shipping."""
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
            return EventRecord(
                "PaymentProcessed",
                payment.order_id,
                {
                    **common,
                    "payment_method": payment.method,
                    "items": event.carried["items"],
                    "shipping_address": event.carried["shipping_address"],
                    "processed_at": payment.created_at,
                },
                payment.created_at,
            )
        case PaymentFailed():
            return EventRecord(
                "PaymentFailed",
                payment.order_id,
                {
                    **common,
                    "reason": event.reason,
                    "reason_code": event.reason_code,
                    "failed_at": payment.created_at,
                },
                payment.created_at,
            )
        case PaymentRefunded():
            assert payment.refund_reference is not None and payment.refunded_at is not None
            return EventRecord(
                "PaymentRefunded",
                payment.order_id,
                {
                    **common,
                    "refund_id": payment.refund_reference,
                    "reason": event.reason,
                    "refunded_at": payment.refunded_at,
                },
                payment.refunded_at,
            )


def payment_outbox(codec: EventCodec) -> EventOutbox[Event]:
    return EventOutbox(codec, schema=SCHEMA, source=SOURCE, to_record=event_record)
