"""One trace per order, end to end: an order created through the public port and driven to
SHIPPED is one trace in the stack's Zipkin, holding spans from the API, the relay, every
worker of the saga and the status projector, each after its cause; the create's log line
carries the trace id. The order's webhook deliveries and live-feed pushes continue it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from devstack import stack
from devstack.paths import log_path
from devstack.ports import Ports
from tests.e2e.conftest import User, order_body, wait_for_order
from tests.e2e.test_watch_orders import watching
from tests.e2e.test_webhooks import Receiver, register, wait_for_deliveries
from tests.e2e.test_webhooks import receiver as receiver  # noqa: PLC0414 (the fixture)

pytestmark = pytest.mark.e2e

SHIPPED = "ORDER_STATUS_SHIPPED"
CREATE = "ordermesh.order.v1.OrderService/CreateOrder"
# Zipkin's service names of the spans an order's trace must hold (consumer groups are named
# without their "ordermesh." prefix).
SAGA_SERVICES = {
    "envoy",
    "api",
    "relay",
    "order-validator",
    "payment-processor",
    "inventory-manager",
    "fulfillment",
    "order-status-projector",
}
# Each hop of the saga: the consumer group and the event it handles, in causal order.
SAGA = [
    ("order-validator", "OrderCreated"),
    ("payment-processor", "OrderValidated"),
    ("inventory-manager", "PaymentProcessed"),
    ("order-status-projector", "OrderFulfilled"),
    ("fulfillment", "OrderReadyToShip"),
    ("order-status-projector", "OrderShipped"),
]


@pytest.fixture
def zipkin() -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{Ports.from_env().zipkin}", timeout=10, trust_env=False
    ) as client:
        if client.get("/health").status_code != 200:
            pytest.fail("the stack's Zipkin is not up")
        yield client


def access_log_lines(trace_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The API's access-log lines of calls in trace ``trace_id``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            entry
            for line in stack.log_file("api").read_text(errors="replace").splitlines()
            if trace_id in line
            and (entry := json.loads(line)).get("message") == "rpc"
            and entry.get("trace_id") == trace_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def edge_access_log_lines(trace_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Envoy's access-log lines of requests in trace ``trace_id``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            entry
            for line in log_path("envoy-access").read_text(errors="replace").splitlines()
            if trace_id in line and (entry := json.loads(line)).get("trace_id") == trace_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def only_trace_of(zipkin: httpx.Client, order_id: str, timeout: float = 20.0) -> str:
    """The id of the one trace holding spans of ``order_id``'s events, once its SHIPPED
    status has been projected (spans arrive in batches, each process sending every half
    second)."""
    deadline = time.monotonic() + timeout
    trace_ids: set[str] = set()
    while time.monotonic() < deadline:
        found = zipkin.get(
            "/api/v2/traces",
            params={
                "annotationQuery": f"messaging.kafka.message.key={order_id}",
                "lookback": 3_600_000,
                "limit": 100,
            },
        )
        assert found.status_code == 200, found.text
        traces = found.json()
        trace_ids = {span["traceId"] for trace in traces for span in trace}
        if any(_handled(trace, "OrderShipped") for trace in traces):
            break
        time.sleep(0.5)
    assert len(trace_ids) == 1, trace_ids
    return trace_ids.pop()


def spans_of(zipkin: httpx.Client, trace_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The trace's spans once Zipkin has them all (spans arrive in batches, each process
    sending every half second)."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = zipkin.get(f"/api/v2/trace/{trace_id}")
        if answer.status_code == 200:
            spans = answer.json()
            ids = {span["id"] for span in spans}
            whole = all(span.get("parentId", span["id"]) in ids for span in spans)
            if whole and services(spans) >= SAGA_SERVICES and _handled(spans, "OrderShipped"):
                return spans
        time.sleep(0.5)
    raise AssertionError(f"trace {trace_id} incomplete: services {sorted(services(spans))}")


def services(spans: list[dict[str, Any]]) -> set[str]:
    return {span["localEndpoint"]["serviceName"] for span in spans}


def _handled(spans: list[dict[str, Any]], event: str) -> bool:
    return any(span["name"] == handling(event) for span in spans)


def handling(event: str) -> str:
    """The name of a consumer's span handling ``event`` as Zipkin shows it (lower case)."""
    return f"handle {event}".lower()


