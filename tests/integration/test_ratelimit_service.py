"""The rate-limit service against the real Redis: the sliding log admits exactly the limit in
any window-long span, frees capacity one request at a time, admits a call into all of its
limits or none, survives a script flush, fails fast when Redis is away, and answers Envoy's
RateLimitService as Envoy and the auth service expect."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2, status_pb2
from ordermesh.vendor.envoy_rls.v3 import rls_pb2, rls_pb2_grpc

from devstack import redis as redis_server
from ratelimit.domain import Check, CountersUnavailable, Rate
from ratelimit.window import DECISIONS_KEY, RedisCounters
from tests.integration.envoy_harness import running_ratelimit
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

# The tests count their decisions apart from the stack's (ordermesh status shows those).
TEST_DECISIONS = f"{DECISIONS_KEY}:it"
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


@pytest.fixture
async def client(servers: None) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url())
    yield redis
    await redis.aclose()


def check(rate: Rate, name: str = "") -> Check:
    return Check(f"it:{name or uuid.uuid4().hex}", rate, "test limit", "test")


async def test_the_log_admits_the_limit_and_frees_it_one_request_at_a_time(
    client: aioredis.Redis,
) -> None:
    counters = RedisCounters(client, decisions_key=TEST_DECISIONS)
    limit = check(Rate(5, 2))
    admitted_at = []
    for _ in range(5):
        allowed, [count] = await counters.hit([limit], 1, "it", "free")
        assert allowed
        admitted_at.append(time.monotonic())
        await asyncio.sleep(0.1)
    assert count.in_window == 5
    allowed, [count] = await counters.hit([limit], 1, "it", "free")
    assert not allowed and count.in_window == 5
    assert 1.3 < count.oldest_leaves_in <= 2.0
    # The first request leaves the window 2 s after it came: one slot, not all five.
    await asyncio.sleep(max(0.0, admitted_at[0] + 2.05 - time.monotonic()))
    assert (await counters.hit([limit], 1, "it", "free"))[0]
    assert not (await counters.hit([limit], 1, "it", "free"))[0]


async def test_bursts_at_window_edges_never_exceed_the_limit_in_any_window(
    client: aioredis.Redis,
) -> None:
    """A client bursting around every would-be window boundary: in a sliding log no span as
    long as the window ever holds more than the limit (a fixed window admits up to twice)."""
    counters = RedisCounters(client, decisions_key=TEST_DECISIONS)
    rate = Rate(10, 1)
    limit = check(rate)
    admitted: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < 3.2:
        phase = (time.monotonic() - started) % 1.0
        if phase > 0.9 or phase < 0.1:
            for _ in range(12):
                allowed, _ = await counters.hit([limit], 1, "it", "free")
                if allowed:
                    admitted.append(time.monotonic())
        await asyncio.sleep(0.01)
    most = max(sum(1 for t in admitted if start <= t < start + 0.98) for start in admitted)
    assert most <= rate.requests, f"{most} admitted within one window"
    assert len(admitted) >= 2 * rate.requests, "capacity came back as the window slid"


async def test_a_call_is_admitted_into_all_of_its_limits_or_none(
    client: aioredis.Redis,
) -> None:
    counters = RedisCounters(client, decisions_key=TEST_DECISIONS)
    roomy, tight = check(Rate(100, 60)), check(Rate(1, 60))
    assert (await counters.hit([roomy, tight], 1, "it", "free"))[0]
    allowed, [roomy_count, tight_count] = await counters.hit([roomy, tight], 1, "it", "free")
    assert not allowed
    assert (roomy_count.in_window, tight_count.in_window) == (1, 1), "nothing was consumed"


async def test_decisions_are_counted_by_route_and_tier(client: aioredis.Redis) -> None:
    counters = RedisCounters(client, decisions_key=TEST_DECISIONS)
    route = f"route-{uuid.uuid4().hex[:8]}"
    limit = check(Rate(1, 60))
    await counters.hit([limit], 1, route, "premium")
    await counters.hit([limit], 1, route, "premium")
    await counters.hit([], 1, route, "enterprise")
    counted = await counters.decisions()
    assert counted[f"{route}|premium|allowed"] == 1
    assert counted[f"{route}|premium|limited"] == 1
    assert counted[f"{route}|enterprise|allowed"] == 1
    assert await client.exists(TEST_DECISIONS)


async def test_the_script_is_loaded_again_after_a_flush(client: aioredis.Redis) -> None:
    counters = RedisCounters(client, decisions_key=TEST_DECISIONS)
    limit = check(Rate(3, 60))
    await counters.hit([limit], 1, "it", "free")
    await client.script_flush()
    allowed, [count] = await counters.hit([limit], 1, "it", "free")
    assert allowed and count.in_window == 2


async def test_an_unreachable_redis_fails_fast_then_cools_down() -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=reserve_port(), socket_connect_timeout=0.25, socket_timeout=0.25
    )
    counters = RedisCounters(dead, cooldown=30)
    with pytest.raises(CountersUnavailable):
        await counters.hit([check(Rate(1, 60))], 1, "it", "free")
    started = time.monotonic()
    with pytest.raises(CountersUnavailable, match="cooling down"):
        await counters.hit([check(Rate(1, 60))], 1, "it", "free")
    assert time.monotonic() - started < 0.05
    await dead.aclose()


# --- the service over gRPC ----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The service with the shipped limits (no overrides)."""
    with running_ratelimit(tmp_path_factory.mktemp("rls"), overrides="") as port:
        yield port


