"""Wires the webhook context: the servicer for the gRPC component, the dispatcher consumer
for the workers, the sender (its own worker) and the purge of old deliveries. Production
and the tests use the same functions."""

import os
import socket
from collections.abc import Mapping
from datetime import timedelta

from ordermesh.webhook.v1 import webhook_pb2_grpc

from services.platform.messaging.consumer import Handlers
from services.platform.messaging.retention import Purge, purge_older_than
from services.platform.messaging.state import StateBoard
from services.platform.resources import Resources
from services.platform.server import Component
from services.platform.settings import Settings
from services.webhook.adapters.deliveries import PostgresDeliveryQueue, notifications
from services.webhook.adapters.http import CheckedPoster
from services.webhook.adapters.repository import PostgresWebhookRepository
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.api import SERVICE, WebhookApi
from services.webhook.consumers import DeliveryRecorder
from services.webhook.sender import WebhookSender
from services.webhook.settings import WebhookSettings

# Finished deliveries (and their attempts) are kept this long for the delivery log.
DELIVERY_LOG_RETENTION = timedelta(days=30)


def _cipher(resources: Resources) -> SecretCipher:
    return SecretCipher(resources.settings.require_key_encryption_secret())


def component(resources: Resources, env: Mapping[str, str] | None = None) -> Component:
    """``env`` defaults to the process environment, where the webhook settings are read."""
    settings = WebhookSettings.from_env(env)
    api = WebhookApi(
        PostgresWebhookRepository(resources.pool("webhook"), _cipher(resources)),
        DnsResolver(hosts_file=settings.hosts_file),
        settings,
    )
    return Component(
        service_name=SERVICE,
        register=lambda server: webhook_pb2_grpc.add_WebhookServiceServicer_to_server(api, server),
    )


def consumers(resources: Resources) -> dict[str, Handlers]:
    return {"webhook_dispatcher": DeliveryRecorder().handlers()}


def sender(
    resources: Resources,
    board: StateBoard | None = None,
    env: Mapping[str, str] | None = None,
) -> WebhookSender:
    settings = WebhookSettings.from_env(env)
    queue = PostgresDeliveryQueue(
        resources.pool("webhook"),
        _cipher(resources),
        lease=settings.lease,
        per_endpoint=settings.per_endpoint_concurrency,
        per_user=settings.per_user_concurrency,
        disable_after_failures=settings.disable_after_failures,
    )
    poster = CheckedPoster(
        DnsResolver(timeout_seconds=settings.connect_timeout, hosts_file=settings.hosts_file),
        allowed=settings.allows,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.total_timeout,
    )
    return WebhookSender(
        queue,
        poster,
        settings.retry,
        owner=f"{socket.gethostname()}:{os.getpid()}:{id(queue):x}",
        concurrency=settings.concurrency,
        poll_interval=settings.poll_interval,
        shutdown_grace=settings.total_timeout + 1,
        listener=notifications(resources.settings.database_url_for("webhook")),
        board=board,
        counts=queue.counts,
    )


def purges(settings: Settings) -> list[Purge]:
    """Finished deliveries (parked ones are kept until replayed or their webhook is
    deleted), what the dispatcher knows of orders untouched that long, and its inbox."""
    return [
        Purge(
            "webhook.deliveries (succeeded or failed)",
            "webhook",
            "DELETE FROM webhook.deliveries WHERE delivery_id = ANY(ARRAY("
            "SELECT delivery_id FROM webhook.deliveries WHERE state IN ('succeeded', 'failed')"
            " AND finished_at < now() - %(horizon)s LIMIT %(batch)s FOR UPDATE SKIP LOCKED))",
            DELIVERY_LOG_RETENTION,
        ),
        # As long as the inbox remembers events: a late or replayed event (the dead-letter
        # topic keeps 30 days) still finds the order it belongs to.
        Purge(
            "webhook.orders (untouched)",
            "webhook",
            purge_older_than("webhook.orders", "updated_at"),
            timedelta(seconds=settings.inbox_retention_seconds),
        ),
        Purge(
            "webhook.inbox",
            "webhook",
            purge_older_than("webhook.inbox", "processed_at"),
            timedelta(seconds=settings.inbox_retention_seconds),
        ),
    ]
