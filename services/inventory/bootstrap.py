"""Wires the inventory context: the catalog servicer for the gRPC component and the
inventory manager for the workers."""

from ordermesh.inventory.v1 import inventory_pb2_grpc

from services.inventory.adapters.repository import CatalogRepository
from services.inventory.api import PUBLIC_METHODS, SERVICE, InventoryApi
from services.inventory.consumers import InventoryManager
from services.platform.messaging.consumer import Handlers
from services.platform.resources import Resources
from services.platform.server import Component


def component(resources: Resources) -> Component:
    api = InventoryApi(CatalogRepository(resources.pool("inventory")))
    return Component(
        service_name=SERVICE,
        register=lambda server: inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
            api, server
        ),
        public_methods=PUBLIC_METHODS,
    )


def consumers(resources: Resources) -> dict[str, Handlers]:
    return {"inventory_manager": InventoryManager(resources.codec).handlers()}
