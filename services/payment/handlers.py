"""One function per payment query; the writes belong to the payment worker."""

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.payment.domain.model import Payment
from services.payment.domain.ports import PaymentReader


async def get_payment(order_id: str, principal: Principal, payments: PaymentReader) -> Payment:
    if not order_id:
        raise InvalidArgument("order_id is required", field="order_id")
    payment = await payments.by_order(order_id)
    if payment is None:
        raise NotFound("payment not found")
    principal.ensure_owner(payment.user_id, "payment")
    return payment
