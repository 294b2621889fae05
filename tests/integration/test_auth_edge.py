"""AuthService in-process behind a real Envoy: what REST and gRPC callers see when the
password-hashing queue is full (429 with Retry-After, RESOURCE_EXHAUSTED with RetryInfo)."""

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from devstack import edge
from devstack.ports import HOST
from services.auth import bootstrap as auth_bootstrap
from services.auth.adapters.hashing import RETRY_AFTER_SECONDS, Argon2PasswordHasher
from services.platform.db import Pool
from services.platform.settings import Settings
from tests.gated_hashing import GatedArgon2
from tests.integration.envoy_harness import Edge, running_envoy
from tests.integration.grpc_harness import PASSWORD, grpc_stack, rpc_error

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class GatedAuth:
    """AuthService with one hashing slot and no queue, behind Envoy."""

    edge: Edge
    backend: GatedArgon2


@pytest.fixture(scope="module")
async def gated_auth(
    settings: Settings, pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GatedAuth]:
    backend = GatedArgon2()
    hasher = Argon2PasswordHasher(backend, max_concurrent=1, max_queued=0)
    component = functools.partial(auth_bootstrap.component, hasher=hasher)
    async with grpc_stack(settings, pool, [component]) as stack:
        workdir: Path = tmp_path_factory.mktemp("auth-edge")
        clusters = edge.local_clusters(HOST, stack.port)
        with contextlib.ExitStack() as exits:
            # Envoy's start blocks; the gRPC host must keep answering its health checks.
            running = await asyncio.to_thread(exits.enter_context, running_envoy(workdir, clusters))
            try:
                yield GatedAuth(running, backend)
            finally:
                backend.released.set()


def unique_email() -> str:
    return f"edge-{uuid.uuid4().hex[:12]}@example.com"


async def until_routed(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 20
    while (await http.get("/.well-known/jwks.json")).status_code != 200:
        assert time.monotonic() < deadline, "envoy never routed to the auth service"
        await asyncio.sleep(0.1)


async def test_a_full_hash_queue_is_429_with_retry_after(gated_auth: GatedAuth) -> None:
    backend = gated_auth.backend
    async with httpx.AsyncClient(base_url=gated_auth.edge.url, timeout=30) as http:
        await until_routed(http)
        email = unique_email()
        account = {"email": email, "password": PASSWORD, "full_name": "Ada"}
        assert (await http.post("/api/v1/auth/register", json=account)).status_code == 200

        backend.armed = True
        holding_the_slot = asyncio.create_task(
            http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        )
        assert await asyncio.to_thread(backend.entered.wait, 20), "the login never hashed"

        refused = [
            await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}),
            await http.post("/api/v1/auth/register", json={**account, "email": unique_email()}),
        ]
        for response in refused:
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
            body = response.json()
            assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert body["details"] == [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retry_delay": f"{RETRY_AFTER_SECONDS}s",
                }
            ]

        async with grpc.aio.insecure_channel(f"{HOST}:{gated_auth.edge.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            error = await rpc_error(auth.Login(auth_pb2.LoginRequest(email=email, password="x")))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after", str(RETRY_AFTER_SECONDS)) in tuple(error.trailing_metadata() or ())
        status = rpc_status.from_call(error)
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry)
        assert retry.retry_delay.seconds == RETRY_AFTER_SECONDS

        backend.released.set()
        login = await holding_the_slot
        assert login.status_code == 200, login.text
        assert login.json()["refresh_token"]
