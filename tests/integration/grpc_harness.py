"""Real gRPC components in-process for integration tests, wired the way services/__main__.py
wires them: one host with the real interceptors, and a TokenVerifier that fetches the JWKS
from the hosted auth service over gRPC."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from devstack.ports import HOST
from services.platform.db import DATABASE_COMPONENTS, Pool
from services.platform.messaging.codec import EventCodec
from services.platform.resources import Resources
from services.platform.server import Component, GrpcHost
from services.platform.settings import Settings
from services.platform.tokens import token_verifier
from tests.ports import reserve_port

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class GrpcStack:
    channel: grpc.aio.Channel
    resources: Resources
    port: int


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.access_token}"),)


@asynccontextmanager
async def grpc_stack(
    settings: Settings, pool: Pool, components: Sequence[Callable[[Resources], Component]]
) -> AsyncIterator[GrpcStack]:
    # The verifier and the channels need the address before the host exists, so the host
    # cannot bind port 0 itself: the port is reserved without a race instead.
    port = reserve_port()
    channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
    verifier = token_verifier(settings, channel)
    # Tests connect every component through one pool (the owner's); the roles' separation has
    # its own test (test_database_roles.py).
    pools = dict.fromkeys(DATABASE_COMPONENTS, pool)
    ratelimit_channel = grpc.aio.insecure_channel(settings.ratelimit_service_addr)
    resources = Resources(
        settings,
        pools,
        verifier,
        channel,
        channel,
        ratelimit_channel,
        EventCodec.from_directory(settings.schemas_dir),
    )
    host = GrpcHost(
        [build(resources) for build in components],
        verifier,
        host=HOST,
        port=port,
        grace_seconds=1,
    )
    await host.start()
    try:
        yield GrpcStack(channel, resources, port)
    finally:
        await channel.close()
        await ratelimit_channel.close()
        await host.stop()


async def sign_in(channel: grpc.aio.Channel, email: str | None = None) -> SignedIn:
    """Logs in as `email` (a fresh account unless given), through the hosted auth service."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    if email is None:
        email = f"it-{uuid.uuid4().hex[:12]}@example.com"
        await auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Test User")
        )
    tokens = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(),
        metadata=(("authorization", f"Bearer {tokens.access_token}"),),
    )
    return SignedIn(me.user.user_id, email, tokens.access_token, tokens.refresh_token)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value
