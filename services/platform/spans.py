"""Span recording behind the OpenTelemetry tracing API: a lean tracer and the Zipkin sink.

:mod:`services.platform.tracing` starts spans through OpenTelemetry's API (``Tracer``,
``Span``, the context, ``use_span``); this module is the implementation of that API the
processes install. It records what Zipkin shows and nothing more: ids, parent, name, kind,
service, start and end, attributes, links and an error. The OpenTelemetry SDK's spans cost
about 90 µs each to start and end here, and their Zipkin encoding 50 µs more; an order
makes about thirty spans across the pipeline (with the SDK, ``bench/pipeline.py --phases
observe`` measured 28% less throughput with tracing on). These spans cost 14 µs to start
and end and 11-15 µs to encode.

Sampling follows the SDK's ``ParentBased(TraceIdRatioBased(ratio))``: a span with a parent
keeps the parent's decision; a new trace is recorded when its id's low 64 bits fall under
``ratio`` of their range, the same decision in every process.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

from services.platform import metrics

log = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ID_RANGE = 1 << 64


@dataclass(frozen=True, slots=True)
class RecordedSpan:
    """A finished span, as a sink receives it (times in ns since the epoch)."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    kind: SpanKind
    service: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, types.AttributeValue]
    links: tuple[SpanContext, ...]
    error: str | None


class SpanSink(Protocol):
    """Where finished spans go: ``add`` is called on the thread that ends the span and must
    not block; ``close`` sends what is left."""

    def add(self, span: RecordedSpan) -> None: ...

    def close(self) -> None: ...


class SpanList(list[RecordedSpan]):
    """A sink keeping every span in memory (tests, tools)."""

    def add(self, span: RecordedSpan) -> None:
        self.append(span)

    def close(self) -> None:
        pass


class LeanTracer(trace.Tracer):
    """A tracer recording spans of one service into ``sink``."""

    def __init__(self, service: str, sink: SpanSink, sample_ratio: float) -> None:
        self._service = service
        self._sink = sink
        self._bound = round(sample_ratio * _ID_RANGE)

    def start_span(  # noqa: PLR0917 (the API's signature)
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self.start_child(
            name,
            trace.get_current_span(context).get_span_context(),
            kind=kind,
            attributes=dict(attributes) if attributes else {},
            links=tuple(link.context for link in links) if links else (),
            start_ns=start_time,
        )

    def start_child(
        self,
        name: str,
        parent: SpanContext,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, types.AttributeValue] | None = None,
        links: tuple[SpanContext, ...] = (),
        start_ns: int | None = None,
    ) -> trace.Span:
        """A span whose parent is ``parent`` (a new trace when it is not valid): the
        plumbing's way in, without building a context first. Takes ``attributes``."""
        if parent.is_valid:
            trace_id = parent.trace_id
            parent_id: int | None = parent.span_id
            sampled = parent.trace_flags.sampled
        else:
            trace_id = random.getrandbits(128) or 1
            parent_id = None
            sampled = (trace_id & (_ID_RANGE - 1)) < self._bound
        span_context = SpanContext(
            trace_id,
            random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
            trace_state=parent.trace_state if parent.is_valid else None,
        )
        if not sampled:
            return NonRecordingSpan(span_context)
        return LeanSpan(
            span_context,
            parent_id,
            name,
            kind,
            self._service,
            start_ns or time.time_ns(),
            {} if attributes is None else attributes,
            links,
            self._sink,
        )

    # The API types it with a private decorator's context manager; a plain one does the same.
    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0917 (the API's signature)
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ):
            yield span


