"""Payments in `payment.payments`. The writers work on the caller's connection, so a worker
records a payment, its inbox entry and its outbox event in one transaction.

The table enforces what the rules promise: `order_id` is unique (one outcome, so one
capture, per order) and the refund lives on the payment row (at most one refund each).
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from services.common.errors import NotFound
from services.common.money import Money
from services.payment.domain.model import (
    ChargeApproved,
    ChargeOutcome,
    MethodFamily,
    Payment,
    PaymentStatus,
)
from services.payment.domain.rules import ensure_refundable, ensure_same_outcome
from services.platform.db import Connection, Pool, columns
from services.platform.order_guard import OrderGuard

SCHEMA = "payment"

_COLUMNS = (
    "payment_id::text, order_id, user_id, status, amount_minor, currency, method,"
    " provider_reference, decline_reason, refund_reference, created_at, refunded_at,"
    " method_family"
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
        method_family=None if row["method_family"] is None else MethodFamily(row["method_family"]),
    )


_RECORD = (
    "INSERT INTO payment.payments (payment_id, order_id, user_id, status, amount_minor,"
    " currency, method, provider_reference, decline_reason, method_family)"
    " SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], %b::bigint[],"
    " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
    f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}"
)


def _status(outcome: ChargeOutcome) -> PaymentStatus:
    if isinstance(outcome.result, ChargeApproved):
        return PaymentStatus.CAPTURED
    return PaymentStatus.DECLINED


def _outcome_row(outcome: ChargeOutcome) -> tuple[Any, ...]:
    attempt, result = outcome.attempt, outcome.result
    reference: str | None = None
    reason: str | None = None
    if isinstance(result, ChargeApproved):
        reference = result.provider_reference
    else:
        reason = result.reason
    return (
        attempt.payment_id,
        attempt.order_id,
        attempt.user_id,
        _status(outcome).value,
        attempt.amount.amount_minor,
        attempt.amount.currency,
        attempt.method,
        reference,
        reason,
        None if result.family is None else result.family.value,
    )


class PaymentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._guard = OrderGuard(conn, SCHEMA)

    async def lock_order(self, order_id: str) -> None:
        await self._guard.lock_order(order_id)

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        await self._guard.lock_orders(order_ids)

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        """The orders among ``order_ids`` that must not be charged: cancelled, or decided."""
        ids = sorted(set(order_ids))
        cursor = await self._conn.execute(
            "SELECT order_id FROM payment.cancelled_orders WHERE order_id = ANY(%s)"
            " UNION SELECT order_id FROM payment.payments WHERE order_id = ANY(%s)",
            (ids, ids),
        )
        return {row["order_id"] for row in await cursor.fetchall()}

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

    async def record(self, outcomes: Sequence[ChargeOutcome]) -> list[Payment]:
        """Inserts every outcome with one statement; an order that already had a payment
        keeps it (returned in its place, if it is the same outcome)."""
        if not outcomes:
            return []
        rows = [_outcome_row(outcome) for outcome in outcomes]
        cursor = await self._conn.execute(_RECORD, columns(rows))
        stored = {row["order_id"]: _payment(row) for row in await cursor.fetchall()}
        missing = [o.attempt.order_id for o in outcomes if o.attempt.order_id not in stored]
        if missing:
            cursor = await self._conn.execute(
                f"SELECT {_COLUMNS} FROM payment.payments WHERE order_id = ANY(%s)", (missing,)
            )
            earlier = {row["order_id"]: _payment(row) for row in await cursor.fetchall()}
            for outcome in outcomes:
                order_id = outcome.attempt.order_id
                if order_id in earlier:
                    ensure_same_outcome(earlier[order_id], _status(outcome), outcome.attempt.amount)
            stored.update(earlier)
        return [stored[outcome.attempt.order_id] for outcome in outcomes]

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


class PooledPaymentReader:
    """Reads for the API, each on a connection of its own from the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def by_order(self, order_id: str) -> Payment | None:
        async with self._pool.connection() as conn:
            return await PaymentRepository(conn).by_order(order_id)
