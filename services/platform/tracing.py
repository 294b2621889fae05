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
``relay``, each consumer group (without its ``ordermesh.`` prefix), ``webhook-sender``. One
process may host several (the local stack's ``workers`` hosts every consumer group): each
role has its own tracer, and one sink sends every span under its own service name. The
tracers are :mod:`services.platform.spans`' lean implementation of OpenTelemetry's API.
Domain code does not import this module (nor OpenTelemetry).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
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

from services.platform import spans

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The CloudEvents distributed-tracing extension in Kafka's binary content mode.
CE_TRACEPARENT = "ce_traceparent"
CE_TRACESTATE = "ce_tracestate"

NO_SPAN = NonRecordingSpan(INVALID_SPAN_CONTEXT)

# While a consumer's handlers run: the span of each order key's event in the batch.
_causes: ContextVar[Mapping[str, SpanContext] | None] = ContextVar("trace_causes", default=None)


class _Tracing:
    """The process's tracing state: where spans go, and a tracer per service name."""

    def __init__(self) -> None:
        self.sink: spans.SpanSink | None = None
        self.sample_ratio = 1.0
        self.tracers: dict[str, trace.Tracer] = {}
        self.lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.sink is not None

    def tracer(self, service: str) -> trace.Tracer:
        found = self.tracers.get(service)
        if found is not None:
            return found
        with self.lock:
            if self.sink is None:
                return trace.NoOpTracer()
            found = self.tracers[service] = spans.LeanTracer(service, self.sink, self.sample_ratio)
            return found

    def configure(self, sink: spans.SpanSink, sample_ratio: float) -> None:
        with self.lock:
            self.sink = sink
            self.sample_ratio = sample_ratio
            self.tracers.clear()

    def reset(self) -> spans.SpanSink | None:
        with self.lock:
            sink, self.sink = self.sink, None
            self.tracers.clear()
            return sink


_state = _Tracing()


def enabled() -> bool:
    """Whether this process records spans (a composition root entered :func:`exporting`)."""
    return _state.enabled


@contextlib.contextmanager
def exporting(
    zipkin_url: str | None, sample_ratio: float, *, sink: spans.SpanSink | None = None
) -> Iterator[None]:
    """Record spans while inside, sending them to ``zipkin_url`` (or into ``sink``, a
    test's); on exit the spans still waiting are sent (for at most a few seconds). With
    neither, nothing is recorded."""
    if sink is None and zipkin_url is None:
        yield
        return
    _state.configure(sink if sink is not None else spans.ZipkinSink(zipkin_url or ""), sample_ratio)
    try:
        yield
    finally:
        stopped = _state.reset()
        if stopped is not None:
            stopped.close()


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
