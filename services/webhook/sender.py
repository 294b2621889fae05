"""The webhook sender: claims due deliveries, POSTs them, records every attempt.

It runs outside any consumer transaction, as its own worker (``webhook_sender``), hostable
alone or beside the other workers, in any number of replicas: a claim leases deliveries
with FOR UPDATE SKIP LOCKED, so two senders never hold one delivery, and a sender that dies
mid-attempt loses its leases when they expire (the delivery is then sent again with the same
id; receivers deduplicate by ``X-Webhook-Id``).

Deliveries run concurrently (``concurrency`` in flight per sender; the queue caps how many
go to one endpoint at once), so one slow endpoint holds only its own slots. The sender wakes
on the queue's notifications, when an attempt finishes (a later delivery of the same order
may now go), and every ``poll_interval`` for retries falling due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from services.common.clock import utc_now
from services.platform import metrics, tracing
from services.platform.messaging.consumer import dependency_of, is_transient
from services.platform.messaging.state import StateBoard
from services.webhook.domain.delivery import (
    DeliveryState,
    RetryPolicy,
    Verdict,
    excerpt,
    retry_after_seconds,
    signature_headers,
    verdict,
)
from services.webhook.domain.ports import (
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryError,
    DeliveryQueue,
    Poster,
    Response,
)

log = logging.getLogger(__name__)

WORKER = "webhook_sender"
# Zipkin's service name of the attempts' spans.
TRACE_SERVICE = "webhook-sender"
MAX_OUTAGE_BACKOFF = 5.0

Listener = Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]


_OUTCOME_LABELS = {
    DeliveryState.SUCCEEDED: "succeeded",
    DeliveryState.PENDING: "retry",
    DeliveryState.FAILED: "failed",
    DeliveryState.PARKED: "parked",
}
# How often the sender counts pending and parked deliveries for its gauges.
COUNT_INTERVAL = 10.0

Counts = Callable[[], Awaitable[tuple[int, int]]]


class WebhookSender:
    def __init__(
        self,
        queue: DeliveryQueue,
        poster: Poster,
        policy: RetryPolicy,
        *,
        owner: str,
        concurrency: int,
        poll_interval: float,
        shutdown_grace: float,
        listener: Listener | None = None,
        board: StateBoard | None = None,
        counts: Counts | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._queue = queue
        self._poster = poster
        self._policy = policy
        self._owner = owner
        self._concurrency = concurrency
        self._poll = poll_interval
        self._grace = shutdown_grace
        self._listener = listener
        self._board = board
        self._counts = counts
        self._clock = clock
        self._rng = rng
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("webhook sender starting", extra={"owner": self._owner})
        listening: asyncio.Task[None] | None = None
        if self._listener is not None:
            listening = asyncio.create_task(self._listener(self._wake, stop), name="listen")
        outage = 0.0
        counting: asyncio.Task[None] | None = None
        if self._counts is not None:
            counting = asyncio.create_task(self._count(self._counts, stop), name="count")
        try:
            while not stop.is_set():
                self._wake.clear()
                free = self._concurrency - len(self._in_flight)
                claimed: list[ClaimedDelivery] = []
                if free > 0:
                    try:
                        claimed = await self._queue.claim(self._owner, free)
                    except Exception as error:
                        if not is_transient(error):
                            raise
                        outage = min(MAX_OUTAGE_BACKOFF, max(0.2, outage * 2))
                        self._blocked(error)
                        await _wait(stop, outage)
                        continue
                    if outage:
                        outage = 0.0
                        self._unblocked()
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery), name=delivery.delivery_id)
                    self._in_flight[task] = delivery.delivery_id
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue
                await _wait_any(stop, self._wake, self._poll)
        finally:
            await self._drain()
            for helper in (listening, counting):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            log.info("webhook sender stopped", extra={"owner": self._owner})

    @staticmethod
    async def _count(counts: Counts, stop: asyncio.Event) -> None:
        """The pending and parked gauges, every ``COUNT_INTERVAL``; an outage skips a count
        (the claim loop reports it); a failure of the count never stops the sender."""
        while not stop.is_set():
            try:
                pending, parked = await counts()
                metrics.webhook_pending.set(pending)
                metrics.webhook_parked.set(parked)
            except Exception as error:
                if not is_transient(error):
                    log.exception("webhook deliveries not counted")
            await _wait(stop, COUNT_INTERVAL)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    async def _drain(self) -> None:
        """Lets attempts in flight finish (they are bounded by the HTTP timeout), then gives
        back the leases of any that did not."""
        if not self._in_flight:
            return
        tasks = set(self._in_flight)
        _, pending = await asyncio.wait(tasks, timeout=self._grace)
        unfinished = [self._in_flight[task] for task in pending if task in self._in_flight]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._queue.release(self._owner, unfinished)

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        with tracing.continued_span(
            TRACE_SERVICE,
            f"POST webhook {delivery.event_type}",
            parent=delivery.traceparent,
            kind=SpanKind.CLIENT,
            attributes={
                "ordermesh.webhook.id": delivery.webhook_id,
                "ordermesh.webhook.delivery_id": delivery.delivery_id,
                "ordermesh.webhook.attempt": delivery.attempts + 1,
                "ordermesh.order.id": delivery.order_id or "",
            },
        ) as span:
            await self._attempt(delivery, span)

    async def _attempt(self, delivery: ClaimedDelivery, span: Span) -> None:
        number = delivery.attempts + 1
        started_at = self._clock()
        started = time.monotonic()
        response: Response | None = None
        problem: DeliveryError | None = None
        try:
            if delivery.target is None or not delivery.secrets:
                raise DeliveryError(f"refused: {delivery.problem}", refused=True)
            headers = signature_headers(
                delivery_id=delivery.delivery_id,
                body=delivery.body,
                secrets=delivery.secrets,
                sent_at=started_at,
                attempt=number,
            )
            response = await self._poster.post(delivery.target, headers, delivery.body)
        except DeliveryError as error:
            problem = error
        except Exception as error:
            # A bug must not leave the attempt unrecorded (the delivery would be re-sent at
            # every lease expiry, never parked): it counts as a failed attempt, retried.
            log.exception("webhook attempt failed unexpectedly")
            problem = DeliveryError(f"internal error: {type(error).__name__}: {error}")
        latency_ms = round((time.monotonic() - started) * 1000)
        try:
            outcome = self._outcome(delivery, response, problem)
        except Exception as error:
            log.exception("webhook attempt outcome failed unexpectedly")
            problem = DeliveryError(f"internal error: {type(error).__name__}: {error}")
            response = None
            outcome = self._outcome(delivery, None, problem)
        record = AttemptRecord(
            started_at=started_at,
            latency_ms=latency_ms,
            status_code=None if response is None else response.status,
            response_excerpt="" if response is None else excerpt(response.body_start),
            error=outcome.error if outcome.state is not DeliveryState.SUCCEEDED else "",
        )
        log.info(
            "webhook attempt",
            extra={
                "delivery_id": delivery.delivery_id,
                "webhook_id": delivery.webhook_id,
                "event_type": delivery.event_type,
                "order_id": delivery.order_id,
                "attempt": number,
                "status_code": record.status_code,
                "latency_ms": latency_ms,
                "outcome": outcome.state.value,
                "error": record.error,
            },
        )
        if record.status_code is not None:
            span.set_attribute("http.response.status_code", record.status_code)
        if outcome.state is not DeliveryState.SUCCEEDED:
            span.set_status(Status(StatusCode.ERROR, record.error or outcome.state.value))
        metrics.webhook_attempt_seconds.observe(time.monotonic() - started)
        metrics.webhook_deliveries.labels(_OUTCOME_LABELS[outcome.state]).inc()
        await self._finish(delivery, record, outcome)

    def _outcome(
        self, delivery: ClaimedDelivery, response: Response | None, problem: DeliveryError | None
    ) -> AttemptOutcome:
        if problem is not None and problem.refused:
            return AttemptOutcome(DeliveryState.FAILED, None, str(problem), endpoint_failed=True)
        status = None if response is None else response.status
        judged = verdict(status)
        if judged is Verdict.SUCCEEDED:
            return AttemptOutcome(DeliveryState.SUCCEEDED, None, "", endpoint_failed=False)
        error = str(problem) if response is None else _status_error(response)
        if judged is Verdict.FAILED:
            return AttemptOutcome(DeliveryState.FAILED, None, error, endpoint_failed=True)
        now = self._clock()
        retry_after = None if response is None else response.headers.get("retry-after")
        due = self._policy.next_attempt_at(
            attempts_made=delivery.round_attempts + 1,
            round_started_at=delivery.round_started_at,
            now=now,
            retry_after=retry_after_seconds(retry_after, now),
            rng=self._rng,
        )
        if due is None:
            error = f"gave up after {delivery.round_attempts + 1} attempts; last: {error}"
            return AttemptOutcome(DeliveryState.PARKED, None, error, endpoint_failed=True)
        return AttemptOutcome(DeliveryState.PENDING, due, error, endpoint_failed=True)

    async def _finish(
        self, delivery: ClaimedDelivery, record: AttemptRecord, outcome: AttemptOutcome
    ) -> None:
        """Records the attempt, waiting out a database outage (the result would otherwise be
        lost and the delivery sent again when its lease expires)."""
        backoff = 0.2
        while True:
            try:
                kept = await self._queue.finish(self._owner, delivery, record, outcome)
            except Exception as error:
                if not is_transient(error):
                    raise
                self._blocked(error)
                await asyncio.sleep(backoff)
                backoff = min(MAX_OUTAGE_BACKOFF, backoff * 2)
                continue
            if backoff > 0.2:
                self._unblocked()
            if not kept:
                log.warning(
                    "webhook delivery lease lost before its attempt was recorded",
                    extra={"delivery_id": delivery.delivery_id},
                )
            return

    def _blocked(self, error: BaseException) -> None:
        log.warning(
            "webhook sender waiting for a dependency",
            extra={"dependency": dependency_of(error), "error": str(error)},
        )
        if self._board is not None:
            self._board.block(WORKER, dependency_of(error), str(error))

    def _unblocked(self) -> None:
        if self._board is not None:
            self._board.unblock(WORKER)


def _status_error(response: Response) -> str:
    if 300 <= response.status <= 399:
        location = response.headers.get("location", "")
        return f"HTTP {response.status}: redirects are not followed" + (
            f" (to {location[:200]})" if location else ""
        )
    if verdict(response.status) is Verdict.FAILED:
        return f"HTTP {response.status}: not retried (only 408, 429 and 5xx are)"
    return f"HTTP {response.status}"


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
