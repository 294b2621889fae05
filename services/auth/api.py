"""AuthService over gRPC: translates protos to commands and results back; handlers decide."""

from typing import Any

import grpc
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth import handlers
from services.auth.adapters.tokens import ALGORITHM
from services.auth.domain.commands import Login, Logout, RefreshTokens, RegisterUser
from services.auth.domain.model import User
from services.auth.domain.ports import (
    LoginThrottle,
    PasswordHasher,
    RefreshTokenStore,
    SigningKeyStore,
    TokenIssuer,
    TokenVerifier,
    UserRepository,
)
from services.common.clock import new_id, utc_now
from services.common.identity import Role, Tier
from services.platform.convert import timestamp
from services.platform.interceptors import current_principal

SERVICE = "ordermesh.auth.v1.AuthService"
PUBLIC_METHODS = tuple(
    f"/{SERVICE}/{name}" for name in ("Register", "Login", "RefreshToken", "Logout", "GetJwks")
)
TOKEN_TYPE = "bearer"

Context = grpc.aio.ServicerContext[Any, Any]

_TIERS = {
    Tier.FREE: auth_pb2.TIER_FREE,
    Tier.STANDARD: auth_pb2.TIER_STANDARD,
    Tier.PREMIUM: auth_pb2.TIER_PREMIUM,
    Tier.ENTERPRISE: auth_pb2.TIER_ENTERPRISE,
}
_ROLES = {
    Role.USER: auth_pb2.ROLE_USER,
    Role.ADMIN: auth_pb2.ROLE_ADMIN,
    Role.SYSTEM: auth_pb2.ROLE_SYSTEM,
}


def user_to_proto(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        user_id=user.user_id,
        email=user.email,
        full_name=user.full_name,
        phone=user.phone or "",
        tier=_TIERS[user.tier],
        role=_ROLES[user.role],
        created_at=timestamp(user.created_at),
    )


class AuthApi(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        *,
        users: UserRepository,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        refresh_store: RefreshTokenStore,
        keys: SigningKeyStore,
        verifier: TokenVerifier,
        throttle: LoginThrottle,
    ) -> None:
        self._throttle = throttle
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._refresh_store = refresh_store
        self._keys = keys
        self._verifier = verifier

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        command = RegisterUser(
            email=request.email,
            password=request.password,
            full_name=request.full_name,
            phone=request.phone,
        )
        user = await handlers.register_user(command, self._users, self._hasher)
        return auth_pb2.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        pair = await handlers.login(
            Login(email=request.email, password=request.password),
            self._users,
            self._hasher,
            self._tokens,
            refresh_store=self._refresh_store,
            new_id=new_id,
            throttle=self._throttle,
        )
        return auth_pb2.LoginResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in_seconds,
        )

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        pair = await handlers.refresh_tokens(
            RefreshTokens(refresh_token=request.refresh_token),
            self._verifier,
            self._users,
            self._tokens,
            refresh_store=self._refresh_store,
            clock=utc_now,
        )
        return auth_pb2.RefreshTokenResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in_seconds,
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        await handlers.logout(
            Logout(refresh_token=request.refresh_token),
            self._verifier,
            self._refresh_store,
            utc_now,
        )
        return auth_pb2.LogoutResponse()

    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: Context
    ) -> auth_pb2.GetCurrentUserResponse:
        user = await handlers.current_user(current_principal(), self._users)
        return auth_pb2.GetCurrentUserResponse(user=user_to_proto(user))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        keys = await handlers.published_keys(self._keys)
        return auth_pb2.GetJwksResponse(
            keys=[
                auth_pb2.Jwk(kty="RSA", kid=key.kid, use="sig", alg=ALGORITHM, n=key.n, e=key.e)
                for key in keys
            ]
        )
