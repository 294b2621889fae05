"""Refresh-token rotation with reuse detection, and logout, through the public port over
REST and gRPC."""

import grpc
import httpx
import pytest
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from tests.e2e.conftest import PASSWORD, User

pytestmark = pytest.mark.e2e


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


def logout(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/api/v1/auth/logout", json={"refresh_token": refresh_token})


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


def test_after_logout_refresh_fails(http: httpx.Client, user: User) -> None:
    current = refresh(http, user.refresh_token).json()["refresh_token"]
    response = logout(http, current)  # no Authorization header: the refresh token suffices
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert refresh(http, current).status_code == 401
    assert logout(http, current).status_code == 200, "logging out twice is fine"


def test_logout_with_an_invalid_token_is_401(http: httpx.Client, user: User) -> None:
    for token in ("not.a.jwt", user.access_token, ""):
        response = logout(http, token)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == 16
    assert refresh(http, user.refresh_token).status_code == 200, "nothing was revoked"


async def test_logout_over_grpc(channel: grpc.aio.Channel, user: User) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    await auth.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=user.refresh_token))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
