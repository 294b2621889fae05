"""The webhook sender (services/webhook/sender.py) over an in-memory delivery queue and a
scripted poster: what each answer does to a delivery, the headers of an attempt, waiting out
a database outage, wake-ups, the concurrency cap and a graceful stop."""

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import psycopg
import pytest
from standardwebhooks import Webhook as StandardWebhook

from services.common.clock import utc_now
from services.platform.messaging.state import StateBoard
from services.webhook import sender as sender_module
from services.webhook.domain.delivery import DeliveryState, RetryPolicy, delivery_body
from services.webhook.domain.model import Target
from services.webhook.domain.ports import ClaimedDelivery, DeliveryError, Response
from services.webhook.domain.rules import new_signing_secret
from services.webhook.sender import WORKER, Listener, WebhookSender
from tests.unit.fakes.webhook import FakeDeliveryQueue, FakePoster, Finished
from tests.unit.test_webhook_delivery import verify_webhook

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ROUND_STARTED = NOW - timedelta(minutes=5)
TARGET = Target("https://hooks.example.com/orders", "hooks.example.com", 443, "https", "/orders")
SECRET = new_signing_secret()
OWNER = "sender-under-test"
# Long enough that a test passing quickly shows the sender did not wait for it.
LONG_POLL = 30.0
REAL_SLEEP = asyncio.sleep


def claimed(
    *,
    attempts: int = 0,
    round_attempts: int = 0,
    secrets: tuple[str, ...] = (SECRET,),
    order_id: str | None = "order-1",
) -> ClaimedDelivery:
    delivery_id = str(uuid.uuid4())
    return ClaimedDelivery(
        delivery_id=delivery_id,
        webhook_id="webhook-1",
        event_type="order.paid",
        order_id=order_id,
        body=delivery_body(delivery_id, "order.paid", NOW, {"order_id": order_id}),
        attempts=attempts,
        round_attempts=round_attempts,
        round_started_at=ROUND_STARTED,
        target=TARGET,
        secrets=secrets,
    )


