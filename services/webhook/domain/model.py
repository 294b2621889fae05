"""Webhook registrations as the webhook service reasons about them."""

from dataclasses import dataclass, field
from datetime import datetime

KNOWN_EVENTS = (
    "order.created",
    "order.validated",
    "order.paid",
    "order.fulfilled",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
    "order.failed",
)
ALL_EVENTS = "*"
MAX_WEBHOOKS_PER_USER = 20
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class Target:
    """Where deliveries go: the URL and the host and port it names."""

    url: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NewWebhook:
    webhook_id: str
    user_id: str
    url: str
    events: tuple[str, ...]
    description: str


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: str
    user_id: str
    url: str
    events: tuple[str, ...]
    description: str
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RegisteredWebhook:
    """A new webhook and its signing secret, which is shown to the user this once."""

    webhook: Webhook
    secret: str = field(repr=False)
