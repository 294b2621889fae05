"""What becomes of a webhook delivery after each attempt, against real Postgres with a real
sender (built by the webhook bootstrap, fast retry settings) and real HTTP receivers on
127.0.77.x: retries, parking, Retry-After, final failures, redirects not followed, long and
missing answers, refused connections, disabling a failing endpoint and enabling it again,
replays, secret rotation, and the address check made again at every send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition, NotFound
from services.webhook import handlers
from services.webhook.domain.model import RegisteredWebhook, Webhook
from tests.integration.webhook_harness import (
    Receiver,
    Reply,
    Request,
    WebhookContext,
    answering,
    fast_settings,
    never_answering,
    receivers,
    running,
)

pytestmark = pytest.mark.integration

TEN_MEGABYTES = 10 * 1024 * 1024


async def webhook(webhooks: WebhookContext, hook: RegisteredWebhook) -> Webhook:
    return await handlers.get_webhook(
        hook.webhook.user_id, hook.webhook.webhook_id, webhooks.repository
    )


def signed_by(request: Request, secret: str) -> bool:
    """The request carries ``secret``'s signatures: the original scheme's header and one of
    the Standard Webhooks signatures."""
    body = request.body
    original = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    signed = f"{request.delivery_id}.{request.headers['webhook-timestamp']}.".encode() + body
    standard = "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
    return (
        request.headers["x-webhook-signature"] == original
        and standard in request.headers["webhook-signature"].split()
    )


# --- retries ---------------------------------------------------------------------------------


async def test_a_delivery_failing_twice_succeeds_at_its_third_attempt(
    webhooks: WebhookContext,
) -> None:
    replies = (Reply(503, b"busy 1"), Reply(503, b"busy 2"), Reply(200, b"thanks"))
    async with receivers(answering(*replies)) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings(MAX_ATTEMPTS="3"))):
            await webhooks.until_states([delivery_id], "succeeded")

    [delivery] = await webhooks.log(hook)
    assert delivery.delivery_id == delivery_id
    assert (delivery.state, delivery.last_error) == ("succeeded", "")
    attempts = [(a.number, a.status_code, a.response_excerpt, a.error) for a in delivery.attempts]
    assert attempts == [
        (3, 200, "thanks", ""),
        (2, 503, "busy 2", "HTTP 503"),
        (1, 503, "busy 1", "HTTP 503"),
    ]
    assert all(attempt.latency_ms >= 0 for attempt in delivery.attempts)
    assert [r.headers["x-webhook-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert {r.delivery_id for r in receiver.requests} == {delivery_id}
    assert len({r.body for r in receiver.requests}) == 1
    assert all(signed_by(request, hook.secret) for request in receiver.requests)
    assert (await webhook(webhooks, hook)).consecutive_failures == 0


async def test_a_delivery_that_always_fails_is_parked_after_its_last_attempt(
    webhooks: WebhookContext,
) -> None:
    async with receivers(answering(Reply(500, b"broken"))) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings(MAX_ATTEMPTS="3"))):
            await webhooks.until_states([delivery_id], "parked")

    [delivery] = await webhooks.log(hook)
    assert delivery.last_error.startswith("gave up after 3 attempts")
    assert "HTTP 500" in delivery.last_error
    assert [(a.number, a.status_code) for a in delivery.attempts] == [
        (3, 500),
        (2, 500),
        (1, 500),
    ]
    assert receiver.ids() == [delivery_id] * 3
    assert (await webhook(webhooks, hook)).parked_deliveries == 1


async def test_retry_after_is_waited_out_before_the_next_attempt(webhooks: WebhookContext) -> None:
    replies = (Reply(429, b"slow down", [("Retry-After", "2")]), Reply())
    async with receivers(answering(*replies)) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings(MAX_ATTEMPTS="3"))):
            await webhooks.until_states([delivery_id], "succeeded")

    second, first = (await webhooks.log(hook))[0].attempts
    assert (first.status_code, second.status_code) == (429, 200)
    assert (second.started_at - first.started_at).total_seconds() >= 2
    assert receiver.requests[1].arrived - receiver.requests[0].arrived >= 2 - 0.05


async def test_a_client_error_fails_the_delivery_at_once(webhooks: WebhookContext) -> None:
    async with receivers(answering(Reply(410, b"gone"))) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings())):
            await webhooks.until_states([delivery_id], "failed")

    [delivery] = await webhooks.log(hook)
    assert delivery.last_error.startswith("HTTP 410: not retried")
    [attempt] = delivery.attempts
    assert (attempt.number, attempt.status_code, attempt.response_excerpt) == (1, 410, "gone")
    assert receiver.ids() == [delivery_id]


async def test_a_redirect_is_not_followed(webhooks: WebhookContext) -> None:
    async with receivers(answering()) as [elsewhere]:
        moved = Reply(302, b"", [("Location", elsewhere.url("/elsewhere"))])
        async with receivers(answering(moved)) as [receiver]:
            hook = await webhooks.register(receiver.url())
            [delivery_id] = await webhooks.record(hook)
            async with running(webhooks.sender(fast_settings())):
                await webhooks.until_states([delivery_id], "failed")

    [delivery] = await webhooks.log(hook)
    assert delivery.last_error == (
        f"HTTP 302: redirects are not followed (to {elsewhere.url('/elsewhere')})"
    )
    assert [a.status_code for a in delivery.attempts] == [302]
    assert receiver.ids() == [delivery_id]
    assert elsewhere.connections == 0


@pytest.mark.parametrize("character", ["x", "€"], ids=["ascii", "three-byte"])
async def test_only_the_first_kib_of_a_huge_answer_is_read_and_kept(
    webhooks: WebhookContext, character: str
) -> None:
    encoded = character.encode()
    huge = encoded * (TEN_MEGABYTES // len(encoded))
    async with receivers(answering(Reply(200, huge))) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings())):
            await webhooks.until_states([delivery_id], "succeeded")

    [attempt] = (await webhooks.log(hook))[0].attempts
    assert attempt.latency_ms < 2000
    kept = attempt.response_excerpt.encode()
    # The log keeps the first KiB of the answer: whole characters of it, nothing added.
    assert len(kept) <= 1024, f"{len(kept)} bytes kept, ending {kept[-6:]!r}"
    assert len(kept) > 1024 - len(encoded) and huge.startswith(kept), f"ends {kept[-6:]!r}"


async def test_an_endpoint_that_never_answers_times_out_and_is_retried(
    webhooks: WebhookContext,
) -> None:
    async with receivers(never_answering) as [receiver]:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        env = fast_settings(TIMEOUT_SECONDS="1", LEASE_SECONDS="5", MAX_ATTEMPTS="10")
        async with running(webhooks.sender(env)):
            await webhooks.until_attempted(hook)

    [delivery] = await webhooks.log(hook)
    assert delivery.delivery_id == delivery_id
    attempt = delivery.attempts[-1]
    assert attempt.number == 1
    assert attempt.status_code is None
    assert "timed out after 1 s" in attempt.error
    assert 1000 <= attempt.latency_ms < 2000
    assert receiver.connections >= 1
    assert delivery.state == "pending"
    assert delivery.last_error == delivery.attempts[0].error


async def test_a_refused_connection_is_retried(webhooks: WebhookContext) -> None:
    host, port = unused_address()
    hook = await webhooks.register(f"http://{host}:{port}/hook")
    [delivery_id] = await webhooks.record(hook)
    async with running(webhooks.sender(fast_settings(MAX_ATTEMPTS="10"))):
        await webhooks.until_attempted(hook)

    [delivery] = await webhooks.log(hook)
    assert (delivery.delivery_id, delivery.state) == (delivery_id, "pending")
    assert delivery.next_attempt_at is not None
    assert delivery.last_error.startswith("could not connect")
    assert delivery.attempts[0].error == delivery.last_error
    assert {attempt.status_code for attempt in delivery.attempts} == {None}


def unused_address() -> tuple[str, int]:
    """An address in the allow-listed network where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.77.250", 0))
        host, port = probe.getsockname()[:2]
    return host, port


