"""The simulated payment provider: test-mode card tokens and idempotent references."""

import pytest

from services.common.money import Money
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.domain.model import (
    ChargeApproved,
    ChargeDeclined,
    ChargeRequest,
    ChargeResult,
    InvalidPaymentMethod,
    MethodFamily,
    RefundResult,
)

AMOUNT = Money(1999, "USD")


async def charge(provider: SimulatedPaymentProvider, order_id: str, method: str) -> ChargeResult:
    [result] = await provider.charge_all([ChargeRequest(order_id, AMOUNT, method, order_id)])
    return result


async def test_card_tokens_decide_the_outcome() -> None:
    provider = SimulatedPaymentProvider()
    approved = await charge(provider, "o-1", "tok_visa")
    assert isinstance(approved, ChargeApproved)
    assert approved.provider_reference.startswith("ch_sim_")
    declined = await charge(provider, "o-2", "tok_chargeDeclined")
    assert declined == ChargeDeclined("card declined", "CARD_DECLINED", MethodFamily.CARD_TOKEN)
    invalid = await charge(provider, "o-3", "iou")
    assert isinstance(invalid, InvalidPaymentMethod) and invalid.method == "iou"
    assert invalid.reason == (
        "invalid payment method 'iou': accepted methods are CREDIT_CARD, DEBIT_CARD, PAYPAL"
        " (in any case) and the test tokens tok_visa, tok_chargeDeclined"
    )
    assert invalid.code == "INVALID_PAYMENT_METHOD"
    assert invalid.family is None
    assert approved.family is MethodFamily.CARD_TOKEN
    assert declined.family is MethodFamily.CARD_TOKEN


@pytest.mark.parametrize(
    ("method", "family"),
    [
        ("CREDIT_CARD", MethodFamily.CREDIT_CARD),
        ("credit_card", MethodFamily.CREDIT_CARD),
        ("Debit_Card", MethodFamily.DEBIT_CARD),
        ("DEBIT_CARD", MethodFamily.DEBIT_CARD),
        ("PAYPAL", MethodFamily.PAYPAL),
        ("paypal", MethodFamily.PAYPAL),
    ],
)
async def test_the_original_apis_method_names_are_approved_in_any_case(
    method: str, family: MethodFamily
) -> None:
    approved = await charge(SimulatedPaymentProvider(), "o-1", method)
    assert isinstance(approved, ChargeApproved)
    assert approved.provider_reference.startswith("ch_sim_")
    assert approved.family is family


@pytest.mark.parametrize(
    "method",
    ["BITCOIN", "CREDIT CARD", "CREDIT_CARD ", "credit-card", "TOK_VISA", "Tok_Visa", "PAYPAL\x00"],
)
async def test_near_misses_and_other_methods_are_refused(method: str) -> None:
    refused = await charge(SimulatedPaymentProvider(), "o-1", method)
    assert isinstance(refused, InvalidPaymentMethod)
    assert "accepted methods are CREDIT_CARD, DEBIT_CARD, PAYPAL" in refused.reason


async def test_references_are_derived_from_the_idempotency_key() -> None:
    provider, restarted = SimulatedPaymentProvider(), SimulatedPaymentProvider()
    first = await charge(provider, "o-1", "tok_visa")
    assert await charge(restarted, "o-1", "tok_visa") == first
    assert await charge(provider, "o-2", "tok_visa") != first
    refund = await provider.refund("ch_x", AMOUNT, "p-1")
    assert isinstance(refund, RefundResult) and refund.refund_reference.startswith("re_sim_")
    assert await restarted.refund("ch_x", AMOUNT, "p-1") == refund
    assert await provider.refund("ch_x", AMOUNT, "p-2") != refund


async def test_a_batch_is_answered_charge_by_charge_in_order() -> None:
    provider = SimulatedPaymentProvider()
    methods = ["tok_visa", "tok_chargeDeclined", "iou", "tok_visa"]
    requests = [ChargeRequest(f"o-{i}", AMOUNT, m, f"o-{i}") for i, m in enumerate(methods)]
    results = await provider.charge_all(requests)
    assert [await charge(provider, r.order_id, r.method) for r in requests] == results
    assert [type(r) for r in results] == [
        ChargeApproved,
        ChargeDeclined,
        InvalidPaymentMethod,
        ChargeApproved,
    ]
