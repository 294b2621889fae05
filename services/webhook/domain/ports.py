"""What the webhook handlers and the sender need from the outside world."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services.webhook.domain.delivery import DeliveryState
from services.webhook.domain.model import Delivery, NewWebhook, Target, Webhook

# A name for list[Delivery] usable where a method named "list" shadows the builtin.
DeliveryList = list[Delivery]


class HostResolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's IP addresses as text; empty if it does not resolve."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    delivery_id: str
    event_id: str
    event_type: str
    body: bytes = field(repr=False)


class OwnedWebhooks(Protocol):
    """One user's webhooks, within one transaction. Methods naming a webhook return None
    (or False) when the user has no webhook with that id."""

    async def count(self) -> int: ...

    async def add(self, webhook: NewWebhook, secret: str) -> Webhook: ...

    async def list(self) -> list[Webhook]: ...

    async def get(self, webhook_id: str) -> Webhook | None: ...

    async def delete(self, webhook_id: str) -> bool: ...

    async def rotate_secret(self, webhook_id: str, secret: str, grace: timedelta) -> Webhook | None:
        """Makes ``secret`` the signing secret; the previous one keeps signing for
        ``grace`` (not at all if zero)."""

    async def enable(self, webhook_id: str) -> Webhook | None: ...

    async def add_delivery(self, webhook_id: str, delivery: NewDelivery) -> Delivery | None:
        """A delivery due now (the test event)."""

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryState | None, before: int | None, limit: int
    ) -> tuple[DeliveryList, int | None] | None:
        """Up to ``limit`` deliveries, newest first, recorded before position ``before``
        (all if None), with the position to continue from (None after the last)."""

    async def replay(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        """Schedules a finished delivery again, now; raises FailedPrecondition if it is
        still pending."""

    async def replay_parked(self, webhook_id: str) -> int | None:
        """Schedules every parked delivery again; how many."""


class WebhookRepository(Protocol):
    def owned_by(self, user_id: str) -> AbstractAsyncContextManager[OwnedWebhooks]:
        """The user's webhooks, serialised against the same user's other registrations so
        the per-user limit holds under concurrency."""


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A due delivery a sender holds the lease of, with what it needs to send it."""

    delivery_id: str
    webhook_id: str
    event_type: str
    order_id: str | None
    body: bytes = field(repr=False)
    # Attempts made so far (this one is attempts + 1), and in this round (since recorded
    # or replayed) with when the round started.
    attempts: int
    round_attempts: int
    round_started_at: datetime
    # None when the delivery cannot be sent (``problem`` says why).
    target: Target | None
    # The current secret first, then the previous one while its grace period lasts.
    secrets: tuple[str, ...] = field(repr=False)
    problem: str = ""
    # The trace the delivery continues (a W3C traceparent), if it was recorded in one.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    started_at: datetime
    latency_ms: int
    status_code: int | None
    response_excerpt: str
    error: str


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What becomes of a delivery after an attempt: its new state, when it is next due (if
    pending), and whether the attempt counts as a failure of the endpoint."""

    state: DeliveryState
    next_attempt_at: datetime | None
    error: str
    endpoint_failed: bool


class DeliveryQueue(Protocol):
    async def claim(self, owner: str, limit: int) -> list[ClaimedDelivery]:
        """Leases up to ``limit`` due deliveries to ``owner``: never one another sender holds,
        never one behind an unfinished earlier delivery of the same order to the same
        webhook, never more in flight to one webhook than the per-endpoint cap."""

    async def finish(
        self, owner: str, claimed: ClaimedDelivery, attempt: AttemptRecord, outcome: AttemptOutcome
    ) -> bool:
        """Records the attempt and the outcome, releasing the lease; False if the lease was
        lost meanwhile (another sender took the delivery over)."""

    async def release(self, owner: str, delivery_ids: list[str]) -> None:
        """Gives leases back unattempted (shutdown)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body_start: bytes = field(repr=False)


class Poster(Protocol):
    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> Response:
        """POSTs ``body``; raises :class:`DeliveryError` when there is no HTTP response."""


class DeliveryError(Exception):
    """No response: the address was refused, the connection failed or timed out.
    ``refused``: the SSRF check stopped it, so retrying cannot help."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
