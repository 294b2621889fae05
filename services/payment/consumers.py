"""The payment processor: charges validated orders and refunds the ones that cannot go on.

Each handler runs inside the consumer's transaction (with its inbox row): the payment row
and the outbox event it writes commit together or not at all, and it never commits itself.
A redelivered event finds the payment already recorded and writes nothing.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.clock import new_id
from services.common.errors import InvalidArgument
from services.common.money import Money
from services.payment import handlers
from services.payment.adapters.outbox import payment_outbox
from services.payment.adapters.repository import PaymentRepository
from services.payment.domain.commands import CancelPayment, ChargeOrder, RefundOrder
from services.payment.domain.events import Event
from services.payment.domain.ports import PaymentProvider
from services.platform.db import Connection
from services.platform.messaging.codec import EventCodec, EventEnvelope
from services.platform.messaging.consumer import Handlers, NonRetryableError

log = logging.getLogger(__name__)

OUT_OF_STOCK = "out of stock"


def charge_command(record: Mapping[str, Any]) -> ChargeOrder:
    """An OrderValidated record as the command it implies."""
    return ChargeOrder(
        order_id=str(record["order_id"]),
        user_id=str(record["user_id"]),
        amount=Money(int(record["total_minor"]), str(record["currency"])),
        method=str(record["payment_method"]),
        carried={"items": record["items"], "shipping_address": record["shipping_address"]},
    )


class PaymentProcessor:
    """OrderValidated → PaymentProcessed or PaymentFailed, unless the order was cancelled;
    OrderCancelled and OutOfStock → PaymentRefunded when the order's payment was captured and
    not yet refunded. A cancellation is remembered, so a validation that arrives after it
    (late, replayed from the dead-letter topic, or duplicated) takes no money."""

    def __init__(self, codec: EventCodec, provider: PaymentProvider) -> None:
        self._outbox = payment_outbox(codec)
        self._provider = provider

    def handlers(self) -> Handlers:
        return Handlers(
            single={
                "OrderCancelled": self.on_order_cancelled,
                "OutOfStock": self.on_out_of_stock,
            },
            batch={"OrderValidated": self.on_orders_validated},
        )

    async def on_orders_validated(
        self, envelopes: Sequence[EventEnvelope], conn: Connection
    ) -> None:
        """Charges a batch of validated orders with one provider call and a handful of
        queries (see :func:`services.payment.handlers.charge_orders`)."""
        try:
            commands = [charge_command(envelope.record) for envelope in envelopes]
        except InvalidArgument as exc:
            raise NonRetryableError(f"OrderValidated: {exc}") from exc
        events = await handlers.charge_orders(
            commands, PaymentRepository(conn), self._provider, new_id=new_id
        )
        await self._outbox.write(conn, events)
        log.debug(
            "charged %d of %d validated orders",
            len(events),
            len(commands),
            extra={"orders": [event.payment.order_id for event in events]},
        )

    async def on_order_cancelled(self, envelope: EventEnvelope, conn: Connection) -> None:
        order = envelope.record
        command = CancelPayment(
            str(order["order_id"]),
            str(order["reason"]) or "order cancelled",
            order["cancelled_at"],
        )
        event = await handlers.cancel_payment(command, PaymentRepository(conn), self._provider)
        await self._publish(conn, event, envelope)

    async def on_out_of_stock(self, envelope: EventEnvelope, conn: Connection) -> None:
        shortage = envelope.record
        command = RefundOrder(str(shortage["order_id"]), OUT_OF_STOCK)
        event = await handlers.refund_order(command, PaymentRepository(conn), self._provider)
        if event is not None and event.payment.payment_id != shortage["payment_id"]:
            log.warning(
                "OutOfStock names another payment than the order's; refunded the order's",
                extra={"order_id": command.order_id, "payment_id": shortage["payment_id"]},
            )
        await self._publish(conn, event, envelope)

    async def _publish(self, conn: Connection, event: Event | None, cause: EventEnvelope) -> None:
        order_id = str(cause.record["order_id"])
        if event is None:
            log.info("nothing to do", extra={"order_id": order_id, "event": cause.name})
            return
        await self._outbox.write(conn, [event])
        log.info(
            "payment %s",
            event.payment.status,
            extra={"order_id": order_id, "payment_id": event.payment.payment_id},
        )
