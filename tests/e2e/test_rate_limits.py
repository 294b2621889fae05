"""Issue 12's limits through the public port: per route and tier (REST, native gRPC and
grpc-web share one count), per target email for logins from many addresses, per client
address for anonymous calls (never from X-Forwarded-For), a sliding window that frees
capacity gradually, live reloads of the limits file, and what happens while Redis or the
rate-limit service is down (reads and writes fail open, login and register fail closed)."""

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from devstack import procs
from devstack import redis as devredis
from devstack.paths import REPO_ROOT
from devstack.stack import start_app
from ratelimit import config as limits_config
from tests.e2e.conftest import (
    PASSWORD,
    STOCKED,
    User,
    client_at,
    order_body,
    own_address,
    register_and_login,
)
from tests.e2e.pipeline import restart_stack

pytestmark = pytest.mark.e2e

GRPC_WEB_CLIENT = REPO_ROOT / "tests" / "e2e" / "grpcweb" / "client.js"
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def create(http: httpx.Client, user: User) -> httpx.Response:
    return http.post("/api/v1/orders", json=order_body(), headers=user.headers)


def grpc_order(user: User) -> order_pb2.CreateOrderRequest:
    body = order_body()
    request = order_pb2.CreateOrderRequest(payment_method="tok_visa")
    request.items.add(product_id=STOCKED, quantity=2)
    for key, value in body["shipping_address"].items():  # type: ignore[attr-defined]
        setattr(request.shipping_address, key, value)
    return request


