"""Webhook delivery against real Postgres (and Kafka for the dispatcher's consumer), sent by
real senders built by the webhook bootstrap to real HTTP receivers on 127.0.77.x: what the
dispatcher records, exactly-once and in-order sending by concurrent senders, the per-endpoint
cap, leases, notifications and a graceful stop. What becomes of an attempt's answer (retries,
parking, disabling, the address check) is tested in test_webhook_delivery_outcomes.py."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from devstack import kafka
from services.platform.db import Pool
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import (
    EventCodec,
    EventEnvelope,
    cloudevent_headers,
    kafka_headers,
)
from services.platform.messaging.consumer import EventConsumer
from services.platform.messaging.registry import TopicSpec
from services.webhook.adapters import deliveries
from services.webhook.adapters.deliveries import delivery_id_for
from services.webhook.adapters.http import CheckedPoster
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.consumers import DeliveryRecorder
from services.webhook.domain.delivery import DeliveryState, delivery_body
from services.webhook.domain.model import RegisteredWebhook
from services.webhook.domain.ports import AttemptOutcome, AttemptRecord
from tests.integration.webhook_harness import (
    Receiver,
    Reply,
    Request,
    WebhookContext,
    answering,
    eventually,
    fast_settings,
    never_answering,
    receivers,
    running,
    slow,
)
from tests.unit.test_codec import ADDRESS, SAMPLES

pytestmark = pytest.mark.integration

DISPATCHER = "itest.webhook-dispatcher"
AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LIFECYCLE_TYPES = (
    "order.created",
    "order.validated",
    "order.paid",
    "order.fulfilled",
    "order.shipped",
    "order.delivered",
)
SHIPPING = {"carrier": "DHL", "tracking_number": "JD014600006281234567"}


# --- the dispatcher ----------------------------------------------------------------------------


def lifecycle(order_id: str, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    """An order's events from creation to delivery, as the order service writes them."""
    owner = {"order_id": order_id, "user_id": user_id}

    def changed(version: int, status: str, previous: str, **details: str) -> dict[str, Any]:
        return {
            **owner,
            "status": status,
            "previous_status": previous,
            "reason": None,
            "details": details,
            "occurred_at": AT + timedelta(minutes=version),
            "version": version,
        }

    return [
        ("OrderCreated", {**SAMPLES["OrderCreated"], **owner, "created_at": AT}),
        ("OrderStatusChanged", changed(2, "VALIDATED", "PENDING")),
        ("OrderStatusChanged", changed(3, "PAID", "VALIDATED")),
        ("OrderStatusChanged", changed(4, "FULFILLED", "PAID")),
        ("OrderStatusChanged", changed(5, "SHIPPED", "FULFILLED", **SHIPPING)),
        ("OrderDelivered", {**owner, "delivered_at": AT + timedelta(minutes=6), "version": 6}),
    ]


def envelope(
    codec: EventCodec, name: str, record: dict[str, Any], event_id: uuid.UUID | None = None
) -> EventEnvelope:
    """The event as the consumer hands it over: encoded, decoded, with its headers."""
    headers = cloudevent_headers(
        event_id=event_id or uuid.uuid4(),
        event_name=name,
        source="/ordermesh/tests",
        time=datetime.now(UTC),
        subject=record["order_id"],
    )
    return codec.envelope_from(headers, codec.encode(name, record))


async def dispatch(pool: Pool, events: Sequence[EventEnvelope]) -> int:
    """The batch applied as the consumer applies it: its inbox rows and the recorder in one
    transaction, the recorder getting only the events new to the group; how many were."""
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "INSERT INTO webhook.inbox (consumer_group, event_id)"
            " SELECT %s, unnest(%s::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
            (DISPATCHER, [event.event_id for event in events]),
        )
        fresh = {row["event_id"] for row in await cursor.fetchall()}
        new = [event for event in events if event.event_id in fresh]
        if new:
            await DeliveryRecorder().on_events(new, conn)
        return len(new)