@pytest.fixture
async def stub(service: int) -> AsyncIterator[rls_pb2_grpc.RateLimitServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service}") as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)


def envoy_request(method: str, address: str, **extra: str) -> rls_pb2.RateLimitRequest:
    request = rls_pb2.RateLimitRequest(domain="ordermesh")
    descriptor = request.descriptors.add()
    for key, value in {"method": method, "remote_address": address, **extra}.items():
        descriptor.entries.add(key=key, value=value)
    return request


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


async def test_envoys_descriptor_gets_headers_then_a_refusal_with_retry_info(
    stub: rls_pb2_grpc.RateLimitServiceAsyncStub,
) -> None:
    user = uuid.uuid4().hex
    method = "/ordermesh.order.v1.OrderService/CreateOrder"
    for remaining in range(19, -1, -1):
        response = await stub.ShouldRateLimit(
            envoy_request(method, "10.1.2.3", user=user, tier="free")
        )
        assert response.overall_code == OK
        assert headers(response)["x-ratelimit-remaining"] == str(remaining)
        assert headers(response)["x-ratelimit-limit"] == "20"
    grpc_refusal = await stub.ShouldRateLimit(
        envoy_request(method, "10.1.2.3", user=user, tier="free")
    )
    assert grpc_refusal.overall_code == OVER
    sent = headers(grpc_refusal)
    assert int(sent["retry-after"]) >= 1 and sent["x-ratelimit-remaining"] == "0"
    encoded = sent["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert status.code == 8 and "create_order: 20 per minute" in status.message
    assert grpc_refusal.raw_body.decode() == status.message, "grpc-message equals the details'"
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == int(sent["retry-after"])

    rest_refusal = await stub.ShouldRateLimit(
        envoy_request(method, "10.1.2.3", user=user, tier="free", rest_path="/api/v1/orders")
    )
    assert b'"retry_delay"' in rest_refusal.raw_body and b'"code":8' in rest_refusal.raw_body
    assert "grpc-status-details-bin" not in headers(rest_refusal)


async def test_login_attempts_are_counted_per_email_from_any_address(
    stub: rls_pb2_grpc.RateLimitServiceAsyncStub,
) -> None:
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    request = rls_pb2.RateLimitRequest(domain="ordermesh")
    request.descriptors.add().entries.add(key="login_email", value=email)
    codes = [(await stub.ShouldRateLimit(request)).overall_code for _ in range(21)]
    assert codes == [OK] * 20 + [OVER]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (rls_pb2.RateLimitRequest(domain="other"), "domain"),
        (rls_pb2.RateLimitRequest(domain="ordermesh"), "at least one descriptor"),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    stub: rls_pb2_grpc.RateLimitServiceAsyncStub, request_: rls_pb2.RateLimitRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ShouldRateLimit(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


async def test_a_config_edit_is_picked_up_without_a_restart(servers: None, tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    shipped = (Path(__file__).parents[2] / "ratelimit" / "limits.yaml").read_text()
    limits.write_text(shipped)
    with running_ratelimit(tmp_path, overrides="", config=limits) as port:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            request = envoy_request(
                "/ordermesh.auth.v1.AuthService/Register", f"10.9.{uuid.uuid4().int % 250}.1"
            )
            first = await stub.ShouldRateLimit(request)
            assert headers(first)["x-ratelimit-limit"] == "10"
            limits.write_text(shipped.replace("limit: 10/minute", "limit: 3/minute"))
            deadline = time.monotonic() + 10
            while headers(await stub.ShouldRateLimit(request))["x-ratelimit-limit"] != "3":
                assert time.monotonic() < deadline, "the edit was not picked up"
                await asyncio.sleep(0.2)
