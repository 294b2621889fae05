"""/metrics scraped over HTTP from real servers: the gRPC services behind the platform
layer, a relay and a consumer over real Postgres and Kafka, and the rate-limit service's own
process (ORDERMESH_METRICS_PORT from its environment, stopped with it on SIGTERM)."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from confluent_kafka import Producer
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh.vendor.envoy_rls.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from services.auth import bootstrap as auth_bootstrap
from services.inventory import bootstrap as inventory_bootstrap
from services.order import bootstrap as order_bootstrap
from services.order.adapters.funnel import refresh_status_ages
from services.platform import metrics
from services.platform.db import Pool
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import SCHEMA_DIR, EventCodec, EventEnvelope
from services.platform.messaging.consumer import EventConsumer, RetryPolicy
from services.platform.messaging.outbox import (
    add_messages_to_outbox,
    inbox_ddl,
    outbox_ddl,
    outbox_message,
)
from services.platform.messaging.registry import TopicSpec
from services.platform.messaging.relay import OutboxRelay
from services.platform.settings import Settings
from tests.integration.envoy_harness import running_ratelimit
from tests.integration.grpc_harness import GrpcStack, grpc_stack, rpc_error, sign_in
from tests.ports import reserve_port
from tests.unit.test_codec import SAMPLES

pytestmark = pytest.mark.integration

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Series:
    """Every sample ``/metrics`` on ``port`` serves, by name and labels."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