async def recorded(pool: Pool, *webhook_ids: str) -> dict[str, list[dict[str, Any]]]:
    """Each webhook's deliveries in the order they were recorded."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT delivery_id::text, webhook_id::text, event_id, event_type, order_id, body,"
            " state FROM webhook.deliveries WHERE webhook_id = ANY(%s::uuid[]) ORDER BY seq",
            (list(webhook_ids),),
        )
        found: dict[str, list[dict[str, Any]]] = {webhook_id: [] for webhook_id in webhook_ids}
        for row in await cursor.fetchall():
            found[row["webhook_id"]].append(row)
        return found


def money(minor: int) -> dict[str, str]:
    return {
        "amount": f"{minor // 100}.{minor % 100:02d}",
        "amount_minor": str(minor),
        "currency": "GBP",
    }


async def disable(pool: Pool, hook: RegisteredWebhook) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE webhook.webhooks SET active = false, disabled_reason = 'itest'"
            " WHERE webhook_id = %s",
            (hook.webhook.webhook_id,),
        )


async def test_the_dispatcher_records_an_orders_events_for_its_owners_subscribed_webhooks(
    webhooks: WebhookContext,
) -> None:
    user, stranger = f"itest-{uuid.uuid4()}", f"itest-{uuid.uuid4()}"
    everything = await webhooks.register("http://127.0.77.1/all", user_id=user)
    shipped_only = await webhooks.register(
        "http://127.0.77.1/shipped", user_id=user, events=("order.shipped",)
    )
    disabled = await webhooks.register("http://127.0.77.1/off", user_id=user)
    await disable(webhooks.pool, disabled)
    strangers = await webhooks.register("http://127.0.77.1/stranger", user_id=stranger)
    order_id = str(uuid.uuid4())
    codec = webhooks.resources.codec
    events = [envelope(codec, name, record) for name, record in lifecycle(order_id, user)]

    # In two batches, as a consumer may get them.
    assert await dispatch(webhooks.pool, events[:2]) == 2
    assert await dispatch(webhooks.pool, events[2:]) == 4

    ids = [hook.webhook.webhook_id for hook in (everything, shipped_only, disabled, strangers)]
    found = await recorded(webhooks.pool, *ids)
    assert tuple(row["event_type"] for row in found[everything.webhook.webhook_id]) == (
        LIFECYCLE_TYPES
    )
    assert [row["event_type"] for row in found[shipped_only.webhook.webhook_id]] == [
        "order.shipped"
    ]
    assert found[disabled.webhook.webhook_id] == []
    assert found[strangers.webhook.webhook_id] == []
    for hook, rows, sources in (
        (everything, found[everything.webhook.webhook_id], events),
        (shipped_only, found[shipped_only.webhook.webhook_id], [events[4]]),
    ):
        for row, event in zip(rows, sources, strict=True):
            assert row["event_id"] == event.event_id
            assert row["order_id"] == order_id
            assert row["state"] == "pending"
            assert row["delivery_id"] == delivery_id_for(event.event_id, hook.webhook.webhook_id)
            body = json.loads(bytes(row["body"]))
            assert body["id"] == row["delivery_id"]
            assert body["type"] == row["event_type"]
            assert body["created_at"] == event.time.isoformat().replace("+00:00", "Z")

    bodies = [json.loads(bytes(row["body"])) for row in found[everything.webhook.webhook_id]]
    assert [body["data"]["status"] for body in bodies] == [
        "pending",
        "validated",
        "paid",
        "fulfilled",
        "shipped",
        "delivered",
    ]
    assert [body["data"]["version"] for body in bodies] == [1, 2, 3, 4, 5, 6]
    shipped = bodies[4]["data"]
    assert shipped == {
        "order_id": order_id,
        "user_id": user,
        "status": "shipped",
        "items": [
            {"product_id": "sku-keyboard", "quantity": 1, "unit_price": money(8999)},
            {"product_id": "sku-mouse", "quantity": 2, "unit_price": money(2450)},
        ],
        "total_amount": money(13899),
        "payment_method": "credit_card",
        "shipping_address": ADDRESS,
        "metadata": {"channel": "web"},
        "created_at": "2026-03-01T12:30:15.123456Z",
        "updated_at": "2026-03-01T12:35:15.123456Z",
        **SHIPPING,
        "version": 5,
    }
    [shipped_copy] = found[shipped_only.webhook.webhook_id]
    assert json.loads(bytes(shipped_copy["body"]))["data"] == shipped
    assert bodies[5]["data"] == {
        **shipped,
        "status": "delivered",
        "updated_at": "2026-03-01T12:36:15.123456Z",
        "version": 6,
    }


async def test_a_repeated_or_stale_order_event_records_nothing(webhooks: WebhookContext) -> None:
    user = f"itest-{uuid.uuid4()}"
    hook = await webhooks.register("http://127.0.77.1/all", user_id=user)
    order_id = str(uuid.uuid4())
    steps = lifecycle(order_id, user)
    codec = webhooks.resources.codec
    events = [envelope(codec, name, record) for name, record in steps[:4]]
    assert await dispatch(webhooks.pool, events) == 4
    before = await recorded(webhooks.pool, hook.webhook.webhook_id)
    assert len(before[hook.webhook.webhook_id]) == 4

    # The same event again: the inbox drops it; and the recorder itself, handed applied
    # events again past the inbox, records nothing twice.
    assert await dispatch(webhooks.pool, [events[2]]) == 0
    async with webhooks.pool.connection() as conn, conn.transaction():
        await DeliveryRecorder().on_events([events[2], events[3]], conn)
    # A copy of an applied event under a new id (its version is not newer than the order's).
    name, record = steps[2]
    assert await dispatch(webhooks.pool, [envelope(codec, name, record)]) == 1
    assert await recorded(webhooks.pool, hook.webhook.webhook_id) == before

    async with webhooks.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT version, document->>'status' AS status FROM webhook.orders WHERE order_id = %s",
            (order_id,),
        )
        assert await cursor.fetchone() == {"version": 4, "status": "fulfilled"}


async def test_order_events_from_kafka_become_deliveries_sent_in_order(
    webhooks: WebhookContext,
) -> None:
    user = f"itest-{uuid.uuid4()}"
    suffix = uuid.uuid4().hex[:12]
    topic, dead_letters = f"test.{suffix}.orders", f"test.{suffix}.deadletter"
    bootstrap = kafka.bootstrap()
    await asyncio.to_thread(
        ensure_topics, bootstrap, [TopicSpec(topic, partitions=2), TopicSpec(dead_letters, 1)]
    )
    codec = webhooks.resources.codec
    try:
        async with receivers(answering()) as [receiver]:
            hook = await webhooks.register(receiver.url(), user_id=user)
            orders = [str(uuid.uuid4()) for _ in range(3)]
            producer = Producer({"bootstrap.servers": bootstrap})
            for name, record in [step for order in orders for step in lifecycle(order, user)]:
                headers = cloudevent_headers(
                    event_id=uuid.uuid4(),
                    event_name=name,
                    source="/ordermesh/tests",
                    time=datetime.now(UTC),
                    subject=record["order_id"],
                )
                as_sent: list[tuple[str, str | bytes | None]] = [*kafka_headers(headers)]
                producer.produce(
                    topic, key=record["order_id"], value=codec.encode(name, record), headers=as_sent
                )
            assert await asyncio.to_thread(producer.flush, 10) == 0
            consumer = EventConsumer(
                bootstrap,
                f"test.{suffix}.dispatcher",
                [topic],
                {},
                batch_handlers=DeliveryRecorder().handlers().batch,
                pool=webhooks.pool,
                codec=codec,
                inbox_schema="webhook",
                dead_letter_topic=dead_letters,
                poll_timeout=0.1,
                consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            )
            stop = asyncio.Event()
            consuming = asyncio.create_task(consumer.run(stop))
            try:
                async with running(webhooks.sender(fast_settings())):

                    async def all_sent() -> bool:
                        return len(receiver.requests) >= 18

                    await eventually(all_sent, within=30)
            finally:
                stop.set()
                await asyncio.wait_for(consuming, 30)
    finally:
        await asyncio.to_thread(delete_topics, bootstrap, [topic, dead_letters])

    assert len(receiver.requests) == 18
    by_order: dict[str, list[str]] = defaultdict(list)
    for request in receiver.requests:
        by_order[request.document["data"]["order_id"]].append(request.document["type"])
    assert by_order == {order: list(LIFECYCLE_TYPES) for order in orders}
    log = await webhooks.log(hook)
    assert {delivery.state for delivery in log} == {"succeeded"}


# --- senders ---------------------------------------------------------------------------------


def sent_per_order(receiver: Receiver) -> dict[str, list[str]]:
    """The delivery ids the receiver got for each order, in the order it got them."""
    seen: dict[str, list[str]] = defaultdict(list)
    for request in receiver.requests:
        seen[request.document["data"]["order_id"]].append(request.delivery_id)
    return dict(seen)


async def test_two_senders_send_every_delivery_once_and_each_orders_in_sequence(
    webhooks: WebhookContext,
) -> None:
    async def jittery(request: Request) -> Reply:
        await asyncio.sleep(random.uniform(0, 0.02))
        return Reply()

    async with receivers(*[jittery] * 4) as endpoints:
        hooks = [await webhooks.register(receiver.url()) for receiver in endpoints]
        expected: list[dict[str, list[str]]] = []
        for hook in hooks:
            orders = [str(uuid.uuid4()) for _ in range(10)]
            ids = await webhooks.record_many([(hook, order, 5) for order in orders])
            expected.append({order: ids[n * 5 : n * 5 + 5] for n, order in enumerate(orders)})
        every_id = [i for per_hook in expected for ids in per_hook.values() for i in ids]
        assert len(every_id) == 200
        env = fast_settings()
        leaseholders: set[str] = set()

        async def all_succeeded() -> bool:
            rows = (await webhooks.rows(*every_id)).values()
            leaseholders.update(row["lease_owner"] for row in rows if row["lease_owner"])
            return {row["state"] for row in rows} == {"succeeded"}

        async with running(webhooks.sender(env), webhooks.sender(env)):
            await eventually(all_succeeded, within=30, interval=0.01)

    assert len(leaseholders) == 2  # both senders took part
    sent = [request.delivery_id for receiver in endpoints for request in receiver.requests]
    assert Counter(sent) == Counter(every_id)
    for receiver, per_order in zip(endpoints, expected, strict=True):
        assert sent_per_order(receiver) == per_order
        for request in receiver.requests:
            assert request.document["id"] == request.delivery_id
            assert request.headers["x-webhook-attempt"] == "1"


async def test_a_slow_endpoint_holds_only_its_own_slots(webhooks: WebhookContext) -> None:
    async with receivers(slow(3.0), answering()) as [slow_endpoint, fast_endpoint]:
        slow_hook = await webhooks.register(slow_endpoint.url())
        fast_hook = await webhooks.register(fast_endpoint.url())
        slow_ids = await webhooks.record_for_orders(slow_hook, 4)
        fast_ids = await webhooks.record_for_orders(fast_hook, 10)
        env = fast_settings(PER_ENDPOINT_CONCURRENCY="2", TIMEOUT_SECONDS="5")
        started = time.monotonic()
        async with running(webhooks.sender(env)):
            await webhooks.until_states(fast_ids, "succeeded", within=2.5)
            fast_done = time.monotonic() - started
            assert set((await webhooks.states(*slow_ids)).values()) == {"pending"}
            await webhooks.until_states(slow_ids, "succeeded", within=15)

    assert fast_done < 2.5
    assert len(fast_endpoint.requests) == 10
    assert len(slow_endpoint.requests) == 4
    assert slow_endpoint.most_in_flight == 2


async def test_the_per_endpoint_cap_holds_when_senders_claim_at_the_same_moment(
    webhooks: WebhookContext,
) -> None:
    """Senders woken by one notification claim at the same moment, each through its own
    connection; between them they must not lease more than the endpoint's cap. Each round
    has a fresh endpoint with six due deliveries (six orders, so order holds none back) and
    three senders' claims at once; rounds are cheap, and the race is not hit every time."""
    cap, rounds = 2, 50
    queues = [webhooks.queue(fast_settings(PER_ENDPOINT_CONCURRENCY=str(cap))) for _ in range(3)]
    leased_per_round = []
    for _ in range(rounds):
        hook = await webhooks.register("http://127.0.77.1/capped")
        ids = set(await webhooks.record_for_orders(hook, 6))
        claims = await asyncio.gather(
            *(queue.claim(f"itest-claimer-{n}", 10) for n, queue in enumerate(queues))
        )
        leased_per_round.append(sum(d.delivery_id in ids for claim in claims for d in claim))
    over = [(n, leased) for n, leased in enumerate(leased_per_round) if leased != cap]
    assert over == [], f"rounds leasing other than the cap ({cap}) at once: {over}"


