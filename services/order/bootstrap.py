"""Wires the order context: the order store, the catalog client and the servicer for the
gRPC component, the validator and the status projector for the workers, and the purge of
expired idempotency keys; production and the tests use the same functions."""

from datetime import timedelta

from ordermesh.order.v1 import order_pb2_grpc

from services.order.adapters.catalog import InventoryCatalog
from services.order.adapters.outbox import order_outbox
from services.order.adapters.repository import PostgresOrderStore
from services.order.api import SERVICE, OrderApi
from services.order.consumers import OrderStatusProjector, OrderValidator
from services.platform.messaging.consumer import Handlers
from services.platform.messaging.retention import Purge, purge_older_than
from services.platform.resources import Resources
from services.platform.server import Component
from services.platform.settings import Settings


def order_store(resources: Resources) -> PostgresOrderStore:
    return PostgresOrderStore(
        resources.pool("order"),
        order_outbox(resources.codec),
        timedelta(seconds=resources.settings.idempotency_ttl_seconds),
    )


def catalog(resources: Resources) -> InventoryCatalog:
    return InventoryCatalog(resources.inventory_channel)


def component(resources: Resources) -> Component:
    api = OrderApi(order_store(resources), catalog(resources))
    return Component(
        service_name=SERVICE,
        register=lambda server: order_pb2_grpc.add_OrderServiceServicer_to_server(api, server),
    )


def consumers(resources: Resources) -> dict[str, Handlers]:
    return {
        "order_validator": OrderValidator(resources.codec, catalog(resources)).handlers(),
        "order_status_projector": OrderStatusProjector(resources.codec).handlers(),
    }


def purges(settings: Settings) -> list[Purge]:
    return [
        Purge(
            "orders.idempotency_keys (expired)",
            "order",
            purge_older_than("orders.idempotency_keys", "created_at"),
            timedelta(seconds=settings.idempotency_ttl_seconds),
        )
    ]
