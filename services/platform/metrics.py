"""Prometheus metrics of every ordermesh process: the metric objects, the helpers the
plumbing records with, and the loopback HTTP server that serves ``/metrics``.

Every metric lives in this module's registry, so one process (the local stack hosts many
components in one) exposes each series once. The objects are created at import; nothing
binds or connects until a composition root calls :func:`serving` with the port of its
settings (``ORDERMESH_METRICS_PORT``). Labels are bounded: service, method, consumer group,
topic, event type, outbox schema, status, route and tier; never an order or user id.
Domain code does not import this module (nor prometheus_client).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

log = logging.getLogger(__name__)

METRICS_HOST = "127.0.0.1"
REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds; from a cache hit to a slow database call.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# From an order created to shipped: the saga takes tens of milliseconds when healthy, up to
# a minute through outages.
_ORDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

grpc_server_requests = Counter(
    "ordermesh_grpc_server_requests",
    "gRPC calls handled, by service, method and status code.",
    ("service", "method", "code"),
    registry=REGISTRY,
)
grpc_server_handling_seconds = Histogram(
    "ordermesh_grpc_server_handling_seconds",
    "Time from a call's arrival to its status (a stream: its whole life).",
    ("service", "method"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

consumer_events = Counter(
    "ordermesh_consumer_events",
    "Events a consumer group settled: applied, duplicate (its inbox had it), dead_lettered,"
    " skipped (no handler).",
    ("group", "event", "outcome"),
    registry=REGISTRY,
)
consumer_handler_seconds = Histogram(
    "ordermesh_consumer_handler_seconds",
    "Duration of one batch transaction (inbox claim and handlers).",
    ("group",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
consumer_batch_size = Histogram(
    "ordermesh_consumer_batch_size",
    "Events in one applied batch.",
    ("group",),
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
consumer_retries = Counter(
    "ordermesh_consumer_retries",
    "Retries of a batch or an event: waiting out a dependency or after a handler failure.",
    ("group",),
    registry=REGISTRY,
)
consumer_dead_lettered = Counter(
    "ordermesh_consumer_dead_lettered",
    "Messages copied to the dead-letter topic.",
    ("group",),
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "ordermesh_consumer_lag",
    "Messages behind on this consumer's assigned partitions (high watermark - position).",
    ("group", "topic"),
    registry=REGISTRY,
)
consumer_blocked_seconds = Gauge(
    "ordermesh_consumer_blocked_seconds",
    "How long the current wait on a dependency has lasted; 0 when not blocked.",
    ("group", "dependency"),
    registry=REGISTRY,
)

relay_published = Counter(
    "ordermesh_relay_published",
    "Outbox rows acknowledged by Kafka.",
    ("schema",),
    registry=REGISTRY,
)
relay_publish_seconds = Histogram(
    "ordermesh_relay_publish_seconds",
    "Time to produce one fetched batch of outbox rows until Kafka's acknowledgements.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
relay_backlog = Gauge(
    "ordermesh_relay_backlog",
    "Unpublished outbox rows (refreshed every few seconds by the active relay).",
    ("schema",),
    registry=REGISTRY,
)
relay_oldest_age_seconds = Gauge(
    "ordermesh_relay_oldest_age_seconds",
    "Age of the oldest unpublished outbox row; 0 when none.",
    ("schema",),
    registry=REGISTRY,
)
relay_parked = Gauge(
    "ordermesh_relay_parked",
    "Outbox rows parked (never producible), awaiting replay or discard.",
    ("schema",),
    registry=REGISTRY,
)

order_status_transitions = Counter(
    "ordermesh_order_status_transitions",
    "Order status changes recorded by the order service.",
    ("from_status", "to_status"),
    registry=REGISTRY,
)
order_create_to_shipped_seconds = Histogram(
    "ordermesh_order_create_to_shipped_seconds",
    "From an order's creation to its SHIPPED status.",
    buckets=_ORDER_BUCKETS,
    registry=REGISTRY,
)
orders_oldest_in_status_seconds = Gauge(
    "ordermesh_orders_oldest_in_status_seconds",
    "Age of the oldest order still in each non-terminal status (since its last change).",
    ("status",),
    registry=REGISTRY,
)

webhook_deliveries = Counter(
    "ordermesh_webhook_deliveries",
    "Webhook delivery attempts by outcome: succeeded, retry, failed, parked.",
    ("outcome",),
    registry=REGISTRY,
)
webhook_attempt_seconds = Histogram(
    "ordermesh_webhook_attempt_seconds",
    "Duration of one webhook HTTP attempt.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
webhook_pending = Gauge(
    "ordermesh_webhook_pending", "Webhook deliveries not yet settled.", registry=REGISTRY
)
webhook_parked = Gauge(
    "ordermesh_webhook_parked", "Webhook deliveries parked for replay.", registry=REGISTRY
)

ratelimit_decisions = Counter(
    "ordermesh_ratelimit_decisions",
    "Rate-limit decisions by route, tier and outcome.",
    ("route", "tier", "outcome"),
    registry=REGISTRY,
)

gateway_sockets = Gauge(
    "ordermesh_gateway_sockets", "WebSocket connections open on this bridge.", registry=REGISTRY
)
gateway_messages = Counter(
    "ordermesh_gateway_messages",
    "Messages this bridge sent to its sockets (order updates, heartbeats, pongs).",
    registry=REGISTRY,
)
gateway_drops = Counter(
    "ordermesh_gateway_drops",
    "Sockets dropped as slow consumers (their send queue full).",
    registry=REGISTRY,
)

spans_exported = Counter(
    "ordermesh_spans_exported",
    "Finished spans by what became of them: sent (Zipkin took them) or dropped (the queue"
    " was full, Zipkin was unreachable or refused them).",
    ("outcome",),
    registry=REGISTRY,
)


def split_method(method: str) -> tuple[str, str]:
    """``/package.Service/Method`` as (``package.Service``, ``Method``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def observe_rpc(method: str, code: str, seconds: float) -> None:
    service, name = split_method(method)
    grpc_server_requests.labels(service, name, code).inc()
    grpc_server_handling_seconds.labels(service, name).observe(seconds)


def record_transition(from_status: str, to_status: str) -> None:
    order_status_transitions.labels(from_status, to_status).inc()


class _Blockages:
    """When each worker's current wait on a dependency began, read at scrape time."""

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def block(self, worker: str, dependency: str) -> None:
        key = (worker, dependency)
        with self._lock:
            for other in [k for k in self._since if k[0] == worker and k != key]:
                del self._since[other]
            if key in self._since:
                return
            self._since[key] = time.monotonic()
        consumer_blocked_seconds.labels(worker, dependency).set_function(lambda: self.seconds(key))

    def unblock(self, worker: str) -> None:
        with self._lock:
            for key in [k for k in self._since if k[0] == worker]:
                del self._since[key]

    def seconds(self, key: tuple[str, str]) -> float:
        with self._lock:
            since = self._since.get(key)
        return 0.0 if since is None else time.monotonic() - since


blockages = _Blockages()


@contextlib.contextmanager
def serving(port: int | None, host: str = METRICS_HOST) -> Iterator[int | None]:
    """Serves ``/metrics`` on ``host:port`` while the block runs (nothing when ``port`` is
    None); yields the bound port (``port`` 0 picks a free one)."""
    if port is None:
        yield None
        return
    # The *_created series double what is scraped and nothing here reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    bound = int(server.server_address[1])
    log.info("metrics served", extra={"url": f"http://{host}:{bound}/metrics"})
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
