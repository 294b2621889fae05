"""Wires the payment context: the payment reader for the gRPC component and the payment
processor (with the payment provider) for the workers."""

from ordermesh.payment.v1 import payment_pb2_grpc

from services.payment.adapters.repository import PooledPaymentReader
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.api import SERVICE, PaymentApi
from services.payment.consumers import PaymentProcessor
from services.payment.domain.ports import PaymentProvider
from services.platform.messaging.consumer import Handlers
from services.platform.resources import Resources
from services.platform.server import Component


def component(resources: Resources) -> Component:
    api = PaymentApi(PooledPaymentReader(resources.pool("payment")))
    return Component(
        service_name=SERVICE,
        register=lambda server: payment_pb2_grpc.add_PaymentServiceServicer_to_server(api, server),
    )


def payment_provider() -> PaymentProvider:
    """The provider payments go through; the simulated one until a real one is configured."""
    return SimulatedPaymentProvider()


def consumers(
    resources: Resources, *, provider: PaymentProvider | None = None
) -> dict[str, Handlers]:
    processor = PaymentProcessor(resources.codec, provider or payment_provider())
    return {"payment_processor": processor.handlers()}
