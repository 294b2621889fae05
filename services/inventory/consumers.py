"""The inventory manager: reserves stock for paid orders and gives it back on cancellation.

Each handler runs inside the consumer's transaction (with its inbox row), takes the order's
lock first so a payment and a cancellation of one order never interleave, and never
commits itself.
"""

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.common.errors import InvalidArgument
from services.inventory import handlers
from services.inventory.adapters.outbox import InventoryOutbox
from services.inventory.adapters.stock import PostgresStockLedger
from services.inventory.domain.commands import ReleaseStock, ReserveStock
from services.inventory.domain.reservations import StockLine
from services.platform.db import Connection
from workers.codec import EventCodec, EventEnvelope
from workers.consumer import BatchHandler, Handler, NonRetryableError

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


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
        self._outbox = InventoryOutbox(codec)

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "PaymentProcessed": self.on_payment_processed,
            "OrderCancelled": self.on_order_cancelled,
        }

    def batch_handlers(self) -> Mapping[str, BatchHandler]:
        return {"PaymentProcessed": self.on_payments_processed}

    def single_handlers(self) -> Mapping[str, Handler]:
        """The handlers of the events :meth:`batch_handlers` does not take."""
        return {"OrderCancelled": self.on_order_cancelled}

    async def on_payment_processed(self, envelope: EventEnvelope, conn: Connection) -> None:
        await self.on_payments_processed([envelope], conn)

    async def on_payments_processed(
        self, envelopes: Sequence[EventEnvelope], conn: Connection
    ) -> None:
        """Reserves stock for a batch of paid orders in a handful of queries.

        The per-order locks of every order in the batch come first (sorted, so batches and
        the cancellation handler never wait crosswise), then which orders are cancelled or
        already decided, then the stock rows of every product involved, locked in
        product_id order. The orders are decided in offset order against those levels in
        memory; the stock changes, the reservations and the events are written at once."""
        commands = [reserve_command(envelope.record) for envelope in envelopes]
        ledger = PostgresStockLedger(conn)
        order_ids = [command.order_id for command in commands]
        await ledger.lock_orders(order_ids)
        settled = await ledger.settled_orders(order_ids)
        pending = [command for command in commands if command.order_id not in settled]
        if not pending:
            log.info("payments need no reservation", extra={"orders": len(commands)})
            return
        product_ids = sorted({line.product_id for command in pending for line in command.lines})
        available = await ledger.lock_stock(product_ids)
        try:
            decision = handlers.decide_reservations(
                pending, settled=settled, available=available, now=_now(), new_id=_new_id
            )
        except InvalidArgument as exc:
            named = f"order {order_ids[0]}" if len(order_ids) == 1 else f"{len(order_ids)} orders"
            raise NonRetryableError(f"{named}: {exc}") from exc
        if decision.taken:
            await ledger.take_stock(decision.taken)
        await ledger.add_reservations(decision.reservations)
        await self._outbox.write_all(conn, decision.events)

    async def on_order_cancelled(self, envelope: EventEnvelope, conn: Connection) -> None:
        command = release_command(envelope.record)
        event = await handlers.release_stock(command, PostgresStockLedger(conn), now=_now())
        if event is not None:
            await self._outbox.write(conn, event)