class LeanSpan(trace.Span):
    """A recording span; ended once, it goes to its sink. Not shared between threads."""

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_error",
        "_kind",
        "_links",
        "_name",
        "_parent_id",
        "_service",
        "_sink",
        "_start",
    )

    def __init__(  # noqa: PLR0917 (a record's fields)
        self,
        span_context: SpanContext,
        parent_id: int | None,
        name: str,
        kind: SpanKind,
        service: str,
        start_ns: int,
        attributes: dict[str, types.AttributeValue],
        links: tuple[SpanContext, ...],
        sink: SpanSink,
    ) -> None:
        self._context = span_context
        self._parent_id = parent_id
        self._name = name
        self._kind = kind
        self._service = service
        self._start = start_ns
        self._attributes = attributes
        self._links = links
        self._sink = sink
        self._error: str | None = None
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        self._attributes.update(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        self._attributes[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        # Zipkin's annotations would hold them; nothing here records events.
        pass

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self._links = (*self._links, context)

    def update_name(self, name: str) -> None:
        self._name = name

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.ERROR:
            self._error = description or "error"
        elif code is StatusCode.OK:
            self._error = None

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._attributes["exception.type"] = type(exception).__qualname__
        self._attributes["exception.message"] = str(exception)[:1000]

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._sink.add(
            RecordedSpan(
                self._context.trace_id,
                self._context.span_id,
                self._parent_id,
                self._name,
                self._kind,
                self._service,
                self._start,
                end_time or time.time_ns(),
                self._attributes,
                self._links,
                self._error,
            )
        )


class ZipkinSink:
    """Sends finished spans to Zipkin's JSON v2 endpoint from a thread of its own, every
    ``interval`` seconds, at most ``batch`` per request, over one kept-alive HTTP/1.1
    connection. At most ``capacity`` spans wait; beyond that new spans are dropped (counted,
    logged at most every 30 s), as are spans Zipkin does not take: traces are best effort and
    never hold a process up."""

    def __init__(
        self,
        url: str,
        *,
        interval: float = 0.5,
        batch: int = 2_000,
        capacity: int = 50_000,
        timeout: float = 5.0,
        post: Callable[[bytes], int] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path or "/api/v2/spans"
        self._timeout = timeout
        self._interval = interval
        self._batch = batch
        self._capacity = capacity
        self._post = post or self._post_http
        self._queue: collections.deque[RecordedSpan] = collections.deque()
        self._connection: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zipkin-sink", daemon=True)
        self._last_warning = 0.0
        self.sent = 0
        self.dropped = 0
        self._thread.start()

    def add(self, span: RecordedSpan) -> None:
        if len(self._queue) >= self._capacity:
            self._lost_one()
            return
        self._queue.append(span)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the thread after it has sent what waits (for at most ``timeout`` s)."""
        self._stop.set()
        self._thread.join(timeout)
        self._disconnect()

    def flush(self) -> None:
        """Sends every waiting span now (on the caller's thread)."""
        while self._queue:
            spans = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            self._send(spans)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
        self.flush()

    def _send(self, spans: Sequence[RecordedSpan]) -> None:
        body = json.dumps([zipkin_span(span) for span in spans], separators=(",", ":")).encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as error:
                self._disconnect()
                if attempt == 2:
                    self._lost(spans, f"Zipkin unreachable: {error}")
                continue
            if status >= 300:
                self._lost(spans, f"Zipkin answered {status}")
            else:
                self.sent += len(spans)
                metrics.spans_exported.labels("sent").inc(len(spans))
            return

    def _post_http(self, body: bytes) -> int:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        self._connection.request(
            "POST", self._path, body=body, headers={"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        response.read()
        return response.status

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _lost_one(self) -> None:
        self.dropped += 1
        metrics.spans_exported.labels("dropped").inc()
        self._warn("the queue of spans to send is full")

    def _lost(self, spans: Sequence[RecordedSpan], why: str) -> None:
        self.dropped += len(spans)
        metrics.spans_exported.labels("dropped").inc(len(spans))
        self._warn(why)

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 30.0:
            self._last_warning = now
            log.warning("spans dropped: %s", why, extra={"spans_dropped": self.dropped})


_KINDS = {
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}


def zipkin_span(span: RecordedSpan) -> dict[str, Any]:
    """``span`` in Zipkin's v2 JSON model. Zipkin has no links: they become the tag
    ``otel.links`` (``trace_id-span_id`` pairs)."""
    tags = {
        key: value if type(value) is str else _tag(value) for key, value in span.attributes.items()
    }
    if span.error is not None:
        tags["error"] = span.error
    if span.links:
        tags["otel.links"] = " ".join(
            f"{link.trace_id:032x}-{link.span_id:016x}" for link in span.links
        )
    encoded: dict[str, Any] = {
        "traceId": f"{span.trace_id:032x}",
        "id": f"{span.span_id:016x}",
        "name": span.name,
        "timestamp": span.start_ns // 1000,
        "duration": max(1, (span.end_ns - span.start_ns) // 1000),
        "localEndpoint": {"serviceName": span.service},
        "tags": tags,
    }
    if span.parent_id is not None:
        encoded["parentId"] = f"{span.parent_id:016x}"
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
