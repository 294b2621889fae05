"""Wires the webhook context: the registration servicer for the gRPC component."""

from collections.abc import Mapping

from ordermesh.webhook.v1 import webhook_pb2_grpc

from services.platform.resources import Resources
from services.platform.server import Component
from services.webhook.adapters.repository import PostgresWebhookRepository
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.api import SERVICE, WebhookApi
from services.webhook.settings import WebhookSettings


def component(resources: Resources, env: Mapping[str, str] | None = None) -> Component:
    """``env`` defaults to the process environment, where the webhook settings are read."""
    api = WebhookApi(
        PostgresWebhookRepository(
            resources.pool("webhook"),
            SecretCipher(resources.settings.require_key_encryption_secret()),
        ),
        DnsResolver(),
        WebhookSettings.from_env(env),
    )
    return Component(
        service_name=SERVICE,
        register=lambda server: webhook_pb2_grpc.add_WebhookServiceServicer_to_server(api, server),
    )
