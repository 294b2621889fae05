"""Payments in `payment.payments`. The writers work on the caller's connection, so a worker
records a payment, its inbox entry and its outbox event in one transaction.

The table enforces what the rules promise: `order_id` is unique (one outcome, so one
capture, per order) and the refund lives on the payment row (at most one refund each).
"""

from datetime import datetime
from typing import Any

from services.common.errors import NotFound
from services.common.money import Money
from services.payment.domain.model import NewPayment, Payment, PaymentStatus
from services.payment.domain.rules import ensure_refundable, ensure_same_outcome
from services.platform.db import Connection, Pool
from services.platform.order_guard import OrderGuard

SCHEMA = "payment"

_COLUMNS = (
    "payment_id::text, order_id, user_id, status, amount_minor, currency, method,"
    " provider_reference, decline_reason, refund_reference, created_at, refunded_at"
)


def _payment(row: dict[str, Any]) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        status=PaymentStatus(row["status"]),
        amount=Money(row["amount_minor"], row["currency"]),
        method=row["method"],
        provider_reference=row["provider_reference"],
        decline_reason=row["decline_reason"],
        refund_reference=row["refund_reference"],
        created_at=row["created_at"],
        refunded_at=row["refunded_at"],
    )


class PaymentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._guard = OrderGuard(conn, SCHEMA)

    async def lock_order(self, order_id: str) -> None:
        await self._guard.lock_order(order_id)

    async def is_cancelled(self, order_id: str) -> bool:
        return await self._guard.is_cancelled(order_id)

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        await self._guard.record_cancellation(order_id, reason, at)

    async def by_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        """The order's payment; with ``for_update`` its row stays locked until the
        transaction ends, so a concurrent refund of the same payment waits for this one."""
        lock = " FOR UPDATE" if for_update else ""
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM payment.payments WHERE order_id = %s{lock}", (order_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else _payment(row)

    async def capture(self, payment: NewPayment, provider_reference: str) -> Payment:
        """Records a captured charge; recording the same capture again returns it unchanged."""
        return await self._record(payment, PaymentStatus.CAPTURED, provider_reference, None)

    async def decline(self, payment: NewPayment, reason: str) -> Payment:
        """Records a declined charge; recording the same decline again returns it unchanged."""
        return await self._record(payment, PaymentStatus.DECLINED, None, reason)

    async def refund(self, order_id: str, refund_reference: str) -> Payment:
        """Refunds the order's captured payment in full; a repeated refund returns it."""
        cursor = await self._conn.execute(
            "UPDATE payment.payments SET status = 'refunded', refund_reference = %s,"
            " refunded_at = now(), updated_at = now()"
            f" WHERE order_id = %s AND status = 'captured' RETURNING {_COLUMNS}",
            (refund_reference, order_id),
        )
        row = await cursor.fetchone()
        if row is not None:
            return _payment(row)
        existing = await self.by_order(order_id)
        if existing is None:
            raise NotFound(f"order {order_id} has no payment")
        ensure_refundable(existing)
        return existing

    async def _record(
        self,
        payment: NewPayment,
        status: PaymentStatus,
        provider_reference: str | None,
        decline_reason: str | None,
    ) -> Payment:
        cursor = await self._conn.execute(
            "INSERT INTO payment.payments (payment_id, order_id, user_id, status, amount_minor,"
            " currency, method, provider_reference, decline_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}",
            (
                payment.payment_id,
                payment.order_id,
                payment.user_id,
                status.value,
                payment.amount.amount_minor,
                payment.amount.currency,
                payment.method,
                provider_reference,
                decline_reason,
            ),
        )
        row = await cursor.fetchone()
        if row is not None:
            return _payment(row)
        existing = await self.by_order(payment.order_id)
        assert existing is not None, "the conflicting payment is committed before DO NOTHING"
        ensure_same_outcome(existing, status, payment.amount)
        return existing


class PooledPaymentReader:
    """Reads for the API, each on a connection of its own from the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def by_order(self, order_id: str) -> Payment | None:
        async with self._pool.connection() as conn:
            return await PaymentRepository(conn).by_order(order_id)
