"""In-memory stand-ins for the webhook service's ports."""

import asyncio
import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.common.errors import FailedPrecondition
from services.webhook.domain.delivery import DeliveryState
from services.webhook.domain.model import Delivery, NewWebhook, Target, Webhook
from services.webhook.domain.ports import (
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryError,
    DeliveryList,
    NewDelivery,
    Response,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


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

    async def get(self, webhook_id: str) -> Webhook | None:
        found = self.store.rows.get(webhook_id)
        if found is None or found[0].user_id != self.user_id:
            return None
        return found[0]

    async def delete(self, webhook_id: str) -> bool:
        if await self.get(webhook_id) is None:
            return False
        del self.store.rows[webhook_id]
        return True

    async def rotate_secret(self, webhook_id: str, secret: str, grace: timedelta) -> Webhook | None:
        webhook = await self.get(webhook_id)
        if webhook is None:
            return None
        rotated = dataclasses.replace(
            webhook, previous_secret_expires_at=T0 + grace if grace else None
        )
        self.store.rows[webhook_id] = (rotated, secret)
        return rotated

    async def enable(self, webhook_id: str) -> Webhook | None:
        webhook = await self.get(webhook_id)
        if webhook is None:
            return None
        enabled = dataclasses.replace(webhook, active=True, disabled_reason="", disabled_at=None)
        self.store.rows[webhook_id] = (enabled, self.store.rows[webhook_id][1])
        return enabled

    async def add_delivery(self, webhook_id: str, delivery: NewDelivery) -> Delivery | None:
        if await self.get(webhook_id) is None:
            return None
        added = Delivery(
            delivery.delivery_id, webhook_id, delivery.event_type, None, "pending", T0, T0, ""
        )
        self.store.deliveries.append(added)
        self.store.bodies[delivery.delivery_id] = delivery.body
        return added

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryState | None, before: int | None, limit: int
    ) -> tuple[DeliveryList, int | None] | None:
        if await self.get(webhook_id) is None:
            return None
        numbered = [
            (position, delivery)
            for position, delivery in enumerate(self.store.deliveries, 1)
            if delivery.webhook_id == webhook_id
            and (state is None or delivery.state == state.value)
            and (before is None or position < before)
        ]
        numbered.reverse()
        page = numbered[:limit]
        more = len(numbered) > limit
        return [delivery for _, delivery in page], (page[-1][0] if more else None)

    async def replay(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        for index, delivery in enumerate(self.store.deliveries):
            if delivery.webhook_id == webhook_id and delivery.delivery_id == delivery_id:
                if delivery.state == "pending":
                    raise FailedPrecondition("the delivery is still pending")
                replayed = dataclasses.replace(delivery, state="pending", next_attempt_at=T0)
                self.store.deliveries[index] = replayed
                return replayed
        return None

    async def replay_parked(self, webhook_id: str) -> int | None:
        if await self.get(webhook_id) is None:
            return None
        count = 0
        for index, delivery in enumerate(self.store.deliveries):
            if delivery.webhook_id == webhook_id and delivery.state == "parked":
                self.store.deliveries[index] = dataclasses.replace(delivery, state="pending")
                count += 1
        return count


@dataclass
class FakeWebhooks:
    rows: dict[str, tuple[Webhook, str]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)

    @asynccontextmanager
    async def owned_by(self, user_id: str) -> AsyncIterator[FakeOwned]:
        yield FakeOwned(user_id, self)


@dataclass
class FakeResolver:
    addresses: dict[str, list[str]]
    asked: list[tuple[str, int]] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        try:
            return [str(ipaddress.ip_address(host))]  # as getaddrinfo answers a literal
        except ValueError:
            return self.addresses.get(host, [])


@dataclass(frozen=True)
class Finished:
    """One attempt the sender recorded."""

    delivery: ClaimedDelivery
    attempt: AttemptRecord
    outcome: AttemptOutcome


@dataclass
class FakeDeliveryQueue:
    """Hands out ``due`` deliveries in order. ``waiting`` ones become due when an attempt is
    recorded (as a later delivery of the same order does once the earlier one finished).
    ``claim_failures`` and ``finish_failures`` are raised, one per call, before anything
    else happens."""

    due: list[ClaimedDelivery] = field(default_factory=list)
    waiting: list[ClaimedDelivery] = field(default_factory=list)
    claim_failures: list[Exception] = field(default_factory=list)
    finish_failures: list[Exception] = field(default_factory=list)
    lease_kept: bool = True
    claims: list[int] = field(default_factory=list)
    claimed_at: list[float] = field(default_factory=list)
    finish_calls: list[Finished] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    owners: set[str] = field(default_factory=set)

    async def claim(self, owner: str, limit: int) -> list[ClaimedDelivery]:
        self.owners.add(owner)
        self.claims.append(limit)
        self.claimed_at.append(asyncio.get_running_loop().time())
        if self.claim_failures:
            raise self.claim_failures.pop(0)
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    async def finish(
        self, owner: str, claimed: ClaimedDelivery, attempt: AttemptRecord, outcome: AttemptOutcome
    ) -> bool:
        self.owners.add(owner)
        self.finish_calls.append(Finished(claimed, attempt, outcome))
        if self.finish_failures:
            raise self.finish_failures.pop(0)
        self.finished.append(Finished(claimed, attempt, outcome))
        self.due.extend(self.waiting)
        self.waiting.clear()
        return self.lease_kept

    async def release(self, owner: str, delivery_ids: list[str]) -> None:
        self.owners.add(owner)
        self.released.extend(delivery_ids)


@dataclass(frozen=True)
class Posted:
    target: Target
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePoster:
    """Answers each POST with the next of ``answers`` (a response, or an error to raise),
    then with a plain 200. While ``hold`` is set to an unset event, every POST waits for it,
    so attempts stay in flight."""

    answers: list[Response | DeliveryError] = field(default_factory=list)
    hold: asyncio.Event | None = None
    posted: list[Posted] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> Response:
        self.posted.append(Posted(target, dict(headers), body))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled.append(headers["X-Webhook-Id"])
            raise
        finally:
            self.in_flight -= 1
        answer = self.answers.pop(0) if self.answers else Response(200, {}, b"")
        if isinstance(answer, DeliveryError):
            raise answer
        return answer