def make_sender(
    queue: FakeDeliveryQueue,
    poster: FakePoster,
    *,
    policy: RetryPolicy | None = None,
    concurrency: int = 4,
    shutdown_grace: float = 1.0,
    clock: Callable[[], datetime] = lambda: NOW,
    board: StateBoard | None = None,
    listener: Listener | None = None,
) -> WebhookSender:
    return WebhookSender(
        queue,
        poster,
        policy or RetryPolicy(),
        owner=OWNER,
        concurrency=concurrency,
        poll_interval=LONG_POLL,
        shutdown_grace=shutdown_grace,
        listener=listener,
        board=board,
        clock=clock,
        rng=random.Random(42),
    )


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Bounded polling for an effect."""
    async with asyncio.timeout(within):
        while not condition():
            await REAL_SLEEP(0.005)


@asynccontextmanager
async def running(sender: WebhookSender) -> AsyncIterator[asyncio.Event]:
    """The sender running until the block ends; then stopped, and its run awaited."""
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def send_one(
    answer: Response | DeliveryError,
    delivery: ClaimedDelivery | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> Finished:
    """The recorded attempt of one delivery, answered with ``answer``."""
    queue = FakeDeliveryQueue(due=[delivery or claimed()])
    poster = FakePoster(answers=[answer])
    async with running(make_sender(queue, poster, policy=policy)):
        await eventually(lambda: bool(queue.finished))
    [finished] = queue.finished
    return finished


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    return Response(status, headers or {}, body)


# --- what an answer does to the delivery ------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204, 299])
async def test_a_2xx_succeeds(status: int) -> None:
    finished = await send_one(response(status, body=b'{"received":true}'))
    outcome, attempt = finished.outcome, finished.attempt
    assert (outcome.state, outcome.next_attempt_at, outcome.error, outcome.endpoint_failed) == (
        DeliveryState.SUCCEEDED,
        None,
        "",
        False,
    )
    assert (attempt.started_at, attempt.status_code, attempt.response_excerpt, attempt.error) == (
        NOW,
        status,
        '{"received":true}',
        "",
    )
    assert 0 <= attempt.latency_ms < 1000


@pytest.mark.parametrize("status", [500, 503, 408])
async def test_a_server_error_is_retried_later(status: int) -> None:
    finished = await send_one(response(status, body=b"down \x00for maintenance"))
    outcome, attempt = finished.outcome, finished.attempt
    assert (outcome.state, outcome.error, outcome.endpoint_failed) == (
        DeliveryState.PENDING,
        f"HTTP {status}",
        True,
    )
    assert outcome.next_attempt_at is not None
    # The first retry of a round waits at most the base delay.
    assert NOW <= outcome.next_attempt_at <= NOW + timedelta(seconds=10)
    assert (attempt.status_code, attempt.response_excerpt, attempt.error) == (
        status,
        "down for maintenance",
        f"HTTP {status}",
    )


async def test_later_retries_of_a_round_wait_longer() -> None:
    finished = await send_one(response(500), claimed(attempts=9, round_attempts=6))
    due = finished.outcome.next_attempt_at
    # Retry 7 of the round: up to 10 s * 2^6.
    assert due is not None and NOW <= due <= NOW + timedelta(seconds=640)


async def test_a_429_with_retry_after_seconds_waits_at_least_that_long() -> None:
    finished = await send_one(response(429, {"retry-after": "2"}))
    due = finished.outcome.next_attempt_at
    assert finished.outcome.state is DeliveryState.PENDING
    assert due is not None and NOW + timedelta(seconds=2) <= due <= NOW + timedelta(seconds=10)
    assert finished.outcome.error == "HTTP 429"


async def test_a_503_with_retry_after_as_a_date_waits_until_then() -> None:
    until = format_datetime(NOW + timedelta(minutes=3), usegmt=True)
    finished = await send_one(response(503, {"retry-after": until}))
    assert finished.outcome.next_attempt_at == NOW + timedelta(minutes=3)


async def test_an_unreadable_retry_after_is_ignored() -> None:
    finished = await send_one(response(503, {"retry-after": "whenever"}))
    due = finished.outcome.next_attempt_at
    assert due is not None and NOW <= due <= NOW + timedelta(seconds=10)


# Regression: a Retry-After of non-ASCII digits is ignored and the attempt is recorded.
async def test_a_retry_after_with_non_ascii_digits_is_ignored_and_the_attempt_recorded() -> None:
    queue = FakeDeliveryQueue(due=[claimed()])
    poster = FakePoster(answers=[response(503, {"retry-after": "\u00b2"})])
    async with running(make_sender(queue, poster)):
        await eventually(lambda: bool(poster.posted))
        await eventually(lambda: bool(queue.finished), within=0.5)
    assert queue.finished[0].outcome.state is DeliveryState.PENDING


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_a_client_error_fails_at_once(status: int) -> None:
    finished = await send_one(response(status, body=b"no such hook"))
    assert (
        finished.outcome.state,
        finished.outcome.next_attempt_at,
        finished.outcome.error,
        finished.outcome.endpoint_failed,
    ) == (
        DeliveryState.FAILED,
        None,
        f"HTTP {status}: not retried (only 408, 429 and 5xx are)",
        True,
    )
    assert finished.attempt.response_excerpt == "no such hook"


async def test_a_redirect_fails_and_is_not_followed() -> None:
    queue = FakeDeliveryQueue(due=[claimed()])
    poster = FakePoster(answers=[response(302, {"location": "https://elsewhere.example/x"})])
    async with running(make_sender(queue, poster)):
        await eventually(lambda: bool(queue.finished))
    [finished] = queue.finished
    assert finished.outcome.state is DeliveryState.FAILED
    assert finished.outcome.error == (
        "HTTP 302: redirects are not followed (to https://elsewhere.example/x)"
    )
    assert "redirects are not followed" in finished.attempt.error
    assert len(poster.posted) == 1


async def test_a_redirect_without_a_location_fails_too() -> None:
    finished = await send_one(response(301))
    assert (finished.outcome.state, finished.outcome.error) == (
        DeliveryState.FAILED,
        "HTTP 301: redirects are not followed",
    )


async def test_a_refused_address_fails_at_once() -> None:
    message = "refused: host 'hooks.example.com' resolves to non-public addresses (10.0.0.8)"
    finished = await send_one(DeliveryError(message, refused=True))
    assert (
        finished.outcome.state,
        finished.outcome.next_attempt_at,
        finished.outcome.error,
        finished.outcome.endpoint_failed,
    ) == (DeliveryState.FAILED, None, message, True)
    assert (finished.attempt.status_code, finished.attempt.response_excerpt) == (None, "")
    assert finished.attempt.error == message


async def test_a_network_error_is_retried_later() -> None:
    finished = await send_one(DeliveryError("could not connect: 93.184.215.14: refused"))
    outcome = finished.outcome
    assert (outcome.state, outcome.error, outcome.endpoint_failed) == (
        DeliveryState.PENDING,
        "could not connect: 93.184.215.14: refused",
        True,
    )
    assert outcome.next_attempt_at is not None
    assert NOW <= outcome.next_attempt_at <= NOW + timedelta(seconds=10)
    assert (finished.attempt.status_code, finished.attempt.response_excerpt) == (None, "")


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        (Response(500, {}, b""), "HTTP 500"),
        (DeliveryError("timed out after 10 s without a complete response"), "timed out after 10 s"),
    ],
)
async def test_the_last_attempt_of_a_round_failing_parks_the_delivery(
    answer: Response | DeliveryError, last: str
) -> None:
    finished = await send_one(answer, claimed(attempts=20, round_attempts=14))
    outcome = finished.outcome
    assert (outcome.state, outcome.next_attempt_at, outcome.endpoint_failed) == (
        DeliveryState.PARKED,
        None,
        True,
    )
    assert outcome.error.startswith(f"gave up after 15 attempts; last: {last}")
    assert finished.attempt.error == outcome.error


async def test_the_second_to_last_attempt_failing_schedules_the_last_a_day_after_the_round() -> (
    None
):
    finished = await send_one(response(500), claimed(round_attempts=13))
    assert finished.outcome.state is DeliveryState.PENDING
    due = finished.outcome.next_attempt_at
    assert due is not None and due >= ROUND_STARTED + timedelta(hours=24)


async def test_a_client_error_on_the_last_attempt_is_a_failure_not_parked() -> None:
    finished = await send_one(response(404), claimed(round_attempts=14))
    assert finished.outcome.state is DeliveryState.FAILED


async def test_the_configured_number_of_attempts_is_kept() -> None:
    policy = RetryPolicy(max_attempts=3, min_span=timedelta(0))
    finished = await send_one(response(500), claimed(round_attempts=2), policy=policy)
    assert finished.outcome.state is DeliveryState.PARKED
    assert finished.outcome.error == "gave up after 3 attempts; last: HTTP 500"


# --- the request ------------------------------------------------------------------------------


async def test_the_request_carries_the_body_the_id_the_attempt_number_and_the_signatures() -> None:
    previous = new_signing_secret()
    delivery = claimed(attempts=6, round_attempts=0, secrets=(SECRET, previous))
    queue = FakeDeliveryQueue(due=[delivery])
    poster = FakePoster()
    # A real clock: Standard Webhooks verification wants a recent timestamp.
    async with running(make_sender(queue, poster, clock=utc_now)):
        await eventually(lambda: bool(queue.finished))
    [posted] = poster.posted
    assert (posted.target, posted.body) == (TARGET, delivery.body)
    headers = posted.headers
    assert headers["X-Webhook-Id"] == headers["webhook-id"] == delivery.delivery_id
    assert headers["X-Webhook-Attempt"] == "7"
    assert json.loads(posted.body)["id"] == delivery.delivery_id
    assert verify_webhook(posted.body.decode(), headers["X-Webhook-Signature"], SECRET)
    assert verify_webhook(posted.body.decode(), headers["X-Webhook-Signature-Previous"], previous)
    for secret in (SECRET, previous):
        StandardWebhook(secret).verify(posted.body, headers)
    started_at = queue.finished[0].attempt.started_at
    assert headers["webhook-timestamp"] == str(int(started_at.timestamp()))


@pytest.mark.parametrize("attempts", [0, 1, 14, 40])
async def test_the_attempt_header_counts_every_attempt_so_far(attempts: int) -> None:
    queue = FakeDeliveryQueue(due=[claimed(attempts=attempts, round_attempts=0)])
    poster = FakePoster()
    async with running(make_sender(queue, poster)):
        await eventually(lambda: bool(queue.finished))
    assert poster.posted[0].headers["X-Webhook-Attempt"] == str(attempts + 1)


# --- recording the attempt through a database outage -------------------------------------------


async def test_a_transient_error_recording_the_attempt_is_retried_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    board = StateBoard("workers")
    waits: list[tuple[float, tuple[str, ...]]] = []

    async def quick_sleep(seconds: float) -> None:
        waits.append((seconds, tuple(b.dependency for b in board.blocked())))
        await REAL_SLEEP(0)

    monkeypatch.setattr(asyncio, "sleep", quick_sleep)
    queue = FakeDeliveryQueue(
        due=[claimed()],
        finish_failures=[
            psycopg.OperationalError("server closed the connection unexpectedly"),
            psycopg.OperationalError("connection refused"),
            psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        ],
    )
    poster = FakePoster(answers=[response(500)])
    async with running(make_sender(queue, poster, board=board)):
        await eventually(lambda: bool(queue.finished))
    assert len(poster.posted) == 1
    assert len(queue.finish_calls) == 4
    assert {(call.attempt, call.outcome) for call in queue.finish_calls} == {
        (queue.finished[0].attempt, queue.finished[0].outcome)
    }
    assert queue.finished[0].outcome.state is DeliveryState.PENDING
    # Backing off, doubling, while the board shows the sender waiting for Postgres.
    assert waits == [(0.2, ("postgres",)), (0.4, ("postgres",)), (0.8, ("postgres",))]
    assert board.blocked() == ()


async def test_an_error_recording_the_attempt_that_is_not_transient_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = claimed(), claimed()
    queue = FakeDeliveryQueue(due=[first, second], finish_failures=[ValueError("bug")])
    sender = make_sender(queue, FakePoster(), concurrency=1)
    with caplog.at_level(logging.ERROR, logger=sender_module.__name__):
        async with running(sender):
            # The sender goes on with the next delivery.
            await eventually(lambda: bool(queue.finished))
    assert [f.delivery for f in queue.finish_calls] == [first, second]
    assert "webhook delivery task failed" in caplog.text


async def test_a_lost_lease_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    queue = FakeDeliveryQueue(due=[claimed()], lease_kept=False)
    with caplog.at_level(logging.WARNING, logger=sender_module.__name__):
        async with running(make_sender(queue, FakePoster())):
            await eventually(lambda: bool(queue.finished))
    assert "lease lost" in caplog.text


async def test_a_claim_during_an_outage_waits_and_the_sender_goes_on() -> None:
    board = StateBoard("workers")
    delivery = claimed()
    queue = FakeDeliveryQueue(
        due=[delivery], claim_failures=[psycopg.OperationalError("connection refused")]
    )
    sender = make_sender(queue, FakePoster(), board=board)
    async with running(sender):
        await eventually(lambda: len(queue.claims) == 1)
        assert [(b.worker, b.dependency) for b in board.blocked()] == [(WORKER, "postgres")]
        await eventually(lambda: bool(queue.finished))
    assert board.blocked() == ()
    assert queue.finished[0].delivery == delivery


async def test_a_claim_error_that_is_not_transient_stops_the_sender() -> None:
    queue = FakeDeliveryQueue(claim_failures=[RuntimeError("schema missing")])
    sender = make_sender(queue, FakePoster())
    with pytest.raises(RuntimeError, match="schema missing"):
        async with asyncio.timeout(2):
            await sender.run(asyncio.Event())


# --- wake-ups and the concurrency cap ----------------------------------------------------------


async def test_a_finished_attempt_wakes_the_sender_to_claim_again_at_once() -> None:
    first, second = claimed(), claimed()
    # The second becomes due only once the first is recorded (the same order's next event).
    queue = FakeDeliveryQueue(due=[first], waiting=[second])
    poster = FakePoster()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(make_sender(queue, poster)):
        await eventually(lambda: len(queue.finished) == 2, within=1.0)
    assert [f.delivery for f in queue.finished] == [first, second]
    assert len(queue.claims) >= 2
    assert queue.claimed_at[1] - started < 1.0 < LONG_POLL


async def test_a_notification_wakes_the_sender() -> None:
    wake_up: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    async def listener(wake: asyncio.Event, stop: asyncio.Event) -> None:
        await wake_up.put(wake)
        await stop.wait()

    queue = FakeDeliveryQueue()
    async with running(make_sender(queue, FakePoster(), listener=listener)):
        wake = await asyncio.wait_for(wake_up.get(), 1.0)
        await eventually(lambda: len(queue.claims) == 1)
        queue.due.append(claimed())
        wake.set()
        await eventually(lambda: bool(queue.finished), within=1.0)


async def test_no_more_than_the_concurrency_are_in_flight() -> None:
    deliveries = [claimed() for _ in range(5)]
    queue = FakeDeliveryQueue(due=list(deliveries))
    poster = FakePoster(hold=asyncio.Event())
    async with running(make_sender(queue, poster, concurrency=2)):
        await eventually(lambda: len(poster.posted) == 2)
        await REAL_SLEEP(0.05)
        assert (len(poster.posted), queue.claims) == (2, [2])
        assert poster.hold is not None
        poster.hold.set()
        await eventually(lambda: len(queue.finished) == 5)
    assert poster.most_in_flight == 2
    assert all(limit <= 2 for limit in queue.claims)
    assert {f.delivery.delivery_id for f in queue.finished} == {d.delivery_id for d in deliveries}
    assert queue.owners == {OWNER}


# --- stopping ----------------------------------------------------------------------------------


async def test_stopping_cancels_an_attempt_past_the_grace_and_gives_its_lease_back() -> None:
    stuck = claimed()
    queue = FakeDeliveryQueue(due=[stuck])
    poster = FakePoster(hold=asyncio.Event())
    sender = make_sender(queue, poster, shutdown_grace=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    await eventually(lambda: len(poster.posted) == 1)
    stop.set()
    async with asyncio.timeout(2):
        await task
    assert poster.cancelled == [stuck.delivery_id]
    assert queue.released == [stuck.delivery_id]
    assert queue.finished == []


async def test_stopping_lets_an_attempt_within_the_grace_finish() -> None:
    delivery = claimed()
    queue = FakeDeliveryQueue(due=[delivery])
    hold = asyncio.Event()
    poster = FakePoster(hold=hold)
    sender = make_sender(queue, poster, shutdown_grace=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    await eventually(lambda: len(poster.posted) == 1)
    stop.set()
    await REAL_SLEEP(0.02)
    assert not task.done()
    hold.set()
    async with asyncio.timeout(2):
        await task
    assert [f.delivery for f in queue.finished] == [delivery]
    assert (poster.cancelled, queue.released) == ([], [])


async def test_stopping_an_idle_sender_is_prompt() -> None:
    queue = FakeDeliveryQueue()
    stop = asyncio.Event()
    task = asyncio.create_task(make_sender(queue, FakePoster()).run(stop))
    await eventually(lambda: len(queue.claims) == 1)
    stop.set()
    async with asyncio.timeout(0.5):
        await task
    assert queue.released == []
