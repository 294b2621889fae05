"""Wires the auth context: its adapters from settings and resources, for the gRPC component,
the CLIs (create_admin, rotate_keys) and the tests alike."""

from datetime import timedelta

from ordermesh.auth.v1 import auth_pb2_grpc

from services.auth.adapters.encryption import SIGNING_KEYS_PURPOSE, fernet_for
from services.auth.adapters.hashing import Argon2PasswordHasher
from services.auth.adapters.keys import PostgresSigningKeyStore
from services.auth.adapters.login_throttle import RateLimitServiceThrottle
from services.auth.adapters.refresh_tokens import PostgresRefreshTokenStore
from services.auth.adapters.tokens import JwtTokenIssuer
from services.auth.adapters.users import PostgresUserRepository
from services.auth.api import PUBLIC_METHODS, SERVICE, AuthApi
from services.auth.domain.model import TokenPolicy
from services.auth.domain.ports import LoginThrottle, PasswordHasher
from services.platform.db import Pool
from services.platform.messaging.retention import Purge
from services.platform.resources import Resources
from services.platform.server import Component
from services.platform.settings import Settings


def token_policy(settings: Settings) -> TokenPolicy:
    return TokenPolicy(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )


def signing_key_store(settings: Settings, pool: Pool) -> PostgresSigningKeyStore:
    return PostgresSigningKeyStore(
        pool, fernet_for(settings.require_key_encryption_secret(), SIGNING_KEYS_PURPOSE)
    )


def password_hasher(settings: Settings) -> Argon2PasswordHasher:
    return Argon2PasswordHasher(
        max_concurrent=settings.password_hash_concurrency,
        max_queued=settings.password_hash_queue,
    )


def component(
    resources: Resources,
    *,
    hasher: PasswordHasher | None = None,
    throttle: LoginThrottle | None = None,
) -> Component:
    """The hosted AuthService; ``hasher`` replaces the settings' argon2 hasher, ``throttle``
    the rate-limit service's login throttle (tests)."""
    settings = resources.settings
    pool = resources.pool("auth")
    keys = signing_key_store(settings, pool)
    api = AuthApi(
        users=PostgresUserRepository(pool),
        hasher=hasher or password_hasher(settings),
        tokens=JwtTokenIssuer(keys, token_policy(settings)),
        refresh_store=PostgresRefreshTokenStore(pool),
        keys=keys,
        verifier=resources.verifier,
        throttle=throttle or RateLimitServiceThrottle(resources.ratelimit_channel),
    )
    return Component(
        service_name=SERVICE,
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(api, server),
        public_methods=PUBLIC_METHODS,
    )


def purges(settings: Settings) -> list[Purge]:
    """Refresh-token families go as a whole, a day after their newest token expired: a
    revoked family must never lose the rows that mark it revoked while one of its tokens is
    valid."""
    return [
        Purge(
            "auth.refresh_tokens (expired families)",
            "auth",
            "DELETE FROM auth.refresh_tokens WHERE family_id IN (SELECT family_id"
            " FROM auth.refresh_tokens GROUP BY family_id"
            " HAVING max(expires_at) < now() - %(horizon)s LIMIT %(batch)s)",
            timedelta(seconds=settings.session_retention_seconds),
        )
    ]
