"""Envoy starts the trace at the edge, for real: the edge config rendered with tracing, in front
of a small gRPC upstream that records the metadata it is called with, sending spans to a real
Zipkin. The upstream gets a W3C ``traceparent`` (beside B3) naming Envoy's span, and Zipkin's
API returns Envoy's spans of that trace. With Zipkin unreachable, Envoy serves all the same.

The stack's Zipkin is used when it runs (``make test`` starts it); otherwise one is started in
a run dir of its own and stopped at the end.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from devstack import edge, zipkin
from tests.integration.devstack_child import drive, eventually, isolated_env
from tests.integration.envoy_harness import running_envoy
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

METHOD = "/ordermesh.inventory.v1.InventoryService/ListProducts"
TRACEPARENT = re.compile(
    r"00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
)

DRIVER = """
import json, sys
from devstack import zipkin

if sys.argv[1] == "down":
    print(json.dumps({"stopped": zipkin.stop()}))
    raise SystemExit(0)
zipkin.start()
print(json.dumps({"spans_url": zipkin.spans_url()}))
"""


class _Recorder(grpc.GenericRpcHandler):
    """Answers every unary call with an empty message, keeping the metadata that calls of
    ``METHOD`` came with (Envoy's own JWKS fetches reach the auth cluster here too)."""

    def __init__(self) -> None:
        self._calls: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            if method == METHOD:
                metadata = {key: str(value) for key, value in context.invocation_metadata()}
                with self._lock:
                    self._calls.append(metadata)
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)

    def take(self) -> list[dict[str, str]]:
        """The calls recorded since the last ``take``."""
        with self._lock:
            taken, self._calls = self._calls, []
        return taken


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[int, _Recorder]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # The edge's clusters are health checked: the real health service answers first.
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    recorder = _Recorder()
    server.add_generic_rpc_handlers((recorder,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, recorder
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def spans_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if zipkin.is_ready():
        yield zipkin.spans_url()
        return
    env = isolated_env(
        tmp_path_factory.mktemp("zipkin") / "run", ORDERMESH_ZIPKIN_PORT=str(reserve_port())
    )
    try:
        yield drive(DRIVER, env, "up", timeout=300)["spans_url"]
    finally:
        drive(DRIVER, env, "down")


def _call(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        assert call(b"", timeout=10) == b""


def _trace(spans_url: str, trace_id: str) -> list[dict[str, Any]]:
    base = spans_url.removesuffix("/api/v2/spans")
    response = httpx.get(f"{base}/api/v2/trace/{trace_id}", timeout=5, trust_env=False)
    if response.status_code != 200:
        return []
    spans: list[dict[str, Any]] = response.json()
    return spans


def test_the_upstream_gets_traceparent_and_zipkin_gets_envoys_spans(
    tmp_path: Path, upstream: tuple[int, _Recorder], spans_url: str, servers: None
) -> None:
    port, recorder = upstream
    clusters = edge.local_clusters("127.0.0.1", port)
    with running_envoy(tmp_path, clusters, tracing=edge.Tracing(spans_url)) as running:
        recorder.take()
        _call(running.port)
        [metadata] = recorder.take()
        parent = TRACEPARENT.fullmatch(metadata["traceparent"])
        assert parent is not None, metadata["traceparent"]
        # Envoy sends its spans every few seconds: wait (while it runs) for its span.
        spans = eventually(
            lambda: _trace(spans_url, parent["trace"]),
            "Envoy's server span",
            30,
        )

    assert parent["flags"] == "01"  # sampled: the whole trace is recorded
    # The same context in B3, for Zipkin-native upstreams.
    assert metadata["x-b3-traceid"] == parent["trace"]
    assert metadata["x-b3-spanid"] == parent["span"]
    by_id = {span["id"]: span for span in spans}
    # The upstream's parent is Envoy's server span: the trace starts at the edge.
    server = by_id[parent["span"]]
    assert server["kind"] == "SERVER"
    assert server["localEndpoint"]["serviceName"] == "envoy"
    assert "parentId" not in server
    assert server["tags"]["http.url"].endswith(METHOD)


def test_envoy_serves_when_zipkin_is_unreachable(
    tmp_path: Path, upstream: tuple[int, _Recorder], servers: None
) -> None:
    port, recorder = upstream
    nobody = f"http://127.0.0.1:{reserve_port()}/api/v2/spans"
    clusters = edge.local_clusters("127.0.0.1", port)
    with running_envoy(tmp_path, clusters, tracing=edge.Tracing(nobody)) as running:
        recorder.take()
        for _ in range(3):
            _call(running.port)
        calls = recorder.take()
        assert len(calls) == 3
        assert all(TRACEPARENT.fullmatch(call["traceparent"]) for call in calls)
