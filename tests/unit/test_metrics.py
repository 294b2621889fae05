"""The metrics module: settings, the /metrics server, and the helpers the plumbing records
with."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from gateway.settings import GatewaySettings
from ratelimit.settings import RateLimitSettings
from services.order.adapters.funnel import record_transitions
from services.order.domain.events import OrderCancelled, OrderStatusChanged
from services.order.domain.model import OrderStatus
from services.platform import metrics
from services.platform.interceptors import metered
from services.platform.messaging.state import StateBoard
from services.platform.settings import Settings, SettingsError
from tests.unit.test_order_lifecycle import ORDER


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_no_metrics_port_means_no_metrics_server() -> None:
    assert Settings.from_env({}).metrics_port is None
    assert Settings.from_env({"ORDERMESH_METRICS_PORT": "  "}).metrics_port is None
    assert Settings.from_env({"ORDERMESH_METRICS_PORT": "59107"}).metrics_port == 59107


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "9100.5"])
def test_a_malformed_metrics_port_fails_fast_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="ORDERMESH_METRICS_PORT"):
        Settings.from_env({"ORDERMESH_METRICS_PORT": value})


def test_metrics_listen_on_loopback_unless_a_host_address_is_given() -> None:
    assert Settings.from_env({}).metrics_host == "127.0.0.1"
    assert Settings.from_env({"ORDERMESH_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
    with pytest.raises(SettingsError, match="ORDERMESH_METRICS_HOST must be an IP address"):
        Settings.from_env({"ORDERMESH_METRICS_HOST": "everywhere"})


def test_every_composition_root_reads_the_metrics_port() -> None:
    env = {"ORDERMESH_METRICS_PORT": "59111"}
    assert GatewaySettings.from_env(env).platform.metrics_port == 59111
    assert RateLimitSettings.from_env(env).platform.metrics_port == 59111


@pytest.fixture
def served() -> Iterator[int]:
    with metrics.serving(0) as port:
        assert port is not None
        yield port


def test_serving_nothing_without_a_port() -> None:
    with metrics.serving(None) as port:
        assert port is None


def test_metrics_are_served_on_loopback_and_stop_with_the_block() -> None:
    with metrics.serving(0) as port:
        assert port is not None
        metrics.relay_published.labels("unit_served").inc(3)
        text = scrape(port)
        assert 'ordermesh_relay_published_total{schema="unit_served"} 3.0' in text
        assert "_created" not in text
    with pytest.raises(OSError):
        scrape(port)


def test_rpc_observations_split_the_method_into_service_and_method() -> None:
    labels = {"service": "ordermesh.unit.v1.Thing", "method": "Get"}
    before = sample("ordermesh_grpc_server_requests_total", {**labels, "code": "NOT_FOUND"})
    metrics.observe_rpc("/ordermesh.unit.v1.Thing/Get", "NOT_FOUND", 0.003)
    after = sample("ordermesh_grpc_server_requests_total", {**labels, "code": "NOT_FOUND"})
    assert after == before + 1
    assert sample("ordermesh_grpc_server_handling_seconds_count", labels) >= 1
    assert sample("ordermesh_grpc_server_handling_seconds_bucket", {**labels, "le": "0.005"}) >= 1


def test_a_blockage_lasts_until_unblocked_and_then_reads_zero() -> None:
    board = StateBoard("unit")
    labels = {"group": "unit-group", "dependency": "postgres"}
    board.block("unit-group", "postgres", "connection refused")
    time.sleep(0.05)
    board.block("unit-group", "postgres", "connection refused again")
    assert sample("ordermesh_consumer_blocked_seconds", labels) >= 0.05
    board.unblock("unit-group")
    assert sample("ordermesh_consumer_blocked_seconds", labels) == 0.0


def test_a_new_dependency_replaces_the_previous_wait() -> None:
    board = StateBoard("unit")
    board.block("unit-switch", "postgres", "down")
    board.block("unit-switch", "kafka", "down")
    assert (
        sample(
            "ordermesh_consumer_blocked_seconds", {"group": "unit-switch", "dependency": "postgres"}
        )
        == 0.0
    )
    board.unblock("unit-switch")


class _Context:
    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None

    def code(self) -> grpc.StatusCode | None:
        return self._code


class _Server:
    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[object, object]] = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[object, object]]
    ) -> None:
        self.handlers.update(method_handlers)


async def test_metered_handlers_count_their_calls_and_codes() -> None:
    async def answer(request: object, context: object) -> str:
        if request == "boom":
            raise RuntimeError("boom")
        return "ok"

    server = _Server()
    handler: grpc.RpcMethodHandler[object, object] = grpc.unary_unary_rpc_method_handler(answer)
    metered(server).add_registered_method_handlers("unit.Metered", {"Call": handler})
    wrapped: Any = server.handlers["Call"].unary_unary
    assert wrapped is not None
    labels = {"service": "unit.Metered", "method": "Call"}
    assert await wrapped("hi", _Context()) == "ok"
    with pytest.raises(RuntimeError):
        await wrapped("boom", _Context())
    await asyncio.sleep(0)
    assert sample("ordermesh_grpc_server_requests_total", {**labels, "code": "OK"}) == 1
    assert sample("ordermesh_grpc_server_requests_total", {**labels, "code": "UNKNOWN"}) == 1


def test_the_funnel_counts_transitions_and_time_to_shipment() -> None:
    created = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    paid = replace(ORDER, created_at=created, status=OrderStatus.FULFILLED)
    shipped = replace(paid, status=OrderStatus.SHIPPED)
    cancelled = replace(ORDER, status=OrderStatus.CANCELLED)
    moved = {"from_status": "FULFILLED", "to_status": "SHIPPED"}
    exits = {"from_status": "PENDING", "to_status": "CANCELLED"}
    before = (
        sample("ordermesh_order_status_transitions_total", moved),
        sample("ordermesh_order_status_transitions_total", exits),
        sample("ordermesh_order_create_to_shipped_seconds_bucket", {"le": "2.5"}),
        sample("ordermesh_order_create_to_shipped_seconds_bucket", {"le": "1.0"}),
    )
    record_transitions(
        [
            OrderStatusChanged(shipped, OrderStatus.FULFILLED, "shipped", created),
            OrderCancelled(cancelled, OrderStatus.PENDING, "changed my mind"),
        ],
        now=created + timedelta(seconds=1.5),
    )
    after = (
        sample("ordermesh_order_status_transitions_total", moved),
        sample("ordermesh_order_status_transitions_total", exits),
        sample("ordermesh_order_create_to_shipped_seconds_bucket", {"le": "2.5"}),
        sample("ordermesh_order_create_to_shipped_seconds_bucket", {"le": "1.0"}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 0]
