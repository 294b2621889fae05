"""End-to-end tests talk to the running stack through the public port only (Envoy, 8000
by default), as REST, gRPC and browser clients would. `make test` brings the stack up first."""

import contextlib
import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from devstack import postgres
from devstack.ports import Ports
from devstack.stack import app_env

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"

# Orders of the e2e tests buy products of their own, never the demo catalog's, so the suite
# can run any number of times without running the demo stock down.
SESSION = uuid.uuid4().hex[:10]
STOCKED = f"e2e-widget-{SESSION}"
SCARCE = f"e2e-scarce-{SESSION}"
STOCKED_PRICE_MINOR = 2499
TEST_PRODUCTS = {STOCKED: 1_000_000, SCARCE: 10}


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)


@pytest.fixture(scope="session")
def public_port() -> int:
    return Ports.from_env().envoy


@pytest.fixture(scope="session")
def base_url(public_port: int) -> str:
    return os.environ.get("ORDERMESH_BASE_URL", f"http://127.0.0.1:{public_port}")


@pytest.fixture(scope="session", autouse=True)
def test_products() -> Iterator[None]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        for product_id, stock in TEST_PRODUCTS.items():
            conn.execute(
                "INSERT INTO inventory.products (product_id, name, unit_price_minor, currency,"
                " stock) VALUES (%s, %s, %s, 'USD', %s)",
                (product_id, f"E2E {product_id}", STOCKED_PRICE_MINOR, stock),
            )
    yield
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE inventory.products SET active = false WHERE product_id = ANY(%s)",
            (list(TEST_PRODUCTS),),
        )


_addresses = itertools.count(random.randrange(1 << 20))


def own_address() -> str:
    """A loopback address no other client of this run uses (127.0.0.1 stays free for the
    browser and gRPC clients): the edge limits anonymous calls per client address, and tests
    that are not about those limits must not share one budget."""
    n = next(_addresses) % (254 * 256 * 254)
    return f"127.{1 + n // (256 * 254)}.{n // 254 % 256}.{1 + n % 254}"


@contextlib.contextmanager
def client_at(base_url: str, address: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client whose connections come from ``address`` (a fresh one by default)."""
    transport = httpx.HTTPTransport(local_address=address or own_address())
    with httpx.Client(
        base_url=base_url, timeout=10, trust_env=False, transport=transport
    ) as client:
        yield client


@pytest.fixture(scope="session")
def session_http(base_url: str) -> Iterator[httpx.Client]:
    with client_at(base_url) as client:
        response = client.get("/health")
        if response.status_code != 200:
            pytest.fail(f"the stack is not up at {base_url} (GET /health → {response.status_code})")
        yield client


@pytest.fixture
def http(base_url: str, session_http: httpx.Client) -> Iterator[httpx.Client]:
    """Each test's own client, from its own address (see ``own_address``)."""
    with client_at(base_url) as client:
        yield client


@pytest.fixture
async def channel(public_port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{public_port}") as opened:
        yield opened


def set_tier(email: str, tier: str) -> None:
    """Sets an account's tier the way ``ordermesh users set-tier`` does; it shows in the
    account's next token."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        updated = conn.execute(
            "UPDATE auth.users SET tier = %s WHERE email = %s", (tier, email)
        ).rowcount
    assert updated == 1, email


def register_and_login(http: httpx.Client, *, tier: str = "enterprise") -> User:
    """A new account, registered and logged in from an address of its own. Tests of the
    rate limits ask for the tier they test; every other test's users are ``enterprise``
    (unlimited), so that polling and bursts of orders meet no limit they are not about."""
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    with client_at(str(http.base_url)) as client:
        registered = client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "full_name": "E2E Tester", "phone": ""},
        )
        assert registered.status_code == 200, registered.text
        if tier != "free":
            set_tier(email, tier)
        login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    tokens = login.json()
    return User(
        user_id=registered.json()["user_id"],
        email=email,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


@pytest.fixture
def user(http: httpx.Client) -> User:
    return register_and_login(http)


@pytest.fixture
def other_user(http: httpx.Client) -> User:
    return register_and_login(http)


def wait_for_order(
    http: httpx.Client,
    user: User,
    order_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The order as soon as ``done`` holds for it, read over REST (bounded polling)."""
    deadline = time.monotonic() + timeout
    order: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(f"/api/v1/orders/{order_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        order = response.json()
        if done(order):
            return order
        time.sleep(0.05)
    raise AssertionError(f"order {order_id} stuck at {order.get('status')}")


def order_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "items": [{"product_id": STOCKED, "quantity": 2}],
        "shipping_address": {
            "street": "1 Main St",
            "city": "Springfield",
            "state": "IL",
            "zip": "62701",
            "country": "US",
        },
        "payment_method": "tok_visa",
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="session")
def admin(session_http: httpx.Client) -> User:
    """An administrator, created the way operators do (there is no public way)."""
    email = f"e2e-admin-{uuid.uuid4().hex[:12]}@example.com"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.auth.create_admin",
            "--email",
            email,
            "--full-name",
            "E2E Admin",
        ],
        input=f"{PASSWORD}\n",
        text=True,
        check=True,
        env=app_env(Ports.from_env()),
        capture_output=True,
    )
    login = session_http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    tokens = login.json()
    me = session_http.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["role"] == "ROLE_ADMIN", me.text
    return User(me.json()["user_id"], email, tokens["access_token"], tokens["refresh_token"])
