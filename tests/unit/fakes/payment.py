"""In-memory stand-ins for the payment service's ports."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from services.common.errors import NotFound
from services.payment.domain.model import (
    ChargeApproved,
    ChargeOutcome,
    NewPayment,
    Payment,
    PaymentStatus,
)
from services.payment.domain.rules import ensure_refundable, ensure_same_outcome

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass
class FakeLedger:
    """Holds payments as the repository does: one outcome per order, one refund each."""

    payments: dict[str, Payment] = field(default_factory=dict)
    locked: list[str] = field(default_factory=list)
    order_locks: list[str] = field(default_factory=list)
    cancelled: dict[str, str] = field(default_factory=dict)

    async def lock_order(self, order_id: str) -> None:
        self.order_locks.append(order_id)

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        self.order_locks.extend(sorted(set(order_ids)))

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        return {o for o in order_ids if o in self.cancelled or o in self.payments}

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        self.cancelled.setdefault(order_id, reason)

    async def by_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        if for_update:
            self.locked.append(order_id)
        return self.payments.get(order_id)

    async def record(self, outcomes: Sequence[ChargeOutcome]) -> list[Payment]:
        stored = []
        for outcome in outcomes:
            result = outcome.result
            if isinstance(result, ChargeApproved):
                payment = self._record(
                    outcome.attempt, PaymentStatus.CAPTURED, result.provider_reference, None
                )
            else:
                payment = self._record(outcome.attempt, PaymentStatus.DECLINED, None, result.reason)
            if payment.method_family is None and result.family is not None:
                payment = self.payments[payment.order_id] = replace(
                    payment, method_family=result.family
                )
            stored.append(payment)
        return stored

    async def refund(self, order_id: str, refund_reference: str) -> Payment:
        existing = self.payments.get(order_id)
        if existing is None:
            raise NotFound(f"order {order_id} has no payment")
        ensure_refundable(existing)
        if existing.status is PaymentStatus.CAPTURED:
            existing = replace(
                existing,
                status=PaymentStatus.REFUNDED,
                refund_reference=refund_reference,
                refunded_at=NOW,
            )
            self.payments[order_id] = existing
        return existing

    def _record(
        self,
        new: NewPayment,
        status: PaymentStatus,
        provider_reference: str | None,
        decline_reason: str | None,
    ) -> Payment:
        existing = self.payments.get(new.order_id)
        if existing is not None:
            ensure_same_outcome(existing, status, new.amount)
            return existing
        payment = Payment(
            new.payment_id,
            new.order_id,
            new.user_id,
            status,
            new.amount,
            new.method,
            provider_reference,
            decline_reason,
            None,
            NOW,
            None,
        )
        self.payments[new.order_id] = payment
        return payment