# --- disabling an endpoint -------------------------------------------------------------------


async def test_a_failing_endpoint_is_disabled_and_its_deliveries_wait_parked_for_a_replay(
    webhooks: WebhookContext,
) -> None:
    recovered = False

    async def failing_until_recovered(request: Request) -> Reply:
        return Reply() if recovered else Reply(500, b"down")

    async with receivers(failing_until_recovered) as [receiver]:
        hook = await webhooks.register(receiver.url())
        ids = await webhooks.record_for_orders(hook, 6)
        env = fast_settings(DISABLE_AFTER_FAILURES="3", MAX_ATTEMPTS="10")
        async with running(webhooks.sender(env)):
            await webhooks.until_states(ids, "parked")
            disabled = await webhook(webhooks, hook)
            parked_because = {row["last_error"] for row in (await webhooks.rows(*ids)).values()}
            sent_while_failing = len(receiver.requests)

            owner, webhook_id = hook.webhook.user_id, hook.webhook.webhook_id
            enabled = await handlers.enable_webhook(owner, webhook_id, webhooks.repository)
            assert (await webhooks.states(*ids)) == dict.fromkeys(ids, "parked")
            recovered = True
            assert await handlers.replay_parked(owner, webhook_id, webhooks.repository) == 6
            await webhooks.until_states(ids, "succeeded")

    assert not disabled.active
    assert disabled.disabled_at is not None
    assert disabled.disabled_reason.startswith("disabled after 3 consecutive failed attempts")
    assert (disabled.pending_deliveries, disabled.parked_deliveries) == (0, 6)
    assert all("disabled" in reason for reason in parked_because), parked_because
    assert 3 <= sent_while_failing <= 6
    for delivery in await webhooks.log(hook):
        assert delivery.state == "succeeded"
    assert (enabled.active, enabled.disabled_reason, enabled.consecutive_failures) == (True, "", 0)
    answered = Counter(receiver.ids()[sent_while_failing:])
    assert answered == Counter(ids)
    assert (await webhook(webhooks, hook)).parked_deliveries == 0


