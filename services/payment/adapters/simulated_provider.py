"""A payment provider that moves no money, for development and tests.

It behaves like a card processor's test mode: ``tok_visa`` is approved, ``tok_chargeDeclined``
is declined, any other method is not a usable payment method. References are derived from
the idempotency key, so a retried call returns exactly what the first one did, as a real
provider's idempotency keys guarantee.
"""

import hashlib
from collections.abc import Sequence

from services.common.money import Money
from services.payment.domain.model import (
    ChargeApproved,
    ChargeDeclined,
    ChargeRequest,
    ChargeResult,
    InvalidPaymentMethod,
    RefundResult,
)

APPROVED_METHOD = "tok_visa"
DECLINED_METHOD = "tok_chargeDeclined"


def _reference(prefix: str, idempotency_key: str) -> str:
    return f"{prefix}_sim_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


class SimulatedPaymentProvider:
    async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
        return [self._charge(charge) for charge in charges]

    @staticmethod
    def _charge(charge: ChargeRequest) -> ChargeResult:
        if charge.method == APPROVED_METHOD:
            return ChargeApproved(_reference("ch", charge.idempotency_key))
        if charge.method == DECLINED_METHOD:
            return ChargeDeclined("card declined")
        return InvalidPaymentMethod(charge.method)

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult:
        return RefundResult(_reference("re", idempotency_key))
