"""Verification of the auth service's RS256 access tokens against its published JWKS.

Every service verifies tokens itself (clients may call gRPC directly, not only through
Envoy). Keys are cached by `kid` for `cache_seconds`; the first call after that refetches the
set, so a key the auth service no longer publishes stops being accepted within that time. An
unknown `kid` triggers a refetch too, at most one per `min_refetch_interval`, so a flood of
forged tokens cannot hammer the auth service; that is what makes key rotation work: the auth
service publishes the new key before signing with it. When a refetch fails, the keys already
known keep serving for `stale_grace_seconds` past their cache time (an auth-service blip must
not fail every call); after that, calls fail UNAVAILABLE until a fetch succeeds.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import jwt
from google.protobuf import json_format
from jwt.algorithms import RSAAlgorithm
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from services.common.errors import DependencyUnavailable, Unauthenticated
from services.common.identity import Principal, Role, Tier
from services.platform.settings import Settings

log = logging.getLogger(__name__)

JwksFetcher = Callable[[], Awaitable[Mapping[str, Any]]]

ALGORITHM = "RS256"
ACCESS = "access"
REFRESH = "refresh"
KEYS_UNAVAILABLE = "cannot verify tokens right now: key set unavailable"
JWKS_DEPENDENCY = "auth service (JWKS)"


class TokenVerifier:
    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300.0,
        stale_grace_seconds: float = 300.0,
        min_refetch_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._cache_seconds = cache_seconds
        self._stale_grace_seconds = stale_grace_seconds
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def principal(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        claims = await self.claims(token, expected_type=ACCESS)
        return principal_from_claims(claims)

    async def claims(self, token: str, *, expected_type: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed bearer token") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(f"token algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token has expired") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid token: {error}") from None
        if claims.get("typ") != expected_type:
            raise Unauthenticated(f"a {expected_type} token is required")
        return claims

    async def _key(self, kid: str) -> Any:
        if self._needs_fetch(kid):
            async with self._lock:
                if self._needs_fetch(kid) and self._may_fetch():
                    await self._refresh(kid)
        if not self._within(self._cache_seconds + self._stale_grace_seconds):
            raise DependencyUnavailable(KEYS_UNAVAILABLE, dependency=JWKS_DEPENDENCY)
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthenticated("token signed with an unknown key") from None

    def _needs_fetch(self, kid: str) -> bool:
        return kid not in self._keys or not self._within(self._cache_seconds)

    def _within(self, seconds: float) -> bool:
        """Whether the last successful fetch is less than `seconds` old."""
        return self._fetched_at is not None and self._clock() - self._fetched_at < seconds

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self._min_refetch_interval
        )

    async def _refresh(self, kid: str) -> None:
        self._attempted_at = self._clock()
        try:
            document = await self._fetch_jwks()
        except Exception as error:
            log.warning("jwks fetch failed", extra={"error": str(error)})
            if kid in self._keys:
                return  # served from the cache while within its grace (checked by the caller)
            raise DependencyUnavailable(KEYS_UNAVAILABLE, dependency=JWKS_DEPENDENCY) from error
        self._fetched_at = self._clock()
        self._keys = {
            jwk["kid"]: RSAAlgorithm.from_jwk(json.dumps(jwk))
            for jwk in document.get("keys", [])
            if jwk.get("kty") == "RSA" and jwk.get("kid")
        }


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing bearer token (send 'Authorization: Bearer <token>')")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token.strip()


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    try:
        return Principal(
            user_id=str(claims["sub"]),
            email=str(claims.get("email", "")),
            role=Role(claims.get("role", Role.USER.value)),
            tier=Tier(claims.get("tier", Tier.FREE.value)),
        )
    except ValueError as error:
        raise Unauthenticated(f"token carries an unknown role or tier: {error}") from None


def jwks_fetcher(channel: grpc.aio.Channel) -> JwksFetcher:
    """Fetches the auth service's JWKS over gRPC (AuthService.GetJwks)."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> Mapping[str, Any]:
        response = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    return fetch


def token_verifier(settings: Settings, auth_channel: grpc.aio.Channel) -> TokenVerifier:
    return TokenVerifier(
        jwks_fetcher(auth_channel),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        cache_seconds=settings.jwks_cache_seconds,
        stale_grace_seconds=settings.jwks_stale_grace_seconds,
    )
