"""The simulated payment provider: test-mode card tokens and idempotent references."""

from services.common.money import Money
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.domain.model import (
    ChargeApproved,
    ChargeDeclined,
    InvalidPaymentMethod,
    RefundResult,
)

AMOUNT = Money(1999, "USD")


async def test_card_tokens_decide_the_outcome() -> None:
    provider = SimulatedPaymentProvider()
    approved = await provider.charge("o-1", AMOUNT, "tok_visa", "o-1")
    assert isinstance(approved, ChargeApproved)
    assert approved.provider_reference.startswith("ch_sim_")
    declined = await provider.charge("o-2", AMOUNT, "tok_chargeDeclined", "o-2")
    assert declined == ChargeDeclined("card declined", "CARD_DECLINED")
    invalid = await provider.charge("o-3", AMOUNT, "iou", "o-3")
    assert invalid == InvalidPaymentMethod("iou")
    assert invalid.reason == "invalid payment method 'iou'"
    assert invalid.code == "INVALID_PAYMENT_METHOD"


async def test_references_are_derived_from_the_idempotency_key() -> None:
    provider, restarted = SimulatedPaymentProvider(), SimulatedPaymentProvider()
    first = await provider.charge("o-1", AMOUNT, "tok_visa", "o-1")
    assert await restarted.charge("o-1", AMOUNT, "tok_visa", "o-1") == first
    assert await provider.charge("o-2", AMOUNT, "tok_visa", "o-2") != first
    refund = await provider.refund("ch_x", AMOUNT, "p-1")
    assert isinstance(refund, RefundResult) and refund.refund_reference.startswith("re_sim_")
    assert await restarted.refund("ch_x", AMOUNT, "p-1") == refund
    assert await provider.refund("ch_x", AMOUNT, "p-2") != refund
