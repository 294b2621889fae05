"""PaymentService over gRPC: the read side of payments."""

from typing import Any

import grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment import handlers
from services.payment.domain.model import MethodFamily, Payment, PaymentStatus
from services.payment.domain.ports import PaymentReader
from services.platform.convert import money_to_proto, timestamp
from services.platform.interceptors import current_principal

SERVICE = "ordermesh.payment.v1.PaymentService"

Context = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {
    PaymentStatus.CAPTURED: payment_pb2.PAYMENT_STATUS_CAPTURED,
    PaymentStatus.DECLINED: payment_pb2.PAYMENT_STATUS_DECLINED,
    PaymentStatus.REFUNDED: payment_pb2.PAYMENT_STATUS_REFUNDED,
}
_FAMILIES = {
    MethodFamily.CARD_TOKEN: payment_pb2.PAYMENT_METHOD_FAMILY_CARD_TOKEN,
    MethodFamily.CREDIT_CARD: payment_pb2.PAYMENT_METHOD_FAMILY_CREDIT_CARD,
    MethodFamily.DEBIT_CARD: payment_pb2.PAYMENT_METHOD_FAMILY_DEBIT_CARD,
    MethodFamily.PAYPAL: payment_pb2.PAYMENT_METHOD_FAMILY_PAYPAL,
}


def payment_to_proto(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        user_id=payment.user_id,
        status=_STATUSES[payment.status],
        amount=money_to_proto(payment.amount),
        payment_method=payment.method,
        provider_reference=payment.provider_reference or "",
        decline_reason=payment.decline_reason or "",
        method_family=(
            payment_pb2.PAYMENT_METHOD_FAMILY_UNSPECIFIED
            if payment.method_family is None
            else _FAMILIES[payment.method_family]
        ),
        created_at=timestamp(payment.created_at),
        refunded_at=timestamp(payment.refunded_at),
    )


class PaymentApi(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, payments: PaymentReader) -> None:
        self._payments = payments

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.GetPaymentResponse:
        payment = await handlers.get_payment(request.order_id, current_principal(), self._payments)
        return payment_pb2.GetPaymentResponse(payment=payment_to_proto(payment))
