"""What the webhook handlers need from the outside world."""

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from services.webhook.domain.model import NewWebhook, Webhook


class HostResolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's IP addresses as text; empty if it does not resolve."""


class OwnedWebhooks(Protocol):
    """One user's webhooks, within one transaction."""

    async def count(self) -> int: ...

    async def add(self, webhook: NewWebhook, secret: str) -> Webhook: ...

    async def list(self) -> list[Webhook]: ...

    async def delete(self, webhook_id: str) -> bool:
        """False if the user has no webhook with that id."""


class WebhookRepository(Protocol):
    def owned_by(self, user_id: str) -> AbstractAsyncContextManager[OwnedWebhooks]:
        """The user's webhooks, serialised against the same user's other registrations so
        the per-user limit holds under concurrency."""
