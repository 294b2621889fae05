"""Refresh-token rotation with reuse detection, through the public port over REST and gRPC."""

import grpc
import httpx
import pytest
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from tests.e2e.conftest import PASSWORD, User

pytestmark = pytest.mark.e2e


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


def test_a_refresh_token_works_once(http: httpx.Client, user: User) -> None:
    first = refresh(http, user.refresh_token)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != user.refresh_token
    me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["user_id"] == user.user_id

    again = refresh(http, user.refresh_token)
    assert again.status_code == 401, again.text
    assert again.json()["code"] == 16
    assert "already used" in again.json()["message"]


def test_after_a_reuse_the_newer_token_of_the_family_fails_too(
    http: httpx.Client, user: User
) -> None:
    newer = refresh(http, user.refresh_token).json()["refresh_token"]
    newest = refresh(http, newer).json()["refresh_token"]
    assert refresh(http, user.refresh_token).status_code == 401
    assert refresh(http, newest).status_code == 401
    assert refresh(http, newer).status_code == 401

    login = http.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert refresh(http, login.json()["refresh_token"]).status_code == 200, "log in again"


async def test_rotation_and_reuse_over_grpc(channel: grpc.aio.Channel, user: User) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    rotated = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=user.refresh_token)
    )
    assert rotated.refresh_token != user.refresh_token
    for spent_or_revoked in (user.refresh_token, rotated.refresh_token):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=spent_or_revoked))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
