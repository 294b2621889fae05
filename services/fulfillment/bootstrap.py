"""Wires the fulfillment context: the shipment reader for the gRPC component and the
fulfillment worker."""

from ordermesh.fulfillment.v1 import fulfillment_pb2_grpc

from services.fulfillment.adapters.repository import PooledShipmentReader
from services.fulfillment.api import SERVICE, FulfillmentApi
from services.fulfillment.consumers import FulfillmentWorker
from services.platform.messaging.consumer import Handlers
from services.platform.resources import Resources
from services.platform.server import Component


def component(resources: Resources) -> Component:
    api = FulfillmentApi(PooledShipmentReader(resources.pool("fulfillment")))
    return Component(
        service_name=SERVICE,
        register=lambda server: fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(
            api, server
        ),
    )


def consumers(resources: Resources) -> dict[str, Handlers]:
    return {"fulfillment": FulfillmentWorker(resources.codec).handlers()}