# --- the API's own deliveries: test events, replays, rotated secrets -------------------------


async def test_a_test_event_and_a_replay_are_sent_like_any_delivery(
    webhooks: WebhookContext,
) -> None:
    async with receivers(answering()) as [receiver]:
        hook = await webhooks.register(receiver.url())
        owner, webhook_id = hook.webhook.user_id, hook.webhook.webhook_id
        async with running(webhooks.sender(fast_settings())):
            test_event = await handlers.send_test_event(owner, webhook_id, webhooks.repository)
            await webhooks.until_states([test_event.delivery_id], "succeeded")
            with pytest.raises(NotFound):
                await handlers.replay_delivery(
                    f"itest-{uuid.uuid4()}", webhook_id, test_event.delivery_id, webhooks.repository
                )
            replayed = await handlers.replay_delivery(
                owner, webhook_id, test_event.delivery_id, webhooks.repository
            )
            assert replayed.state == "pending"
            await webhooks.until_states([test_event.delivery_id], "succeeded")

    first, second = receiver.requests
    assert first.document["type"] == "webhook.test"
    assert first.document["data"]["webhook_id"] == webhook_id
    assert first.body == second.body
    assert (first.delivery_id, second.delivery_id) == (test_event.delivery_id,) * 2
    assert [r.headers["x-webhook-attempt"] for r in receiver.requests] == ["1", "2"]
    [delivery] = await webhooks.log(hook)
    assert [attempt.number for attempt in delivery.attempts] == [2, 1]


