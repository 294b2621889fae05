"""Builds the auth adapters from settings; shared by the gRPC component and the CLIs."""

from datetime import timedelta

from services.auth.adapters.encryption import SIGNING_KEYS_PURPOSE, fernet_for
from services.auth.adapters.hashing import Argon2PasswordHasher
from services.auth.adapters.keys import PostgresSigningKeyStore
from services.auth.domain.model import TokenPolicy
from services.platform.db import Pool
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
