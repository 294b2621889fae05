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

    def lean(self, service: str) -> spans.LeanTracer:
        """The tracer of ``service``; only while tracing is on."""
        found = self.tracer(service)
        assert isinstance(found, spans.LeanTracer), "tracing is off"
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
    return _state.lean(service).start_child(
        name,
        span_context_of(parent) or INVALID_SPAN_CONTEXT,
        kind=kind,
        attributes=dict(attributes) if attributes else {},
        start_ns=start_time,
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
    # The name says the service and method; the status code is added by the caller.
    span = _state.lean(service).start_child(
        method.lstrip("/"),
        parent or INVALID_SPAN_CONTEXT,
        kind=SpanKind.SERVER,
        attributes=dict(attributes) if attributes else {},
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


def consuming(group: str, events: Sequence[TracedEvent]) -> contextlib.AbstractContextManager[None]:
    """Spans of consumer ``group`` handling ``events`` in one transaction: one per event,
    continuing its trace; for several events one more, linking them all, which is current
    while the handlers run (one event's own span is current when it is alone). Rows written
    for an order key meanwhile continue that key's event (:func:`outbox_headers`). An
    exception marks every span failed."""
    if not _state.enabled or not events:
        return contextlib.nullcontext()
    return _Consuming(_state.lean(group.removeprefix("ordermesh.")), events)


class _Consuming:
    """:func:`consuming`'s spans (a class, not a generator: this runs for every batch)."""

    __slots__ = ("_causes", "_causes_token", "_context_token", "_current", "_spans")

    def __init__(self, tracer_: spans.LeanTracer, events: Sequence[TracedEvent]) -> None:
        started = time.time_ns()
        self._spans: list[Span] = []
        causes: dict[str, SpanContext] = {}
        for event in events:
            attributes: dict[str, str | int] = {
                "messaging.message.id": event.event_id,
                "messaging.kafka.message.key": event.key,
            }
            if len(events) > 1:
                attributes["messaging.batch.message_count"] = len(events)
            span = tracer_.start_child(
                f"handle {event.name}",
                span_context_of(event.traceparent, event.tracestate) or INVALID_SPAN_CONTEXT,
                kind=SpanKind.CONSUMER,
                attributes=dict(attributes),
                start_ns=started,
            )
            self._spans.append(span)
            causes[event.key] = span.get_span_context()
        self._current = self._spans[0]
        if len(self._spans) > 1:
            self._current = tracer_.start_child(
                "handle batch",
                INVALID_SPAN_CONTEXT,
                kind=SpanKind.CONSUMER,
                attributes={"messaging.batch.message_count": len(events)},
                links=tuple(span.get_span_context() for span in self._spans),
                start_ns=started,
            )
            self._spans.append(self._current)
        self._causes_token = _causes.set(causes)
        self._context_token = otel_context.attach(trace.set_span_in_context(self._current))

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        otel_context.detach(self._context_token)
        _causes.reset(self._causes_token)
        ended = time.time_ns()
        problem = None if error is None else repr(error)
        for span in self._spans:
            end_span(span, problem, ended)


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
