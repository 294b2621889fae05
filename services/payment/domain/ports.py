"""What the payment handlers need from the outside world."""

from typing import Protocol

from services.payment.domain.model import Payment


class PaymentReader(Protocol):
    async def by_order(self, order_id: str) -> Payment | None: ...
