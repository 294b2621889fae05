"""What the payment handlers need from the outside world."""

from datetime import datetime
from typing import Protocol

from services.common.money import Money
from services.payment.domain.model import ChargeResult, NewPayment, Payment, RefundResult


class PaymentReader(Protocol):
    async def by_order(self, order_id: str) -> Payment | None: ...


class PaymentLedger(Protocol):
    """The payments of one transaction: what a handler records commits with its event."""

    async def lock_order(self, order_id: str) -> None:
        """Serialise this transaction with every other payment handler of the order."""

    async def is_cancelled(self, order_id: str) -> bool:
        """Whether the order's cancellation has been recorded."""

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        """Remember that the order was cancelled (idempotent)."""

    async def by_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        """The order's payment; with ``for_update`` it stays locked until the transaction
        ends, so concurrent refunds of one payment are serialised."""

    async def capture(self, payment: NewPayment, provider_reference: str) -> Payment:
        """Records a captured charge; if the order already has this outcome, returns it."""

    async def decline(self, payment: NewPayment, reason: str) -> Payment:
        """Records a declined charge; if the order already has this outcome, returns it."""

    async def refund(self, order_id: str, refund_reference: str) -> Payment:
        """Marks the order's captured payment refunded; a repeated refund returns it."""


class PaymentProvider(Protocol):
    """The payment service provider. Both calls are idempotent on ``idempotency_key``: a
    retry with the same key repeats the first outcome and never moves money twice."""

    async def charge(
        self, order_id: str, amount: Money, payment_method: str, idempotency_key: str
    ) -> ChargeResult: ...

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult: ...