async def test_a_dead_senders_lease_expires_and_another_sender_sends_the_delivery_again(
    webhooks: WebhookContext,
) -> None:
    async with receivers(answering()) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        doomed = webhooks.queue(fast_settings(LEASE_SECONDS="2", TIMEOUT_SECONDS="1"))
        claimed_at = time.monotonic()
        claimed = await doomed.claim("itest-doomed", 50)
        [mine] = [delivery for delivery in claimed if delivery.delivery_id == delivery_id]
        await doomed.release("itest-doomed", [d.delivery_id for d in claimed if d is not mine])
        # It sends, then dies before recording the attempt.
        poster = CheckedPoster(
            DnsResolver(), allowed=lambda address: True, connect_timeout=1, total_timeout=5
        )
        assert mine.target is not None
        answer = await poster.post(mine.target, {"X-Webhook-Id": mine.delivery_id}, mine.body)
        assert answer.status == 200

        async with running(webhooks.sender(fast_settings())):
            await webhooks.until_states([delivery_id], "succeeded", within=10)

        # Come back to life, it cannot record its attempt: the lease is another's now.
        attempt = AttemptRecord(datetime.now(UTC), 5, 200, "ok", "")
        outcome = AttemptOutcome(DeliveryState.SUCCEEDED, None, "", endpoint_failed=False)
        assert not await doomed.finish("itest-doomed", mine, attempt, outcome)

    first, second = receiver.requests
    assert first.delivery_id == second.delivery_id == delivery_id
    assert first.body == second.body
    assert second.document["id"] == delivery_id
    assert second.arrived - claimed_at >= 2 - 0.05
    row = (await webhooks.rows(delivery_id))[delivery_id]
    assert (row["state"], row["attempts"], row["lease_owner"]) == ("succeeded", 1, None)