async def test_a_pending_delivery_cannot_be_replayed(webhooks: WebhookContext) -> None:
    hook = await webhooks.register("http://127.0.77.1/never-sent")
    [delivery_id] = await webhooks.record(hook)
    with pytest.raises(FailedPrecondition):
        await handlers.replay_delivery(
            hook.webhook.user_id, hook.webhook.webhook_id, delivery_id, webhooks.repository
        )


async def test_a_rotated_secret_signs_beside_the_previous_one_during_its_grace(
    webhooks: WebhookContext,
) -> None:
    async with receivers(answering()) as [receiver]:
        hook = await webhooks.register(receiver.url())
        owner, webhook_id = hook.webhook.user_id, hook.webhook.webhook_id
        rotated = await handlers.rotate_secret(
            owner, webhook_id, 3600, webhooks.repository, default_grace=timedelta(hours=24)
        )
        async with running(webhooks.sender(fast_settings())):
            [during_grace] = await webhooks.record(hook)
            await webhooks.until_states([during_grace], "succeeded")
            final = await handlers.rotate_secret(
                owner, webhook_id, 0, webhooks.repository, default_grace=timedelta(hours=24)
            )
            [after_grace] = await webhooks.record(hook)
            await webhooks.until_states([after_grace], "succeeded")

    first, second = receiver.requests
    assert signed_by(first, rotated.secret)
    previous = "sha256=" + hmac.new(hook.secret.encode(), first.body, hashlib.sha256).hexdigest()
    assert first.headers["x-webhook-signature-previous"] == previous
    assert len(first.headers["webhook-signature"].split()) == 2
    assert signed_by(second, final.secret)
    assert "x-webhook-signature-previous" not in second.headers
    assert len(second.headers["webhook-signature"].split()) == 1


# --- the address check at every send ---------------------------------------------------------


async def test_the_address_is_checked_again_at_every_send(
    webhooks: WebhookContext, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    name = f"hooks-{uuid.uuid4().hex[:8]}.itest"
    async with receivers(answering()) as [receiver], loopback_twin(receiver) as twin:
        hosts.write_text(f"{receiver.host} {name}\n")
        env = fast_settings(HOSTS_FILE=str(hosts))
        hook = await webhooks.register(f"http://{name}:{receiver.port}/hook", env=env)
        async with running(webhooks.sender(env)):
            [allowed] = await webhooks.record(hook)
            await webhooks.until_states([allowed], "succeeded")

            # Rebound to an address the allow-list does not cover.
            hosts.write_text(f"127.0.0.1 {name}\n")
            [rebound] = await webhooks.record(hook)
            await webhooks.until_states([rebound], "failed")

            # Rebound to the cloud metadata address: refused before any connection.
            hosts.write_text(f"169.254.169.254 {name}\n")
            [metadata] = await webhooks.record(hook)
            await webhooks.until_states([metadata], "failed")

    assert receiver.ids() == [allowed]
    assert twin.connections == 0
    rows = await webhooks.rows(rebound, metadata)
    assert rows[rebound]["last_error"].startswith("refused")
    assert "127.0.0.1" in rows[rebound]["last_error"]
    assert rows[metadata]["last_error"].startswith("refused")
    assert "169.254.169.254" in rows[metadata]["last_error"]
    log = {delivery.delivery_id: delivery for delivery in await webhooks.log(hook)}
    [metadata_attempt] = log[metadata].attempts
    assert metadata_attempt.status_code is None
    # A connection attempt to an address nothing answers would have taken the connect
    # timeout (1 s) and said "could not connect".
    assert metadata_attempt.latency_ms < 500


@asynccontextmanager
async def loopback_twin(receiver: Receiver) -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 at the same port: where a send to a name rebound to
    127.0.0.1 would arrive if the check let it through."""
    twin = Receiver(answering())
    await twin.start("127.0.0.1", receiver.port)
    try:
        yield twin
    finally:
        await twin.close()
