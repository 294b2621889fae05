"""Wires the order context: the order store, the catalog client, the live feed and the
servicer for the gRPC component; the validator, the status projector and the live-feed
writer for the workers; and the purge of expired idempotency keys. Production and the tests
use the same functions."""

import asyncio
from datetime import timedelta

from ordermesh.order.v1 import order_pb2_grpc

from services.order.adapters.catalog import InventoryCatalog
from services.order.adapters.funnel import watch_status_ages
from services.order.adapters.live_feed import RedisLiveFeed
from services.order.adapters.outbox import order_outbox
from services.order.adapters.repository import PostgresOrderStore
from services.order.api import SERVICE, OrderApi
from services.order.consumers import LiveFeedWriter, OrderStatusProjector, OrderValidator
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


def live_feed(settings: Settings) -> RedisLiveFeed:
    return RedisLiveFeed(
        settings.redis_url,
        horizon_entries=settings.live_feed_horizon_entries,
        horizon=timedelta(seconds=settings.live_feed_horizon_seconds),
    )


def component(resources: Resources) -> Component:
    api = OrderApi(
        order_store(resources),
        catalog(resources),
        live_feed(resources.settings),
        heartbeat_seconds=resources.settings.watch_heartbeat_seconds,
    )
    return Component(
        service_name=SERVICE,
        register=lambda server: order_pb2_grpc.add_OrderServiceServicer_to_server(api, server),
    )


def consumers(resources: Resources) -> dict[str, Handlers]:
    return {
        "order_validator": OrderValidator(resources.codec, catalog(resources)).handlers(),
        "order_status_projector": OrderStatusProjector(resources.codec).handlers(),
        "order_live_feed": LiveFeedWriter(live_feed(resources.settings)).handlers(),
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


async def status_ages(resources: Resources, stop: asyncio.Event) -> None:
    """The oldest-order-in-status gauge, refreshed by the process that hosts the status
    projector (one such query per replica of it, every few seconds)."""
    await watch_status_ages(resources.pool("order"), stop)
