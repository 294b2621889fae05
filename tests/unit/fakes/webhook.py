"""In-memory stand-ins for the webhook service's ports."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.webhook.domain.model import NewWebhook, Webhook

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeOwned:
    user_id: str
    store: "FakeWebhooks"

    async def count(self) -> int:
        return len(await self.list())

    async def add(self, webhook: NewWebhook, secret: str) -> Webhook:
        stored = Webhook(
            webhook_id=webhook.webhook_id,
            user_id=self.user_id,
            url=webhook.url,
            events=webhook.events,
            description=webhook.description,
            active=True,
            created_at=T0,
        )
        self.store.rows[stored.webhook_id] = (stored, secret)
        return stored

    async def list(self) -> list[Webhook]:
        return [w for w, _ in self.store.rows.values() if w.user_id == self.user_id]

    async def delete(self, webhook_id: str) -> bool:
        found = self.store.rows.get(webhook_id)
        if found is None or found[0].user_id != self.user_id:
            return False
        del self.store.rows[webhook_id]
        return True


@dataclass
class FakeWebhooks:
    rows: dict[str, tuple[Webhook, str]] = field(default_factory=dict)

    @asynccontextmanager
    async def owned_by(self, user_id: str) -> AsyncIterator[FakeOwned]:
        yield FakeOwned(user_id, self)


@dataclass
class FakeResolver:
    addresses: dict[str, list[str]]
    asked: list[tuple[str, int]] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.addresses.get(host, [])