def status_body(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body


def assert_limited(response: httpx.Response, limit: int, what: str) -> int:
    """A 429 with the three headers, Retry-After and a google.rpc.Status naming ``what``;
    returns the Retry-After seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= 60 and int(response.headers["x-ratelimit-reset"]) == retry
    body = status_body(response)
    assert body["code"] == 8 and what in body["message"], body
    retry_info = next(d for d in body["details"] if d["@type"].endswith("RetryInfo"))
    assert retry_info["retry_delay"] == f"{retry}s"
    return retry


def test_the_21st_create_in_a_minute_by_a_free_user_is_429_and_the_headers_count_down(
    http: httpx.Client,
) -> None:
    user = register_and_login(http, tier="free")
    for remaining in range(19, -1, -1):
        response = create(http, user)
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "20"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 60
    assert_limited(create(http, user), 20, "create_order: 20 per minute per user (free tier)")
    # Reads have their own limit: the user can still look at their orders.
    listed = http.get("/api/v1/orders", headers=user.headers)
    assert listed.status_code == 200 and listed.json()["total"] == 20
    assert all(header in listed.headers for header in HEADERS)


def test_a_premium_users_route_limit_is_ten_times_the_free_one(http: httpx.Client) -> None:
    user = register_and_login(http, tier="premium")
    for _ in range(21):
        response = create(http, user)
        assert response.status_code == 200, response.text
    assert response.headers["x-ratelimit-limit"] == "200"
    assert response.headers["x-ratelimit-remaining"] == "179"


def test_a_new_tier_takes_effect_with_the_next_token(http: httpx.Client) -> None:
    user = register_and_login(http, tier="free")
    assert create(http, user).headers["x-ratelimit-limit"] == "20"
    subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "ordermesh"),
            "users",
            "set-tier",
            user.email,
            "standard",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert create(http, user).headers["x-ratelimit-limit"] == "20", "the old token says free"
    refreshed = http.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    token = refreshed.json()["access_token"]
    again = http.post(
        "/api/v1/orders", json=order_body(), headers={"Authorization": f"Bearer {token}"}
    )
    assert again.headers["x-ratelimit-limit"] == "40"
    assert again.headers["x-ratelimit-remaining"] == "37", "the count is the user's, kept"


async def test_native_grpc_and_grpc_web_share_the_limit_and_get_resource_exhausted(
    http: httpx.Client, public_port: int
) -> None:
    user = register_and_login(http, tier="free")
    for _ in range(10):
        assert create(http, user).status_code == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{public_port}") as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        for _ in range(10):
            call = orders.CreateOrder(grpc_order(user), metadata=user.grpc_metadata)
            await call
            headers = dict(await call.initial_metadata())
            assert headers["x-ratelimit-limit"] == "20"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await orders.CreateOrder(grpc_order(user), metadata=user.grpc_metadata)
    error = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "create_order: 20 per minute" in (error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and 1 <= retry.retry_delay.seconds <= 60
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["retry-after"] == str(retry.retry_delay.seconds)

    web = await asyncio.to_thread(
        subprocess.run,
        [
            "node",
            str(GRPC_WEB_CLIENT),
            "--base-url",
            str(http.base_url).rstrip("/"),
            "--method",
            "ordermesh.order.v1.OrderService/CreateOrder",
            "--mode",
            "grpcweb",
            "--metadata",
            f"authorization=Bearer {user.access_token}",
            json.dumps(order_body()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(web.stdout.strip().splitlines()[-1])["status"]
    assert answer["code"] == 8, answer
    assert "create_order: 20 per minute" in answer["message"]
    assert answer["headers"]["retry-after"] and "grpc-status-details-bin" in answer["headers"]


async def test_wrong_passwords_for_one_email_from_many_addresses_are_limited_per_email(
    http: httpx.Client, public_port: int
) -> None:
    with client_at(str(http.base_url)) as client:
        registered = _register(client)
    assert registered.status_code == 200, registered.text
    victim_email = registered.json()["email"]
    attempt = {"email": victim_email, "password": "not the password"}
    answers = []
    for index in range(21):
        # 127.0.0.2, 127.0.0.3, …: three attempts from each, far below the per-address limit;
        # the X-Forwarded-For a client sends is not believed.
        address = f"127.0.0.{2 + index // 3}"
        with client_at(str(http.base_url), address) as client:
            response = client.post(
                "/api/v1/auth/login",
                json=attempt,
                headers={"X-Forwarded-For": f"203.0.113.{index}"},
            )
        answers.append(response)
    assert [r.status_code for r in answers] == [401] * 20 + [429], [r.text for r in answers]
    refused = status_body(answers[-1])
    assert "too many login attempts for this account" in refused["message"]
    assert int(answers[-1].headers["retry-after"]) >= 1
    # The right password is refused too for now (the account is being guessed at) …
    with client_at(str(http.base_url)) as client:
        right = client.post(
            "/api/v1/auth/login", json={"email": victim_email, "password": PASSWORD}
        )
    assert right.status_code == 429
    # … over native gRPC too (the auth service counts, not the edge).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{public_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused_grpc:
            await auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(email=victim_email.upper(), password=PASSWORD)
            )
    assert refused_grpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Another account is not affected.
    other = register_and_login(http, tier="free")
    with client_at(str(http.base_url), "127.0.0.2") as client:
        fine = client.post("/api/v1/auth/login", json={"email": other.email, "password": PASSWORD})
    assert fine.status_code == 200, fine.text


def test_anonymous_calls_are_limited_per_client_address_whatever_it_claims(
    base_url: str,
) -> None:
    address = own_address()
    with client_at(base_url, address) as client:
        for index in range(200):
            response = client.post(
                "/api/v1/auth/refresh",
                json={"refresh_token": "not-a-token"},
                headers={"X-Forwarded-For": f"198.51.100.{index % 250}", "X-Real-IP": "10.0.0.1"},
            )
            assert response.status_code == 401, response.text
            assert response.headers["x-ratelimit-limit"] == "200"
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert_limited(
            client.post("/api/v1/auth/refresh", json={"refresh_token": "not-a-token"}),
            200,
            "unauthenticated calls: 200 per minute per client address",
        )
    with client_at(base_url) as elsewhere:
        assert elsewhere.get("/api/v1/products").status_code == 200


def test_registration_is_limited_per_address(base_url: str) -> None:
    with client_at(base_url) as client:
        codes = []
        for _ in range(11):
            email = f"e2e-reg-{uuid.uuid4().hex[:12]}@example.com"
            codes.append(
                client.post(
                    "/api/v1/auth/register",
                    json={"email": email, "password": PASSWORD, "full_name": "R", "phone": ""},
                ).status_code
            )
    assert codes == [200] * 10 + [429]


@pytest.mark.slow
def test_the_limit_frees_up_gradually_as_the_window_slides(http: httpx.Client) -> None:
    """Ten creates, twenty seconds, ten more: a minute after the first ten, those ten come
    back, not the whole twenty (a fixed window frees everything at its boundary)."""
    user = register_and_login(http, tier="free")
    first = time.monotonic()
    for _ in range(10):
        assert create(http, user).status_code == 200
    time.sleep(20)
    for _ in range(10):
        assert create(http, user).status_code == 200
    assert create(http, user).status_code == 429
    time.sleep(max(0.0, first + 61.5 - time.monotonic()))
    freed = [create(http, user) for _ in range(11)]
    assert [r.status_code for r in freed] == [200] * 10 + [429], [r.text for r in freed]
    assert freed[0].headers["x-ratelimit-remaining"] == "9"
    assert int(freed[-1].headers["retry-after"]) >= 15, "the second ten are still counted"


@pytest.fixture
def limits_file() -> Iterator[Path]:
    """The stack's limits file, put back as it was whatever the test does."""
    path = limits_config.DEFAULT_PATH
    original = path.read_text()
    yield path
    path.write_text(original)


def _read_limit(base_url: str) -> str:
    with client_at(base_url) as client:
        return client.get("/api/v1/products").headers["x-ratelimit-limit"]


def test_a_change_to_the_limits_file_is_picked_up_without_a_restart(
    base_url: str, limits_file: Path
) -> None:
    pid = procs.read_pid("ratelimit")
    original = limits_file.read_text()
    assert _read_limit(base_url) == "100"
    limits_file.write_text(original.replace("limit: 100/minute", "limit: 7/minute"))
    deadline = time.monotonic() + 15
    while _read_limit(base_url) != "7":
        assert time.monotonic() < deadline, "the new limit was not picked up"
        time.sleep(0.2)
    limits_file.write_text(original)
    deadline = time.monotonic() + 15
    while _read_limit(base_url) != "100":
        assert time.monotonic() < deadline, "the old limit did not come back"
        time.sleep(0.2)
    assert procs.read_pid("ratelimit") == pid, "no restart"


@contextlib.contextmanager
def redis_down() -> Iterator[None]:
    assert devredis.stop()
    try:
        yield
    finally:
        devredis.start()
        restart_stack()


def _register(client: httpx.Client) -> httpx.Response:
    email = f"e2e-down-{uuid.uuid4().hex[:12]}@example.com"
    return client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "D", "phone": ""},
    )