def test_an_order_is_one_trace_from_its_create_to_shipped(
    http: httpx.Client, user: User, zipkin: httpx.Client
) -> None:
    # A public caller's trace context is not continued: the trace starts at the edge.
    chosen = "00-11111111111111111111111111111111-2222222222222222-01"
    created = http.post(
        "/api/v1/orders",
        json=order_body(),
        headers={**user.headers, "traceparent": chosen, "b3": "1111-2222-1"},
    )
    assert created.status_code == 200, created.text
    order_id = created.json()["order_id"]
    wait_for_order(http, user, order_id, lambda order: order["status"] == SHIPPED)

    # Zipkin finds this order in one trace only.
    trace_id = only_trace_of(zipkin, order_id)

    # That trace's id is in the create's log line.
    assert trace_id != "11111111111111111111111111111111"
    lines = access_log_lines(trace_id)
    (line,) = [line for line in lines if line["method"] == "/" + CREATE]
    assert line["code"] == "OK"
    assert line["user_id"] == user.user_id
    # And in the edge's access-log line of the call.
    (edge_line,) = edge_access_log_lines(trace_id)
    assert edge_line["method"] == "POST" and edge_line["path"] == "/api/v1/orders"
    assert edge_line["status"] == 200

    spans = spans_of(zipkin, trace_id)
    assert {span["traceId"] for span in spans} == {trace_id}
    by_id = {span["id"]: span for span in spans}

    # One root, Envoy's: every other span's parent is in the trace and began no later than
    # it (one machine, one clock).
    roots = [span for span in spans if "parentId" not in span]
    assert len(roots) == 1, roots
    assert roots[0]["localEndpoint"]["serviceName"] == "envoy", roots
    create = next(span for span in spans if span["name"] == CREATE.lower())
    assert create["localEndpoint"]["serviceName"] == "api"
    assert create["kind"] == "SERVER"
    for span in spans:
        if "parentId" in span:
            parent = by_id.get(span["parentId"])
            assert parent is not None, f"{span['name']} has a parent outside the trace"
            assert span["timestamp"] >= parent["timestamp"], (span["name"], parent["name"])

    # The saga's hops, each handled after the relay published it, in causal order: the path
    # from the projector's SHIPPED span up to the root passes every hop and the create.
    chain = ancestry(by_id, hop_span(spans, "order-status-projector", "OrderShipped"))
    names = [(span["localEndpoint"]["serviceName"], span["name"]) for span in chain]
    handled = [(service, name) for service, name in reversed(names) if name.startswith("handle ")]
    assert handled == [(service, handling(event)) for service, event in SAGA], names
    for index, span in enumerate(chain[:-1]):
        if span["name"].startswith("handle "):
            publisher = chain[index + 1]
            assert publisher["localEndpoint"]["serviceName"] == "relay", names
            assert publisher["kind"] == "PRODUCER"
            assert span["kind"] == "CONSUMER"
    assert create in chain, names
    assert chain[-1] is roots[0], names
    timestamps = [span["timestamp"] for span in chain]
    assert timestamps == sorted(timestamps, reverse=True)


def hop_span(spans: list[dict[str, Any]], service: str, event: str) -> dict[str, Any]:
    for span in spans:
        if span["localEndpoint"]["serviceName"] == service and span["name"] == handling(event):
            return span
    raise AssertionError(f"no span of {service} handling {event}")


def ancestry(by_id: dict[str, dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    """``span``, its parent, its parent's parent, ... up to the root."""
    chain = [span]
    while "parentId" in chain[-1]:
        chain.append(by_id[chain[-1]["parentId"]])
    return chain


async def test_webhook_attempts_and_live_pushes_continue_the_orders_trace(
    http: httpx.Client,
    user: User,
    zipkin: httpx.Client,
    receiver: Receiver,
    channel: grpc.aio.Channel,
) -> None:
    webhook = register(http, user, receiver.url("/hook"))
    async with watching(channel, user) as watcher:
        created = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
        assert created.status_code == 200, created.text
        order_id = created.json()["order_id"]
        await watcher.until(lambda w: "SHIPPED" in w.statuses(order_id))
    delivered = await asyncio.to_thread(
        wait_for_deliveries,
        http,
        user,
        webhook["webhook_id"],
        lambda found: len(found) >= 5 and all(d["state"].endswith("SUCCEEDED") for d in found),
    )

    trace_id = await asyncio.to_thread(only_trace_of, zipkin, order_id)
    deadline = time.monotonic() + 20
    while True:
        spans = zipkin.get(f"/api/v2/trace/{trace_id}").json()
        attempts = [s for s in spans if s["localEndpoint"]["serviceName"] == "webhook-sender"]
        pushes = [s for s in spans if s["name"] == "live-feed push"]
        by_id = {span["id"]: span for span in spans}
        complete = all(span.get("parentId", span["id"]) in by_id for span in spans)
        if complete and len(attempts) >= len(delivered) and len(pushes) >= 5:
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)

    # Every delivery of the order is one attempt span (each a 200), under the dispatcher's
    # span of the event it tells about.
    assert len(attempts) == len(delivered), [s["name"] for s in attempts]
    for attempt in attempts:
        assert attempt["kind"] == "CLIENT"
        assert attempt["tags"]["http.response.status_code"] == "200"
        assert "error" not in attempt["tags"]
        parent = by_id[attempt["parentId"]]
        assert parent["localEndpoint"]["serviceName"] == "webhook-dispatcher"
        assert parent["timestamp"] <= attempt["timestamp"]
    assert {a["tags"]["ordermesh.webhook.delivery_id"] for a in attempts} == {
        d["delivery_id"] for d in delivered
    }

    # The watcher's pushes (created, validated, paid, fulfilled, shipped) continue the live
    # feed's span of each status.
    statuses = {push["tags"]["ordermesh.order.status"] for push in pushes}
    assert {"PENDING", "VALIDATED", "PAID", "FULFILLED", "SHIPPED"} <= statuses, statuses
    for push in pushes:
        parent = by_id[push["parentId"]]
        assert parent["localEndpoint"]["serviceName"] == "order-live-feed"
        assert push["localEndpoint"]["serviceName"] == "api"
