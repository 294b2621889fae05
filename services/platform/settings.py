"""Typed settings, read once from the environment by the composition root.

Every variable is `ORDERMESH_<NAME>`, except the per-service addresses, which follow the
`<NAME>_SERVICE_ADDR` convention. Defaults suit the local stack; outside development a
missing secret is an error rather than a silent default.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


_E = TypeVar("_E", bound=StrEnum)

DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"

DEV_KEY_ENCRYPTION_SECRET = "ordermesh-development-only-key-encryption-secret"


@dataclass(frozen=True, slots=True)
class Settings:
    environment: Environment
    database_url: str
    database_pool_min: int
    database_pool_max: int
    redis_url: str
    kafka_bootstrap: str
    grpc_host: str
    grpc_port: int
    auth_service_addr: str
    inventory_service_addr: str
    log_level: str
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl_seconds: int
    refresh_token_ttl_seconds: int
    jwks_cache_seconds: int
    jwks_stale_grace_seconds: int
    password_hash_concurrency: int
    password_hash_queue: int
    key_encryption_secret: str
    shutdown_grace_seconds: float
    idempotency_ttl_seconds: int
    schemas_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        source = os.environ if env is None else env
        reader = _Reader(source)
        environment = reader.enum("ORDERMESH_ENV", Environment, Environment.DEVELOPMENT)
        grpc_port = reader.integer("ORDERMESH_GRPC_PORT", 50051, minimum=0, maximum=65535)
        local = f"127.0.0.1:{grpc_port}"
        hash_concurrency = reader.integer(
            "ORDERMESH_PASSWORD_HASH_CONCURRENCY", os.cpu_count() or 1, minimum=1
        )
        secret = source.get("ORDERMESH_KEY_ENCRYPTION_SECRET", "")
        if not secret:
            if environment is Environment.PRODUCTION:
                raise SettingsError("ORDERMESH_KEY_ENCRYPTION_SECRET must be set in production")
            secret = DEV_KEY_ENCRYPTION_SECRET
        elif environment is Environment.PRODUCTION and secret == DEV_KEY_ENCRYPTION_SECRET:
            raise SettingsError("ORDERMESH_KEY_ENCRYPTION_SECRET is the development default")
        return cls(
            environment=environment,
            database_url=reader.text(
                "ORDERMESH_DATABASE_URL",
                "postgresql://ordermesh:ordermesh@127.0.0.1:55432/ordermesh",
            ),
            database_pool_min=reader.integer("ORDERMESH_DATABASE_POOL_MIN", 1, minimum=0),
            database_pool_max=reader.integer("ORDERMESH_DATABASE_POOL_MAX", 10, minimum=1),
            redis_url=reader.text("ORDERMESH_REDIS_URL", "redis://127.0.0.1:56379/0"),
            kafka_bootstrap=reader.text("ORDERMESH_KAFKA_BOOTSTRAP", "127.0.0.1:59092"),
            grpc_host=reader.text("ORDERMESH_GRPC_HOST", "127.0.0.1"),
            grpc_port=grpc_port,
            auth_service_addr=reader.text("AUTH_SERVICE_ADDR", local),
            inventory_service_addr=reader.text("INVENTORY_SERVICE_ADDR", local),
            log_level=reader.text("ORDERMESH_LOG_LEVEL", "INFO").upper(),
            jwt_issuer=reader.text("ORDERMESH_JWT_ISSUER", "ordermesh-auth"),
            jwt_audience=reader.text("ORDERMESH_JWT_AUDIENCE", "ordermesh"),
            access_token_ttl_seconds=reader.integer(
                "ORDERMESH_ACCESS_TOKEN_TTL_SECONDS", 15 * 60, minimum=1
            ),
            refresh_token_ttl_seconds=reader.integer(
                "ORDERMESH_REFRESH_TOKEN_TTL_SECONDS", 7 * 24 * 3600, minimum=1
            ),
            jwks_cache_seconds=reader.integer("ORDERMESH_JWKS_CACHE_SECONDS", 300, minimum=1),
            jwks_stale_grace_seconds=reader.integer(
                "ORDERMESH_JWKS_STALE_GRACE_SECONDS", 300, minimum=0
            ),
            password_hash_concurrency=hash_concurrency,
            password_hash_queue=reader.integer(
                "ORDERMESH_PASSWORD_HASH_QUEUE", 4 * hash_concurrency, minimum=0
            ),
            key_encryption_secret=secret,
            shutdown_grace_seconds=reader.number("ORDERMESH_SHUTDOWN_GRACE_SECONDS", 10.0),
            idempotency_ttl_seconds=reader.integer(
                "ORDERMESH_IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=60
            ),
            schemas_dir=Path(reader.text("ORDERMESH_SCHEMAS_DIR", str(DEFAULT_SCHEMAS_DIR))),
        )


class _Reader:
    def __init__(self, source: Mapping[str, str]) -> None:
        self._source = source

    def text(self, name: str, default: str) -> str:
        value = self._source.get(name, "").strip()
        return value or default

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self._source.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise SettingsError(f"{name}={value} is outside [{minimum}, {maximum}]")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self._source.get(name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None

    def enum(self, name: str, kind: type[_E], default: _E) -> _E:
        raw = self._source.get(name, "").strip().lower()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise SettingsError(f"{name} must be one of {allowed}, got {raw!r}") from None
