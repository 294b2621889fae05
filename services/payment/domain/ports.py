"""What the payment handlers need from the outside world."""

from collections.abc import Iterable, Sequence, Set
from datetime import datetime
from typing import Protocol

from services.common.money import Money
from services.payment.domain.model import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    Payment,
    RefundResult,
)


class PaymentReader(Protocol):
    async def by_order(self, order_id: str) -> Payment | None: ...


class PaymentLedger(Protocol):
    """The payments of one transaction: what a handler records commits with its event."""

    async def lock_order(self, order_id: str) -> None:
        """Serialise this transaction with every other payment handler of the order."""

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        """:meth:`lock_order` for several orders at once, in an order every caller shares."""

    async def settled_orders(self, order_ids: Iterable[str]) -> Set[str]:
        """The orders among ``order_ids`` that must not be charged: cancelled, or with a
        recorded outcome already."""

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        """Remember that the order was cancelled (idempotent)."""

    async def by_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        """The order's payment; with ``for_update`` it stays locked until the transaction
        ends, so concurrent refunds of one payment are serialised."""

    async def record(self, outcomes: Sequence[ChargeOutcome]) -> list[Payment]:
        """Records each outcome (captured or declined) and returns the stored payments in the
        same order. An order that already has the same outcome returns that payment (its
        payment_id tells the caller it did not record this attempt); a different outcome is
        a conflict."""

    async def refund(self, order_id: str, refund_reference: str) -> Payment:
        """Marks the order's captured payment refunded; a repeated refund returns it."""


class PaymentProvider(Protocol):
    """The payment service provider. Both calls are idempotent on the idempotency key: a
    retry with the same key repeats the first outcome and never moves money twice."""

    async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
        """The answer to each charge, in the same order."""

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult: ...
