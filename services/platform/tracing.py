"""Traces with OpenTelemetry: one trace per order, from the edge (or the API) through every
Kafka hop to SHIPPED, exported to Zipkin.

How the context travels (W3C trace context everywhere):

- gRPC: the ``traceparent`` / ``tracestate`` metadata of a call (Envoy's, or a client's) is
  the parent of the server span (:func:`server_span`); channels built with
  :func:`client_interceptors` send the caller's context on.
- Outbox and Kafka: a row written in a traced transaction keeps the context that caused it
  in its headers as the CloudEvents distributed-tracing extension (``ce_traceparent``,
  ``ce_tracestate``: binary content mode), see :func:`outbox_headers`. The relay's publish
  span continues it and puts its own context in that header (:func:`start_span`).
- Consumers continue each event's trace with a span of its own; a batch of several events
  also gets one span linking every event's context (:func:`consuming`). While the handlers
  run, a row written for an order key (every ordermesh event is keyed by its order) takes the
  context of that order's event in the batch, so a batch of many orders keeps each trace
  apart.
- A webhook delivery and a live-feed entry keep the ``traceparent`` of the event that made
  them; the sender and the pushers continue it.

Nothing is recorded unless a composition root enters :func:`exporting` with a Zipkin URL
(``ORDERMESH_ZIPKIN_URL``); otherwise every function here is a cheap no-op and no header
is written. ``ORDERMESH_TRACE_SAMPLE_RATIO`` is the share of new traces recorded; a trace
begun upstream keeps its decision (the ``sampled`` flag), so a trace is whole or absent.

Spans are named after the process role that made them (Zipkin's service name): ``api``,
``relay``, each consumer group, ``webhook-sender``, ``gateway``. One process may host several
(the local stack's ``workers`` hosts every consumer group), so each role has its own
tracer provider; they share one exporter, which sends each span under its own service name
(the stock Zipkin exporter names every span of a batch after the first one's).
Domain code does not import this module (nor OpenTelemetry).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The CloudEvents distributed-tracing extension in Kafka's binary content mode.
CE_TRACEPARENT = "ce_traceparent"
CE_TRACESTATE = "ce_tracestate"

NO_SPAN = NonRecordingSpan(INVALID_SPAN_CONTEXT)

# While a consumer's handlers run: the span of each order key's event in the batch.
_causes: ContextVar[Mapping[str, SpanContext] | None] = ContextVar("trace_causes", default=None)


class _Tracing:
    """The process's tracing state: one provider per service name, one exporter."""

    def __init__(self) -> None:
        self.processor: BatchSpanProcessor | None = None
        self.sampler: Sampler | None = None
        self.providers: dict[str, TracerProvider] = {}
        self.tracers: dict[str, trace.Tracer] = {}
        self.lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.processor is not None

    def tracer(self, service: str) -> trace.Tracer:
        found = self.tracers.get(service)
        if found is not None:
            return found
        with self.lock:
            if self.processor is None or self.sampler is None:
                return trace.NoOpTracer()
            provider = TracerProvider(
                sampler=self.sampler,
                resource=Resource({"service.name": service}),
                shutdown_on_exit=False,
            )
            provider.add_span_processor(self.processor)
            self.providers[service] = provider
            found = self.tracers[service] = provider.get_tracer("ordermesh")
            return found

    def configure(self, processor: BatchSpanProcessor, sampler: Sampler) -> None:
        with self.lock:
            self.processor = processor
            self.sampler = sampler
            self.providers.clear()
            self.tracers.clear()

    def reset(self) -> BatchSpanProcessor | None:
        with self.lock:
            processor, self.processor, self.sampler = self.processor, None, None
            self.providers.clear()
            self.tracers.clear()
            return processor


_state = _Tracing()


def enabled() -> bool:
    """Whether this process records spans (a composition root entered :func:`exporting`)."""
    return _state.enabled


@contextlib.contextmanager
def exporting(
    zipkin_url: str | None, sample_ratio: float, *, exporter: SpanExporter | None = None
) -> Iterator[None]:
    """Record spans while inside, sending them to ``zipkin_url`` (or to ``exporter``, a test's);
    on exit the spans still queued are sent (for at most a few seconds). With neither,
    nothing is recorded."""
    if exporter is None and zipkin_url is None:
        yield
        return
    processor = BatchSpanProcessor(
        exporter or ZipkinExporter(zipkin_url or ""),
        max_queue_size=20_000,
        schedule_delay_millis=500,
        max_export_batch_size=1_000,
        export_timeout_millis=5_000,
    )
    _state.configure(processor, ParentBased(TraceIdRatioBased(sample_ratio)))
    try:
        yield
    finally:
        stopped = _state.reset()
        if stopped is not None:
            stopped.shutdown()  # type: ignore[no-untyped-call]


