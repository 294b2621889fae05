"""Verification of the auth service's RS256 access tokens against its published JWKS.

Every service verifies tokens itself (clients may call gRPC directly, not only through
Envoy). Keys are cached by `kid` for `cache_seconds`; the first call after that refetches the
set, so a key the auth service no longer publishes stops being accepted within that time. An
unknown `kid` triggers a refetch too, at most one per `min_refetch_interval`, so a flood of
forged tokens cannot hammer the auth service; that is what makes key rotation work: the auth
service publishes the new key before signing with it. When a refetch fails, the keys already
known keep serving for `stale_grace_seconds` past their cache time (an auth-service blip must
not fail every call); after that, calls fail UNAVAILABLE until a fetch succeeds.

A verified access token is remembered (by the SHA-256 of the token, at most
`verified_cache_size` of them) until the earlier of its `exp` and `verified_cache_seconds`
after its verification, so a client sending the same token on every call pays for one RS256
verification, not one per call. A remembered token is still refused once it expires, and
still goes through the key set on every call: if its key is no longer accepted (retired from
the JWKS, or the set is unavailable past its grace) the call fails as it would without the
cache, and a refetched key set makes the token verified afresh. Access tokens have no other
revocation (logout revokes refresh tokens, which are never remembered).
"""

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from google.protobuf import json_format
from jwt.algorithms import RSAAlgorithm
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from services.common.errors import DependencyUnavailable, TokenExpired, Unauthenticated
from services.common.identity import Principal, Role, Tier
from services.platform.settings import Settings

log = logging.getLogger(__name__)

JwksFetcher = Callable[[], Awaitable[Mapping[str, Any]]]

ALGORITHM = "RS256"
ACCESS = "access"
REFRESH = "refresh"
KEYS_UNAVAILABLE = "cannot verify tokens right now: key set unavailable"
JWKS_DEPENDENCY = "auth service (JWKS)"
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _Verified:
    """An access token that passed verification: who it names, the key object it was
    verified with, and until when (monotonic clock, wall-clock ``exp``) it may be reused."""

    principal: Principal
    kid: str
    key: Any
    reuse_until: float
    expires_at: float


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
        verified_cache_seconds: float = VERIFIED_CACHE_SECONDS,
        verified_cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._cache_seconds = cache_seconds
        self._stale_grace_seconds = stale_grace_seconds
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._verified_seconds = verified_cache_seconds
        self._verified_size = verified_cache_size
        self._verified: dict[bytes, _Verified] = {}
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def principal(self, authorization: str | None) -> Principal:
        """The caller named by a bearer access token; a token verified before is reused
        while it may be (see the module's docstring)."""
        token = bearer_token(authorization)
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            # The key set decides on every call, as for a token seen the first time.
            if (
                self._clock() < known.reuse_until
                and self._wall_clock() < known.expires_at
                and await self._key(known.kid) is known.key
            ):
                return known.principal
            del self._verified[digest]
        kid = _key_id(token)
        key = await self._key(kid)
        claims = self._decode(token, key, expected_type=ACCESS)
        principal = principal_from_claims(claims)
        if self._verified_seconds > 0 and self._verified_size > 0:
            while len(self._verified) >= self._verified_size:
                # The oldest goes first (dicts keep insertion order); it is verified again
                # if it comes back.
                del self._verified[next(iter(self._verified))]
            reuse_until = self._clock() + self._verified_seconds
            self._verified[digest] = _Verified(
                principal, kid, key, reuse_until, float(claims["exp"])
            )
        return principal

    @property
    def remembered_tokens(self) -> int:
        return len(self._verified)

    async def claims(self, token: str, *, expected_type: str) -> dict[str, Any]:
        """The verified claims of ``token``, which must be of ``expected_type``; never
        remembered (refresh tokens and logout go through here)."""
        key = await self._key(_key_id(token))
        return self._decode(token, key, expected_type=expected_type)

    def _decode(self, token: str, key: Any, *, expected_type: str) -> dict[str, Any]:
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
            raise TokenExpired("token has expired") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid token: {error}") from None
        # The same clock decides for remembered tokens (PyJWT reads the system's).
        if float(claims["exp"]) <= self._wall_clock():
            raise TokenExpired("token has expired")
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


def _key_id(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthenticated("malformed bearer token") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated(f"token algorithm must be {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("token has no key id")
    return kid


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
        verified_cache_seconds=settings.token_cache_seconds,
        verified_cache_size=settings.token_cache_size,
    )