async def listening(pool: Pool) -> bool:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'ordermesh-webhook-listen'"
            " AND query = 'LISTEN webhook_deliveries'"
        )
        row = await cursor.fetchone()
        return row is not None and row["n"] > 0


async def test_a_recorded_delivery_wakes_a_sender_between_polls(webhooks: WebhookContext) -> None:
    async with receivers(answering()) as [receiver]:
        hook = await webhooks.register(receiver.url())
        async with running(webhooks.sender(fast_settings(POLL_SECONDS="30"))):
            await eventually(lambda: listening(webhooks.pool))
            delivery_id, latency = await webhooks.record_and_time(hook, receiver)

    assert receiver.ids() == [delivery_id]
    assert latency < 1.0


async def test_a_stopped_sender_finishes_its_attempt_in_flight_and_leaves_no_lease(
    webhooks: WebhookContext,
) -> None:
    async with receivers(never_answering) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        env = fast_settings(TIMEOUT_SECONDS="2", LEASE_SECONDS="5")
        sender = webhooks.sender(env)
        stop = asyncio.Event()
        run = asyncio.create_task(sender.run(stop))

        async def in_flight() -> bool:
            return receiver.in_flight == 1

        await eventually(in_flight, within=5)
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(run, 10)
        took = time.monotonic() - stopping

    assert took < 2 + 2
    row = (await webhooks.rows(delivery_id))[delivery_id]
    assert (row["lease_owner"], row["lease_expires_at"]) == (None, None)
    assert row["state"] == "pending"
    [attempt] = (await webhooks.log(hook))[0].attempts
    assert "timed out" in attempt.error


