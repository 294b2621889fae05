"""FulfillmentService over gRPC: the read side of shipments."""

from typing import Any

import grpc
from ordermesh.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

from services.fulfillment import handlers
from services.fulfillment.domain.model import Shipment
from services.fulfillment.domain.ports import ShipmentReader
from services.platform.convert import timestamp
from services.platform.interceptors import current_principal

SERVICE = "ordermesh.fulfillment.v1.FulfillmentService"

Context = grpc.aio.ServicerContext[Any, Any]


def shipment_to_proto(shipment: Shipment) -> fulfillment_pb2.Shipment:
    return fulfillment_pb2.Shipment(
        shipment_id=shipment.shipment_id,
        order_id=shipment.order_id,
        user_id=shipment.user_id,
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        shipped_at=timestamp(shipment.shipped_at),
        estimated_delivery=timestamp(shipment.estimated_delivery),
    )


class FulfillmentApi(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(self, shipments: ShipmentReader) -> None:
        self._shipments = shipments

    async def GetShipment(
        self, request: fulfillment_pb2.GetShipmentRequest, context: Context
    ) -> fulfillment_pb2.GetShipmentResponse:
        shipment = await handlers.get_shipment(
            request.order_id, current_principal(), self._shipments
        )
        return fulfillment_pb2.GetShipmentResponse(shipment=shipment_to_proto(shipment))
