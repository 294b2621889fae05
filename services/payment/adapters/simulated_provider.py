"""A payment provider that moves no money, for development and tests.

It behaves like a card processor's test mode, and accepts the payment method names of the
original API's clients:

- the names ``CREDIT_CARD``, ``DEBIT_CARD`` and ``PAYPAL`` (in any case) are approved;
- the test tokens decide the outcome: ``tok_visa`` is approved, ``tok_chargeDeclined`` is
  declined ("card declined");
- any other method is not a usable payment method, and the reason lists the accepted ones.

References are derived from the idempotency key, so a retried call returns exactly what the
first one did, as a real provider's idempotency keys guarantee.
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
    MethodFamily,
    RefundResult,
)

APPROVED_METHOD = "tok_visa"
DECLINED_METHOD = "tok_chargeDeclined"

# Method names, matched without regard to case, and the family each charges as.
NAMED_METHODS: dict[str, MethodFamily] = {
    "CREDIT_CARD": MethodFamily.CREDIT_CARD,
    "DEBIT_CARD": MethodFamily.DEBIT_CARD,
    "PAYPAL": MethodFamily.PAYPAL,
}
# Test tokens, matched exactly (as a card processor's are): None approves, a reason declines.
TEST_TOKENS: dict[str, str | None] = {
    APPROVED_METHOD: None,
    DECLINED_METHOD: "card declined",
}
ACCEPTED_METHODS = (
    ", ".join(NAMED_METHODS) + " (in any case) and the test tokens " + ", ".join(TEST_TOKENS)
)


def _reference(prefix: str, idempotency_key: str) -> str:
    return f"{prefix}_sim_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


class SimulatedPaymentProvider:
    async def charge_all(self, charges: Sequence[ChargeRequest]) -> list[ChargeResult]:
        return [self._charge(charge) for charge in charges]

    @staticmethod
    def _charge(charge: ChargeRequest) -> ChargeResult:
        if charge.method in TEST_TOKENS:
            decline = TEST_TOKENS[charge.method]
            if decline is None:
                return ChargeApproved(
                    _reference("ch", charge.idempotency_key), MethodFamily.CARD_TOKEN
                )
            return ChargeDeclined(decline, family=MethodFamily.CARD_TOKEN)
        family = NAMED_METHODS.get(charge.method.upper())
        if family is not None:
            return ChargeApproved(_reference("ch", charge.idempotency_key), family)
        return InvalidPaymentMethod(charge.method, ACCEPTED_METHODS)

    async def refund(
        self, provider_reference: str, amount: Money, idempotency_key: str
    ) -> RefundResult:
        return RefundResult(_reference("re", idempotency_key))