def waiting_on_a_lock(pool: Pool, statement_start: str) -> Callable[[], Awaitable[bool]]:
    """A check: a session of the webhook role waits on a lock, running ``statement_start…``."""

    async def waiting() -> bool:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND starts_with(query, %s)",
                (statement_start,),
            )
            row = await cursor.fetchone()
            return row is not None and row["n"] > 0

    return waiting


async def test_a_sender_stopped_while_it_cannot_record_its_attempt_gives_the_lease_back(
    webhooks: WebhookContext,
) -> None:
    """When an attempt outlasts the shutdown grace (here: recording it waits on a row lock),
    the sender gives its lease back instead of leaving it held until it expires."""
    async with receivers(never_answering) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        env = fast_settings(TIMEOUT_SECONDS="1", LEASE_SECONDS="30")
        stop = asyncio.Event()
        run = asyncio.create_task(webhooks.sender(env).run(stop))

        async def in_flight() -> bool:
            return receiver.in_flight == 1

        await eventually(in_flight, within=5)
        async with webhooks.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM webhook.deliveries WHERE delivery_id = %s FOR UPDATE",
                (delivery_id,),
            )
            stop.set()
            # Recording the attempt waits on the lock past the grace; then so does giving
            # the lease back, which the sender does instead.
            for statement in ("SET attempts", "SET lease_owner"):
                await eventually(
                    waiting_on_a_lock(webhooks.pool, f"UPDATE webhook.deliveries {statement}")
                )
        await asyncio.wait_for(run, 5)

    row = (await webhooks.rows(delivery_id))[delivery_id]
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert (row["lease_owner"], row["lease_expires_at"]) == (None, None)