async def test_while_redis_is_down_reads_and_orders_pass_but_login_and_register_are_refused(
    http: httpx.Client, public_port: int
) -> None:
    user = register_and_login(http, tier="free")
    with redis_down():
        created = create(http, user)
        assert created.status_code == 200, created.text
        assert "x-ratelimit-limit" not in created.headers, "nothing was counted"
        assert http.get("/api/v1/products").status_code == 200
        with client_at(str(http.base_url)) as client:
            login = client.post(
                "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
            )
            register = _register(client)
        for refused in (login, register):
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == 14
            assert "rate limiting is unavailable" in refused.json()["message"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{public_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as grpc_refused:
                await auth_pb2_grpc.AuthServiceStub(channel).Login(
                    auth_pb2.LoginRequest(email=user.email, password=PASSWORD)
                )
        assert grpc_refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with client_at(str(http.base_url)) as client:
        assert (
            client.post(
                "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
            ).status_code
            == 200
        )


def test_while_the_rate_limit_service_is_down_the_same_holds(http: httpx.Client) -> None:
    user = register_and_login(http, tier="free")
    procs.stop("ratelimit")
    try:
        assert create(http, user).status_code == 200
        with client_at(str(http.base_url)) as client:
            refused = _register(client)
            login = client.post(
                "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
            )
        assert (refused.status_code, login.status_code) == (503, 503), refused.text
    finally:
        start_app("ratelimit")
    with client_at(str(http.base_url)) as client:
        assert _register(client).status_code == 200