async def eventually_scraped(port: int, check: Any, within: float = 30.0) -> Series:
    """Scrapes until ``check(series)`` holds; the last scrape."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        series = await asyncio.to_thread(scrape, port)
        if check(series):
            return series
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check.__name__} not true within {within}s")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    with metrics.serving(0) as port:
        assert port is not None
        yield port


@pytest.fixture(scope="module")
async def stack(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    components = [
        auth_bootstrap.component,
        inventory_bootstrap.component,
        order_bootstrap.component,
    ]
    async with grpc_stack(settings, pool, components) as running:
        yield running


async def test_every_rpc_is_counted_by_service_method_and_code_and_timed(
    stack: GrpcStack, pool: Pool, metrics_port: int
) -> None:
    product = f"it-metrics-{uuid.uuid4().hex[:10]}"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency,"
            " stock) VALUES (%s, 'Metrics test', 1500, 'USD', 10)",
            (product,),
        )
    orders = order_pb2_grpc.OrderServiceStub(stack.channel)
    service = "ordermesh.order.v1.OrderService"
    before = await asyncio.to_thread(scrape, metrics_port)
    signed_in = await sign_in(stack.channel)
    created = order_pb2.CreateOrderRequest(payment_method="tok_visa")
    created.items.add(product_id=product, quantity=1)
    created.shipping_address.street = "1 Main St"
    created.shipping_address.city = "Springfield"
    created.shipping_address.zip = "62701"
    created.shipping_address.country = "US"
    order = await orders.CreateOrder(created, metadata=signed_in.metadata)
    await refresh_status_ages(pool)
    pending = value(
        await asyncio.to_thread(scrape, metrics_port),
        "ordermesh_orders_oldest_in_status_seconds",
        status="PENDING",
    )
    assert pending is not None and pending >= 0
    missing = orders.GetOrder(
        order_pb2.GetOrderRequest(order_id=str(uuid.uuid4())), metadata=signed_in.metadata
    )
    assert (await rpc_error(missing)).code() is grpc.StatusCode.NOT_FOUND
    await orders.CancelOrder(
        order_pb2.CancelOrderRequest(order_id=order.order.order_id), metadata=signed_in.metadata
    )
    after = await asyncio.to_thread(scrape, metrics_port)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    requests = "ordermesh_grpc_server_requests_total"
    assert grew(requests, service=service, method="CreateOrder", code="OK") == 1
    assert grew(requests, service=service, method="GetOrder", code="NOT_FOUND") == 1
    assert grew(requests, service=service, method="CancelOrder", code="OK") == 1
    assert grew(requests, service="ordermesh.auth.v1.AuthService", method="Login", code="OK") == 1
    timed = {"service": service, "method": "CreateOrder"}
    assert grew("ordermesh_grpc_server_handling_seconds_count", **timed) == 1
    assert grew("ordermesh_grpc_server_handling_seconds_bucket", **timed, le="+Inf") == 1
    cancelled = {"from_status": "PENDING", "to_status": "CANCELLED"}
    assert grew("ordermesh_order_status_transitions_total", **cancelled) == 1
    assert not any("user_id" in dict(labels) or "order_id" in dict(labels) for _, labels in after)


FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def bus(
    settings: Settings, migrated: None
) -> AsyncIterator[tuple[AsyncConnectionPool[Any], str, str, str]]:
    """A schema with an outbox and an inbox, and a topic and a dead-letter topic, all new."""
    suffix = uuid.uuid4().hex[:12]
    schema, topic, dead = f"metrics_{suffix}", f"test.{suffix}.orders", f"test.{suffix}.dlq"
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database_url, min_size=1, max_size=6, open=False
    )
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(outbox_ddl(schema))
        await conn.execute(inbox_ddl(schema))
    specs = [TopicSpec(topic, partitions=3), TopicSpec(dead, partitions=1)]
    await asyncio.to_thread(ensure_topics, settings.kafka_bootstrap, specs)
    try:
        yield pool, schema, topic, dead
    finally:
        await asyncio.to_thread(delete_topics, settings.kafka_bootstrap, [topic, dead])
        async with pool.connection() as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def test_relay_and_consumer_series_follow_what_they_did(
    bus: tuple[AsyncConnectionPool[Any], str, str, str], settings: Settings, metrics_port: int
) -> None:
    pool, schema, topic, dead = bus
    codec = EventCodec.from_directory(SCHEMA_DIR)
    group = f"test.{schema}.group"
    applied: list[EventEnvelope] = []

    async def apply(envelope: EventEnvelope, conn: Any) -> None:
        applied.append(envelope)

    bootstrap = settings.kafka_bootstrap
    relay = OutboxRelay(pool, {"bootstrap.servers": bootstrap}, [schema], poll_interval=0.2)
    consumer = EventConsumer(
        bootstrap,
        group,
        [topic],
        {"OrderCreated": apply},
        pool=pool,
        codec=codec,
        inbox_schema=schema,
        dead_letter_topic=dead,
        retry=FAST_RETRY,
        poll_timeout=0.1,
        consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )
    events: Mapping[str, int] = {"OrderCreated": 3, "OrderCancelled": 1}
    async with pool.connection() as conn, conn.transaction():
        for name, count in events.items():
            for _ in range(count):
                order_id = str(uuid.uuid4())
                message = outbox_message(
                    codec,
                    topic=topic,
                    key=order_id,
                    event_name=name,
                    record={**SAMPLES[name], "order_id": order_id},
                    source="/ordermesh/tests",
                )
                await add_messages_to_outbox(conn, schema, [message])
    poison = Producer({"bootstrap.servers": bootstrap})
    poison.produce(topic, b"\x00not avro", key=b"poison")
    poison.flush(10)

    def settled(series: Series) -> bool:
        return (
            value(series, "ordermesh_relay_published_total", schema=schema) == 4
            and value(series, "ordermesh_relay_backlog", schema=schema) == 0
            and value(series, "ordermesh_consumer_dead_lettered_total", group=group) == 1
            and value(series, "ordermesh_consumer_lag", group=group, topic=topic) == 0
            and len(applied) == 3
        )

    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        series = await eventually_scraped(metrics_port, settled, within=60)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    events_total = "ordermesh_consumer_events_total"
    assert value(series, events_total, group=group, event="OrderCreated", outcome="applied") == 3
    assert value(series, events_total, group=group, event="OrderCancelled", outcome="skipped") == 1
    assert value(series, events_total, group=group, event="unknown", outcome="dead_lettered") == 1
    assert (value(series, "ordermesh_consumer_batch_size_sum", group=group) or 0) == 3
    assert (value(series, "ordermesh_consumer_handler_seconds_count", group=group) or 0) >= 1
    assert value(series, "ordermesh_consumer_retries_total", group=group) == 0
    assert value(series, "ordermesh_relay_parked", schema=schema) == 0
    assert value(series, "ordermesh_relay_oldest_age_seconds", schema=schema) == 0
    assert (value(series, "ordermesh_relay_publish_seconds_count") or 0) >= 1
    # Once stopped, a relay no longer reports the backlog of outboxes it does not publish.
    after = await asyncio.to_thread(scrape, metrics_port)
    assert value(after, "ordermesh_relay_backlog", schema=schema) is None


async def test_the_rate_limit_process_serves_its_decisions_until_sigterm(
    servers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = reserve_port()
    monkeypatch.setenv("ORDERMESH_METRICS_PORT", str(port))
    user = uuid.uuid4().hex
    request = rls_pb2.RateLimitRequest(domain="ordermesh")
    descriptor = request.descriptors.add()
    entries = {
        "method": "/ordermesh.order.v1.OrderService/GetOrder",
        "remote_address": "10.9.8.7",
        "user": user,
        "tier": "premium",
    }
    for key, text in entries.items():
        descriptor.entries.add(key=key, value=text)
    with running_ratelimit(tmp_path, overrides="") as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            for _ in range(2):
                await stub.ShouldRateLimit(request)
        series = await asyncio.to_thread(scrape, port)
        assert (
            value(
                series,
                "ordermesh_grpc_server_requests_total",
                service="envoy.service.ratelimit.v3.RateLimitService",
                method="ShouldRateLimit",
                code="OK",
            )
            == 2
        )
        decided = {"tier": "premium", "outcome": "allowed"}
        assert value(series, "ordermesh_ratelimit_decisions_total", route="read", **decided) == 2
    with pytest.raises(OSError):
        scrape(port)