def tracer(service: str) -> trace.Tracer:
    """The tracer of spans made by ``service`` (a no-op one when tracing is off)."""
    return _state.tracer(service)


def traceparent(span_context: SpanContext) -> str:
    """``span_context`` as a W3C ``traceparent`` value."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def span_context_of(value: str | None, state: str | None = None) -> SpanContext | None:
    """The remote span context a ``traceparent`` value names; None for a missing or malformed
    one (which then starts a new trace rather than failing anything)."""
    if not value or len(value) != 55:
        return None
    parts = value.split("-")
    if len(parts) != 4:
        return None
    version, trace_hex, span_hex, flags_hex = parts
    if version != "00" or len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    trace_state = None
    if state:
        with contextlib.suppress(ValueError):
            trace_state = TraceState.from_header([state])
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=trace_state
    )


def _parent(span_context: SpanContext | None) -> otel_context.Context:
    """A context whose current span is ``span_context`` (an empty context for None, which
    makes a new root)."""
    if span_context is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context), otel_context.Context())


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, if there is a valid one and tracing is on."""
    if not _state.enabled:
        return None
    span_context = trace.get_current_span().get_span_context()
    return traceparent(span_context) if span_context.is_valid else None


def traceparent_for(key: str) -> str | None:
    """The ``traceparent`` a record written now for order ``key`` continues (see
    :func:`outbox_headers`); None when tracing is off."""
    return outbox_headers(key).get(CE_TRACEPARENT)


def outbox_headers(key: str) -> dict[str, str]:
    """The trace headers of an outbox row written now for ``key``: the context of that
    key's event while a consumer handles a batch, else the current span's."""
    if not _state.enabled:
        return {}
    causes = _causes.get()
    span_context = causes.get(key) if causes else None
    if span_context is None:
        span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    headers = {CE_TRACEPARENT: traceparent(span_context)}
    if span_context.trace_state:
        headers[CE_TRACESTATE] = span_context.trace_state.to_header()
    return headers


def start_span(
    service: str,
    name: str,
    *,
    parent: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    start_time: int | None = None,
) -> Span:
    """A span of ``service`` continuing the trace of the ``traceparent`` ``parent`` (a new
    trace when there is none); the caller ends it (:func:`end_span`). Without tracing: an
    invalid, non-recording span."""
    if not _state.enabled:
        return NO_SPAN
    return _state.tracer(service).start_span(
        name,
        context=_parent(span_context_of(parent)),
        kind=kind,
        attributes=attributes,
        start_time=start_time,
    )


@contextlib.contextmanager
def continued_span(
    service: str,
    name: str,
    *,
    parent: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span]:
    """Like :func:`start_span`, the span being current while inside and ended on exit."""
    if not _state.enabled:
        yield NO_SPAN
        return
    span = start_span(service, name, parent=parent, kind=kind, attributes=attributes)
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        yield span


def end_span(span: Span, error: str | None = None, end_time: int | None = None) -> None:
    if span is NO_SPAN:
        return
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time)


@contextlib.contextmanager
def server_span(
    service: str,
    method: str,
    metadata: Callable[[str], str | None],
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Span]:
    """The current span of a gRPC call to ``method`` (``/package.Service/Method``): a child of
    the caller's ``traceparent`` metadata. The caller sets the status code attribute."""
    if not _state.enabled:
        yield NO_SPAN
        return
    parent = span_context_of(metadata(TRACEPARENT), metadata(TRACESTATE))
    rpc_service, _, rpc_method = method.lstrip("/").partition("/")
    span = _state.tracer(service).start_span(
        method.lstrip("/"),
        context=_parent(parent),
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": rpc_service,
            "rpc.method": rpc_method,
            **(attributes or {}),
        },
    )
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        yield span


@dataclass(frozen=True, slots=True)
class TracedEvent:
    """An event as a consumer sees it: its order key, type, id and the context it came with."""

    key: str
    name: str
    event_id: str
    traceparent: str | None
    tracestate: str | None = None


