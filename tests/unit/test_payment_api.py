"""PaymentService's servicer through grpc_testing, behind the platform interceptor, over a fake
ledger: the payment's translation in each status, who may read it, its errors' statuses, the
contract's bounds and tokens."""

from collections.abc import Iterator
from datetime import UTC, timedelta

import grpc
import pytest
from ordermesh.common.v1 import common_pb2
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc

from services.common.identity import Principal, Role, Tier
from services.common.money import Money
from services.payment.api import PaymentApi
from services.payment.domain.model import Payment, PaymentStatus
from tests.unit.fakes.payment import NOW, FakeLedger
from tests.unit.servicer_harness import BAD_CREDENTIALS, ServicerHarness, TokenMint

DESCRIPTOR = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("user-admin", "admin@example.com", Role.ADMIN, Tier.ENTERPRISE)
LATER = NOW + timedelta(hours=2)


def payment(status: PaymentStatus, owner: Principal = ALICE, order_id: str = "order-1") -> Payment:
    return Payment(
        payment_id=f"payment-of-{order_id}",
        order_id=order_id,
        user_id=owner.user_id,
        status=status,
        amount=Money(20997, "USD"),
        method="tok_visa",
        provider_reference=None if status is PaymentStatus.DECLINED else "ch_123",
        decline_reason="card declined" if status is PaymentStatus.DECLINED else None,
        refund_reference="re_456" if status is PaymentStatus.REFUNDED else None,
        created_at=NOW,
        refunded_at=LATER if status is PaymentStatus.REFUNDED else None,
    )


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def payments(mint: TokenMint, ledger: FakeLedger) -> Iterator[ServicerHarness]:
    with ServicerHarness(
        DESCRIPTOR,
        PaymentApi(ledger),
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        mint=mint,
    ) as harness:
        yield harness


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_the_orders_payment_is_answered_in_each_status(
    payments: ServicerHarness, ledger: FakeLedger, status: PaymentStatus
) -> None:
    kept = ledger.payments["order-1"] = payment(status)
    request = payment_pb2.GetPaymentRequest(order_id="order-1")
    answered = payments.unary("GetPayment", request, caller=ALICE).ok().payment
    assert answered.created_at.ToDatetime(tzinfo=UTC) == NOW
    if kept.refunded_at is None:
        assert not answered.HasField("refunded_at")
    else:
        assert answered.refunded_at.ToDatetime(tzinfo=UTC) == kept.refunded_at
    answered.ClearField("created_at")
    answered.ClearField("refunded_at")
    assert answered == payment_pb2.Payment(
        payment_id="payment-of-order-1",
        order_id="order-1",
        user_id=ALICE.user_id,
        status=payment_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{status.name}"),
        amount=common_pb2.Money(currency="USD", amount_minor=20997, amount="209.97"),
        payment_method="tok_visa",
        provider_reference=kept.provider_reference or "",
        decline_reason=kept.decline_reason or "",
    )


@pytest.mark.parametrize("order_id", ["order-without-payment", "bobs-order"])
def test_a_payment_that_is_not_the_callers_is_not_found(
    payments: ServicerHarness, ledger: FakeLedger, order_id: str
) -> None:
    ledger.payments["bobs-order"] = payment(PaymentStatus.CAPTURED, BOB, "bobs-order")
    outcome = payments.unary(
        "GetPayment", payment_pb2.GetPaymentRequest(order_id=order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "payment not found")


def test_an_admin_reads_anyones_payment(payments: ServicerHarness, ledger: FakeLedger) -> None:
    ledger.payments["bobs-order"] = payment(PaymentStatus.CAPTURED, BOB, "bobs-order")
    request = payment_pb2.GetPaymentRequest(order_id="bobs-order")
    assert payments.unary("GetPayment", request, caller=ADMIN).ok().payment.user_id == BOB.user_id


@pytest.mark.parametrize(
    ("order_id", "violation"),
    [
        ("", ("order_id", "order_id is required")),
        ("o" * 65, ("order_id", "order_id is 65 characters long; at most 64 are allowed")),
    ],
)
def test_a_bad_order_id_is_invalid(
    payments: ServicerHarness, order_id: str, violation: tuple[str, str]
) -> None:
    outcome = payments.unary(
        "GetPayment", payment_pb2.GetPaymentRequest(order_id=order_id), caller=ALICE
    )
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_a_payment_is_read_with_a_valid_access_token_only(
    payments: ServicerHarness, ledger: FakeLedger, mint: TokenMint, kind: str
) -> None:
    ledger.payments["order-1"] = payment(PaymentStatus.CAPTURED)
    outcome = payments.unary(
        "GetPayment",
        payment_pb2.GetPaymentRequest(order_id="order-1"),
        metadata=mint.bad_credentials(kind, ALICE),
    )
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED
    assert BAD_CREDENTIALS[kind] in outcome.details


def test_the_callers_request_id_is_echoed_on_success_and_on_error(
    payments: ServicerHarness, ledger: FakeLedger
) -> None:
    ledger.payments["order-1"] = payment(PaymentStatus.CAPTURED)
    metadata = (("x-request-id", "req-payment-1"),)
    found = payments.unary(
        "GetPayment",
        payment_pb2.GetPaymentRequest(order_id="order-1"),
        caller=ALICE,
        metadata=metadata,
    )
    missing = payments.unary(
        "GetPayment",
        payment_pb2.GetPaymentRequest(order_id="order-2"),
        caller=ALICE,
        metadata=metadata,
    )
    assert found.request_id == missing.request_id == "req-payment-1"
