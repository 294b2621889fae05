"""services.platform.tracing: context parsing, the consumer's per-event spans and batch links,
the outbox headers, the server span, the Zipkin encoding and exporter, trace ids in logs."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.platform import metrics, tracing
from services.platform import spans as recorded
from services.platform.logging import JsonFormatter

PARENT_A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_B = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-00"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033zz-01",  # not hex
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x00",  # NUL appended
        "00-0af7651916cd43dd8448eb211c80319c\x00b7ad6b7169203331-01",
        "00-" + "a" * 10_000,
    ],
)
def test_a_malformed_traceparent_is_no_parent(value: str | None) -> None:
    assert tracing.span_context_of(value) is None


def test_a_traceparent_round_trips() -> None:
    context = tracing.span_context_of(PARENT_A, "vendor=value")
    assert context is not None
    assert context.is_remote and context.trace_flags.sampled
    assert tracing.traceparent(context) == PARENT_A
    assert context.trace_state.get("vendor") == "value"


def test_nothing_is_recorded_or_written_when_tracing_is_off() -> None:
    assert not tracing.enabled()
    assert tracing.outbox_headers("order-1") == {}
    assert tracing.current_traceparent() is None
    assert tracing.client_interceptors() == []
    span = tracing.start_span("relay", "publish", parent=PARENT_A)
    assert not span.get_span_context().is_valid
    events = [tracing.TracedEvent("order-1", "OrderCreated", "e1", PARENT_A)]
    with tracing.consuming("group", events):
        assert tracing.outbox_headers("order-1") == {}


def test_each_event_of_a_batch_continues_its_own_trace_and_the_batch_links_them() -> None:
    exporter = recorded.SpanList()
    events = [
        tracing.TracedEvent("order-a", "OrderCreated", "e1", PARENT_A),
        tracing.TracedEvent("order-b", "OrderCreated", "e2", PARENT_B),
    ]
    with tracing.exporting(None, 1.0, sink=exporter):
        with tracing.consuming("ordermesh.payment-processor", events):
            header_a = tracing.outbox_headers("order-a")[tracing.CE_TRACEPARENT]
            header_b = tracing.outbox_headers("order-b")[tracing.CE_TRACEPARENT]
            other = tracing.outbox_headers("order-c")[tracing.CE_TRACEPARENT]
        assert tracing.outbox_headers("order-a") == {}
    finished = {span.name: span for span in exporter}
    assert set(finished) == {"handle OrderCreated", "handle batch"}
    by_trace = {
        span.trace_id: span
        for span in exporter
        if span.kind is SpanKind.CONSUMER and span.parent_id is not None
    }
    span_a = by_trace[int("0af7651916cd43dd8448eb211c80319c", 16)]
    span_b = by_trace[int("4bf92f3577b34da6a3ce929d0e0e4736", 16)]
    assert span_a.parent_id == int("b7ad6b7169203331", 16)
    assert span_b.parent_id == int("00f067aa0ba902b7", 16)
    assert header_a == traceparent_of(span_a)
    assert header_b == traceparent_of(span_b)
    batch = finished["handle batch"]
    assert batch.parent_id is None
    assert {link.span_id for link in batch.links} == {
        span_a.span_id,
        span_b.span_id,
    }
    # A row for a key with no event in the batch continues the batch.
    assert other == traceparent_of(batch)
    assert all(span.service == "payment-processor" for span in by_trace.values())


def test_a_failed_batch_marks_its_spans_failed() -> None:
    exporter = recorded.SpanList()
    events = [tracing.TracedEvent("order-a", "OrderCreated", "e1", PARENT_A)]
    with (
        tracing.exporting(None, 1.0, sink=exporter),
        pytest.raises(RuntimeError),
        tracing.consuming("group", events),
    ):
        raise RuntimeError("handler failed")
    (span,) = exporter
    assert span.error is not None
    assert "handler failed" in span.error


def test_an_unsampled_trace_stays_unsampled_and_keeps_its_id() -> None:
    exporter = recorded.SpanList()
    events = [tracing.TracedEvent("order-a", "OrderCreated", "e1", UNSAMPLED)]
    with tracing.exporting(None, 1.0, sink=exporter), tracing.consuming("group", events):
        header = tracing.outbox_headers("order-a")[tracing.CE_TRACEPARENT]
    assert exporter == []
    assert header.startswith("00-5bf92f3577b34da6a3ce929d0e0e4736-") and header.endswith("-00")


def test_a_sample_ratio_of_zero_records_no_new_trace() -> None:
    exporter = recorded.SpanList()
    method = "/ordermesh.order.v1.OrderService/CreateOrder"
    no_metadata: dict[str, str] = {}
    with (
        tracing.exporting(None, 0.0, sink=exporter),
        tracing.server_span("api", method, no_metadata.get),
    ):
        # Not recorded, yet it has an id that goes on (so its descendants are not recorded).
        assert tracing.current_traceparent() is not None
    assert exporter == []


def test_the_server_span_continues_the_callers_metadata() -> None:
    exporter = recorded.SpanList()
    metadata = {"traceparent": PARENT_A}
    with (
        tracing.exporting(None, 1.0, sink=exporter),
        tracing.server_span(
            "api", "/ordermesh.order.v1.OrderService/CreateOrder", metadata.get
        ) as span,
    ):
        headers = tracing.outbox_headers("order-1")
    (finished,) = exporter
    assert finished.name == "ordermesh.order.v1.OrderService/CreateOrder"
    assert finished.kind is SpanKind.SERVER
    assert finished.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert headers[tracing.CE_TRACEPARENT] == tracing.traceparent(span.get_span_context())


def test_log_lines_carry_the_trace_and_span_ids() -> None:
    formatter = JsonFormatter("api")
    record = logging.LogRecord("x", logging.INFO, "", 0, "rpc", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    exporter = recorded.SpanList()
    with (
        tracing.exporting(None, 1.0, sink=exporter),
        tracing.server_span("api", "/a.B/C", {"traceparent": PARENT_A}.get) as span,
    ):
        line = json.loads(formatter.format(record))
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == f"{span.get_span_context().span_id:016x}"


def test_zipkin_encoding_names_each_span_after_its_own_service() -> None:
    exporter = recorded.SpanList()
    with tracing.exporting(None, 1.0, sink=exporter):
        publish = tracing.start_span(
            "relay", "publish orders", parent=PARENT_A, kind=SpanKind.PRODUCER
        )
        tracing.end_span(publish, "broker down")
        events = [
            tracing.TracedEvent("a", "OrderCreated", "e1", PARENT_A),
            tracing.TracedEvent("b", "OrderCreated", "e2", PARENT_B),
        ]
        with tracing.consuming("order_validator", events):
            pass
    encoded = [recorded.zipkin_span(span) for span in exporter]
    services = {span["localEndpoint"]["serviceName"] for span in encoded}
    assert services == {"relay", "order_validator"}
    relay = next(span for span in encoded if span["name"] == "publish orders")
    assert relay["kind"] == "PRODUCER"
    assert relay["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert relay["parentId"] == "b7ad6b7169203331"
    assert relay["tags"]["error"] == "broker down"
    assert relay["duration"] >= 1
    batch = next(span for span in encoded if span["name"] == "handle batch")
    assert "parentId" not in batch
    assert len(batch["tags"]["otel.links"].split()) == 2
    assert batch["tags"]["messaging.batch.message_count"] == "2"


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[Any]] = []
    status: ClassVar[int] = 202

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, type[_Collector]]]:
    handler = type("Collector", (_Collector,), {"received": [], "status": 202})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2/spans", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_sink_posts_zipkin_json_and_counts_what_is_refused(
    collector: tuple[str, type[_Collector]],
) -> None:
    url, handler = collector
    with tracing.exporting(url, 1.0):
        tracing.end_span(tracing.start_span("relay", "publish", parent=PARENT_A))
        tracing.end_span(tracing.start_span("api", "call", parent=PARENT_B))
    sent = [span for batch in handler.received for span in batch]
    assert {span["localEndpoint"]["serviceName"] for span in sent} == {"relay", "api"}
    sink = recorded.ZipkinSink(url, interval=60)
    try:
        sink.add(_one_span())
        sink.add(_one_span())
        sink.flush()
        sink.add(_one_span())
        sink.flush()  # over the kept-alive connection
        assert sink.sent == 3
        handler.status = 500
        sink.add(_one_span())
        sink.flush()
        assert (sink.sent, sink.dropped) == (3, 1)
    finally:
        sink.close()


def test_an_unreachable_zipkin_drops_spans_without_raising() -> None:
    sink = recorded.ZipkinSink("http://127.0.0.1:9/api/v2/spans", interval=60, timeout=1.0)
    sink.add(_one_span())
    sink.flush()
    sink.close()
    assert (sink.sent, sink.dropped) == (0, 1)


def test_a_full_sink_drops_new_spans_and_says_so_in_its_metrics() -> None:
    before = {outcome: _exported(outcome) for outcome in ("sent", "dropped")}
    sink = recorded.ZipkinSink(
        "http://127.0.0.1:9/api/v2/spans", interval=60, capacity=2, post=lambda body: 202
    )
    for _ in range(5):
        sink.add(_one_span())
    sink.flush()
    sink.close()
    assert (sink.sent, sink.dropped) == (2, 3)
    assert _exported("sent") - before["sent"] == 2
    assert _exported("dropped") - before["dropped"] == 3


def _exported(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "ordermesh_spans_exported_total", {"outcome": outcome}
    )
    return value or 0.0


def test_sampling_a_new_trace_is_the_same_decision_everywhere() -> None:
    half = recorded.LeanTracer("a", recorded.SpanList(), 0.5)
    other = recorded.LeanTracer("b", recorded.SpanList(), 0.5)
    decisions = []
    for _ in range(2000):
        root = half.start_span("root")
        context = root.get_span_context()
        child = other.start_span("child", context=trace.set_span_in_context(root))
        assert child.get_span_context().trace_flags.sampled == context.trace_flags.sampled
        decisions.append(context.trace_flags.sampled)
    assert 800 < sum(decisions) < 1200
    assert not any(
        recorded.LeanTracer("c", recorded.SpanList(), 0.0)
        .start_span("x")
        .get_span_context()
        .trace_flags.sampled
        for _ in range(200)
    )


def _one_span() -> recorded.RecordedSpan:
    sink = recorded.SpanList()
    with tracing.exporting(None, 1.0, sink=sink):
        tracing.end_span(tracing.start_span("relay", "publish", parent=PARENT_A))
    (span,) = sink
    return span


def traceparent_of(span: recorded.RecordedSpan) -> str:
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