async def test_a_delivery_recorded_while_the_one_before_it_finishes_does_not_wait_forever(
    webhooks: WebhookContext,
) -> None:
    """The race of the `waiting` flag: the dispatcher records the next delivery of an order
    (behind a pending one) in a transaction still open while a sender finishes that pending
    one. The sender's finish waits for the recorder, then releases the new delivery."""
    hook = await webhooks.register("http://127.0.77.1:9/race")
    order_id = str(uuid.uuid4())
    [first] = await webhooks.record(hook, order_id)
    queue = webhooks.queue(fast_settings())
    claimed = [d for d in await queue.claim("itest-race", 50) if d.delivery_id == first]
    assert claimed, "the first delivery is due"
    event_id = uuid.uuid4()
    second = deliveries.delivery_id_for(event_id, hook.webhook.webhook_id)
    body = delivery_body(second, "order.shipped", datetime.now(UTC), {"order_id": order_id})
    async with webhooks.pool.connection() as conn, conn.transaction():
        await deliveries.record_deliveries(
            conn,
            [(second, hook.webhook.webhook_id, str(event_id), "order.shipped", order_id, body)],
        )
        attempt = AttemptRecord(datetime.now(UTC), 5, 200, "ok", "")
        outcome = AttemptOutcome(DeliveryState.SUCCEEDED, None, "", endpoint_failed=False)
        finishing = asyncio.create_task(queue.finish("itest-race", claimed[0], attempt, outcome))
        await asyncio.sleep(0.3)
        assert not finishing.done(), "the finish waits for the recorder's lock on its row"
    assert await asyncio.wait_for(finishing, 5)
    rows = await webhooks.rows(first, second)
    assert rows[first]["state"] == "succeeded"
    assert (rows[second]["state"], rows[second]["waiting"]) == ("pending", False)
