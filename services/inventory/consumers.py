"""The inventory manager: reserves stock for paid orders and gives it back on cancellation.

Each handler runs inside the consumer's transaction (with its inbox row), takes the order's
lock first so a payment and a cancellation of one order never interleave, and never
commits itself.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.clock import new_id, utc_now
from services.common.errors import InvalidArgument
from services.inventory import handlers
from services.inventory.adapters.outbox import inventory_outbox
from services.inventory.adapters.stock import PostgresStockLedger
from services.inventory.domain.commands import ReleaseStock, ReserveStock
from services.inventory.domain.reservations import StockLine
from services.platform.db import Connection
from services.platform.messaging.codec import EventCodec, EventEnvelope
from services.platform.messaging.consumer import Handlers, NonRetryableError

log = logging.getLogger(__name__)


def reserve_command(record: Mapping[str, Any]) -> ReserveStock:
    """A PaymentProcessed record as the command it implies."""
    return ReserveStock(
        order_id=str(record["order_id"]),
        user_id=str(record["user_id"]),
        payment_id=str(record["payment_id"]),
        amount_minor=int(record["amount_minor"]),
        currency=str(record["currency"]),
        lines=tuple(
            StockLine(str(item["product_id"]), int(item["quantity"]), int(item["unit_price_minor"]))
            for item in record["items"]
        ),
        shipping_address={k: str(v) for k, v in record["shipping_address"].items()},
    )


def release_command(record: Mapping[str, Any]) -> ReleaseStock:
    """An OrderCancelled record as the command it implies."""
    return ReleaseStock(
        order_id=str(record["order_id"]),
        user_id=str(record["user_id"]),
        reason=str(record["reason"]),
        cancelled_at=record["cancelled_at"],
    )


class InventoryManager:
    """PaymentProcessed → OrderFulfilled or OutOfStock; OrderCancelled → StockReleased."""

    def __init__(self, codec: EventCodec) -> None:
        self._outbox = inventory_outbox(codec)

    def handlers(self) -> Handlers:
        return Handlers(
            single={"OrderCancelled": self.on_order_cancelled},
            batch={"PaymentProcessed": self.on_payments_processed},
        )

    async def on_payments_processed(
        self, envelopes: Sequence[EventEnvelope], conn: Connection
    ) -> None:
        """Reserves stock for a batch of paid orders in a handful of queries (see
        :func:`services.inventory.handlers.reserve_stock`) and publishes the outcomes."""
        commands = [reserve_command(envelope.record) for envelope in envelopes]
        try:
            events = await handlers.reserve_stock(
                commands, PostgresStockLedger(conn), now=utc_now(), new_id=new_id
            )
        except InvalidArgument as exc:
            named = f"order {commands[0].order_id}" if len(commands) == 1 else "a batch"
            raise NonRetryableError(f"{named}: {exc}") from exc
        if not events:
            log.info("payments need no reservation", extra={"orders": len(commands)})
            return
        await self._outbox.write(conn, events)

    async def on_order_cancelled(self, envelope: EventEnvelope, conn: Connection) -> None:
        command = release_command(envelope.record)
        event = await handlers.release_stock(command, PostgresStockLedger(conn), now=utc_now())
        if event is not None:
            await self._outbox.write(conn, [event])