@contextlib.contextmanager
def consuming(group: str, events: Sequence[TracedEvent]) -> Iterator[None]:
    """Spans of consumer ``group`` handling ``events`` in one transaction: one per event,
    continuing its trace; for several events one more, linking them all, which is current
    while the handlers run (one event's own span is current when it is alone). Rows written
    for an order key meanwhile continue that key's event (:func:`outbox_headers`). An
    exception marks every span failed."""
    if not _state.enabled or not events:
        yield
        return
    service = group.removeprefix("ordermesh.")
    tracer_ = _state.tracer(service)
    started = time.time_ns()
    spans: list[Span] = []
    causes: dict[str, SpanContext] = {}
    for event in events:
        span = tracer_.start_span(
            f"handle {event.name}",
            context=_parent(span_context_of(event.traceparent, event.tracestate)),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": group,
                "messaging.message.id": event.event_id,
                "messaging.kafka.message.key": event.key,
                "messaging.batch.message_count": len(events),
            },
            start_time=started,
        )
        spans.append(span)
        causes[event.key] = span.get_span_context()
    current = spans[0]
    if len(spans) > 1:
        current = tracer_.start_span(
            "handle batch",
            context=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": group,
                "messaging.batch.message_count": len(events),
            },
            links=[Link(span.get_span_context()) for span in spans],
            start_time=started,
        )
    token = _causes.set(causes)
    error: str | None = None
    try:
        with trace.use_span(current, end_on_exit=False, record_exception=False):
            yield
    except BaseException as exc:
        error = repr(exc)
        raise
    finally:
        _causes.reset(token)
        ended = time.time_ns()
        for span in {id(s): s for s in (*spans, current)}.values():
            end_span(span, error, ended)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a grpc.aio channel that send the caller's trace context along as
    metadata (none when tracing is off: the channel then has no per-call cost). The callee's
    server span is the caller's child; no client span is recorded."""
    if not _state.enabled:
        return []
    return [_UnaryUnaryPropagation(), _UnaryStreamPropagation()]


def _with_trace_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[TRACEPARENT] = traceparent(span_context)
    if span_context.trace_state:
        metadata[TRACESTATE] = span_context.trace_state.to_header()
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnaryPropagation(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_trace_context(client_call_details), request)


class _UnaryStreamPropagation(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_trace_context(client_call_details), request)


class ZipkinExporter(SpanExporter):
    """Sends spans to Zipkin's JSON v2 endpoint, each under its own service name.

    One HTTP/1.1 connection, kept alive; a failed export is logged (at most every 30 s) and
    dropped: traces are best effort and never hold a process up."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path or "/api/v2/spans"
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._last_warning = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = json.dumps([zipkin_span(span) for span in spans], separators=(",", ":")).encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as error:
                self._close()
                if attempt == 2:
                    self._warn(f"Zipkin unreachable: {error}")
                    return SpanExportResult.FAILURE
                continue
            if status >= 300:
                self._warn(f"Zipkin answered {status} to {len(spans)} spans")
                return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._close()

    def _post(self, body: bytes) -> int:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        self._connection.request(
            "POST", self._path, body=body, headers={"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        response.read()
        return response.status

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 30.0:
            self._last_warning = now
            log.warning("spans dropped: %s", message)


_KINDS = {
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}


def zipkin_span(span: ReadableSpan) -> dict[str, Any]:
    """``span`` in Zipkin's v2 JSON model. Zipkin has no links: they become the tag
    ``otel.links`` (``trace_id-span_id`` pairs)."""
    context = span.get_span_context()
    assert context is not None
    start = span.start_time or 0
    end = span.end_time or start
    tags = {key: _tag(value) for key, value in (span.attributes or {}).items()}
    if span.status.status_code is StatusCode.ERROR:
        tags["error"] = span.status.description or "error"
    if span.links:
        tags["otel.links"] = " ".join(
            f"{link.context.trace_id:032x}-{link.context.span_id:016x}" for link in span.links
        )
    encoded: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "id": f"{context.span_id:016x}",
        "name": span.name,
        "timestamp": start // 1000,
        "duration": max(1, (end - start) // 1000),
        "localEndpoint": {"serviceName": span.resource.attributes.get("service.name", "unknown")},
        "tags": tags,
    }
    if span.parent is not None and span.parent.is_valid:
        encoded["parentId"] = f"{span.parent.span_id:016x}"
    kind = _KINDS.get(span.kind)
    if kind is not None:
        encoded["kind"] = kind
    return encoded


def _tag(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(_tag(item) for item in value)
    return str(value)
