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
    scheme: str = "http"
    # The path and query, as the request line names them.
    request_target: str = "/"


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
    disabled_reason: str = ""
    disabled_at: datetime | None = None
    consecutive_failures: int = 0
    previous_secret_expires_at: datetime | None = None
    pending_deliveries: int = 0
    parked_deliveries: int = 0


@dataclass(frozen=True, slots=True)
class RegisteredWebhook:
    """A new webhook and its signing secret, which is shown to the user this once."""

    webhook: Webhook
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    number: int
    started_at: datetime
    latency_ms: int
    status_code: int | None
    response_excerpt: str
    error: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one webhook: the same id and body on every attempt."""

    delivery_id: str
    webhook_id: str
    event_type: str
    order_id: str | None
    state: str
    created_at: datetime
    next_attempt_at: datetime | None
    last_error: str
    attempts: tuple[DeliveryAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[Delivery]
    next_page_token: str
