"""Payments against real Postgres: the repository the payment worker will use, the table's
constraints, and PaymentService.GetPayment over real gRPC."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc

from services.auth import bootstrap as auth_bootstrap
from services.auth.create_admin import create_admin
from services.common.errors import Conflict, FailedPrecondition, NotFound
from services.common.money import Money
from services.payment import bootstrap as payment_bootstrap
from services.payment.adapters.repository import PaymentRepository
from services.payment.domain.model import (
    ChargeApproved,
    ChargeDeclined,
    ChargeOutcome,
    NewPayment,
    Payment,
    PaymentStatus,
)
from services.platform.db import Pool
from services.platform.settings import Settings
from tests.integration.grpc_harness import PASSWORD, GrpcStack, grpc_stack, rpc_error, sign_in

pytestmark = pytest.mark.integration

AMOUNT = Money(5998, "USD")


def new_payment(user_id: str = "user-1", order_id: str | None = None) -> NewPayment:
    return NewPayment(
        payment_id=str(uuid.uuid4()),
        order_id=order_id or f"order-{uuid.uuid4()}",
        user_id=user_id,
        amount=AMOUNT,
        method="tok_visa",
    )


async def capture(pool: Pool, payment: NewPayment, reference: str = "ch_1") -> Payment:
    async with pool.connection() as conn, conn.transaction():
        [stored] = await PaymentRepository(conn).record(
            [ChargeOutcome(payment, ChargeApproved(reference))]
        )
        return stored


async def decline(pool: Pool, payment: NewPayment) -> Payment:
    async with pool.connection() as conn, conn.transaction():
        [stored] = await PaymentRepository(conn).record(
            [ChargeOutcome(payment, ChargeDeclined("card declined"))]
        )
        return stored


async def refund(pool: Pool, order_id: str) -> Payment:
    async with pool.connection() as conn, conn.transaction():
        return await PaymentRepository(conn).refund(order_id, "re_1")


async def test_a_capture_is_recorded_once(pool: Pool) -> None:
    payment = new_payment()
    captured = await capture(pool, payment)
    assert (captured.status, captured.amount, captured.provider_reference) == (
        PaymentStatus.CAPTURED,
        AMOUNT,
        "ch_1",
    )
    assert (captured.decline_reason, captured.refunded_at) == (None, None)
    assert await capture(pool, payment) == captured
    retry_with_new_id = NewPayment(
        str(uuid.uuid4()), payment.order_id, payment.user_id, AMOUNT, "tok_visa"
    )
    assert await capture(pool, retry_with_new_id) == captured


async def test_concurrent_captures_of_one_order_store_one_payment(pool: Pool) -> None:
    order_id = f"order-{uuid.uuid4()}"
    results = await asyncio.gather(
        *(capture(pool, new_payment(order_id=order_id)) for _ in range(5))
    )
    assert len({payment.payment_id for payment in results}) == 1


async def test_an_order_has_one_outcome(pool: Pool) -> None:
    payment = new_payment()
    await decline(pool, payment)
    with pytest.raises(Conflict, match="declined"):
        await capture(pool, payment)
    captured = new_payment()
    await capture(pool, captured)
    with pytest.raises(Conflict, match="captured"):
        await decline(pool, captured)
    other_amount = NewPayment(
        str(uuid.uuid4()), captured.order_id, captured.user_id, Money(1, "USD"), "tok_visa"
    )
    with pytest.raises(Conflict):
        await capture(pool, other_amount)


async def test_a_declined_payment_keeps_its_reason_and_cannot_be_refunded(pool: Pool) -> None:
    payment = new_payment()
    declined = await decline(pool, payment)
    assert (declined.status, declined.decline_reason, declined.provider_reference) == (
        PaymentStatus.DECLINED,
        "card declined",
        None,
    )
    assert await decline(pool, payment) == declined
    with pytest.raises(FailedPrecondition):
        await refund(pool, payment.order_id)


async def test_a_capture_is_refunded_at_most_once(pool: Pool) -> None:
    payment = new_payment()
    await capture(pool, payment)
    refunded = await refund(pool, payment.order_id)
    assert refunded.status is PaymentStatus.REFUNDED
    assert (refunded.refund_reference, refunded.amount) == ("re_1", AMOUNT)
    assert refunded.refunded_at is not None
    assert await refund(pool, payment.order_id) == refunded
    assert await capture(pool, payment) == refunded
    with pytest.raises(NotFound):
        await refund(pool, f"order-{uuid.uuid4()}")


async def test_the_table_enforces_one_payment_per_order_and_consistent_refunds(
    pool: Pool,
) -> None:
    payment = new_payment()
    await capture(pool, payment)
    insert = (
        "INSERT INTO payment.payments (payment_id, order_id, user_id, status, amount_minor,"
        " currency, method, provider_reference, refunded_at)"
        " VALUES (%s, %s, 'user-1', %s, 100, 'USD', 'card', 'ch_x', %s)"
    )
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute(insert, (uuid.uuid4(), payment.order_id, "captured", None))
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(insert, (uuid.uuid4(), f"order-{uuid.uuid4()}", "refunded", None))


@pytest.fixture(scope="module")
async def stack(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    async with grpc_stack(
        settings, pool, [auth_bootstrap.component, payment_bootstrap.component]
    ) as running:
        yield running


async def test_get_payment_shows_a_user_only_their_own(stack: GrpcStack, pool: Pool) -> None:
    owner, stranger = await sign_in(stack.channel), await sign_in(stack.channel)
    payment = new_payment(user_id=owner.user_id)
    stored = await refund(pool, (await capture(pool, payment)).order_id)
    payments = payment_pb2_grpc.PaymentServiceStub(stack.channel)
    request = payment_pb2.GetPaymentRequest(order_id=payment.order_id)

    shown = (await payments.GetPayment(request, metadata=owner.metadata)).payment
    assert (shown.payment_id, shown.order_id, shown.user_id) == (
        stored.payment_id,
        payment.order_id,
        owner.user_id,
    )
    assert shown.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert (shown.amount.currency, shown.amount.amount_minor, shown.amount.amount) == (
        "USD",
        5998,
        "59.98",
    )
    assert (shown.payment_method, shown.provider_reference) == ("tok_visa", "ch_1")
    assert shown.created_at.seconds > 0 and shown.refunded_at.seconds > 0

    for caller, order_id in ((stranger, payment.order_id), (owner, f"order-{uuid.uuid4()}")):
        missing = payment_pb2.GetPaymentRequest(order_id=order_id)
        error = await rpc_error(payments.GetPayment(missing, metadata=caller.metadata))
        assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await rpc_error(
        payments.GetPayment(payment_pb2.GetPaymentRequest(), metadata=owner.metadata)
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    error = await rpc_error(payments.GetPayment(request))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_admins_see_every_payment(stack: GrpcStack, pool: Pool, settings: Settings) -> None:
    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    await create_admin(settings, email=email, password=PASSWORD, full_name="Admin")
    admin = await sign_in(stack.channel, email)
    payment = new_payment(user_id="someone-else")
    await decline(pool, payment)
    payments = payment_pb2_grpc.PaymentServiceStub(stack.channel)
    shown = await payments.GetPayment(
        payment_pb2.GetPaymentRequest(order_id=payment.order_id), metadata=admin.metadata
    )
    assert shown.payment.status == payment_pb2.PAYMENT_STATUS_DECLINED
    assert shown.payment.decline_reason == "card declined"
