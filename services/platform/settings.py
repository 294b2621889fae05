"""Typed settings, read once from the environment by the composition root.

Every variable is `ORDERMESH_<NAME>`, except the per-service addresses, which follow the
`<NAME>_SERVICE_ADDR` convention. Any `ORDERMESH_<NAME>` may instead be given as
`ORDERMESH_<NAME>_FILE`, the path of a file holding the value (Docker secrets).

Secrets fail closed: the auth service refuses to start without a key-encryption secret of at
least 32 characters (`make up` generates one into the run dir), unless the explicit,
development-only `ORDERMESH_INSECURE_DEV_SECRETS=true` lets it use a published constant.
Each component connects to Postgres as its own role, `ORDERMESH_<COMPONENT>_DATABASE_URL`;
without one it uses `ORDERMESH_DATABASE_URL` (the owner), which production refuses.
"""

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from services.platform.paths import SCHEMAS_DIR


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


_E = TypeVar("_E", bound=StrEnum)


# Published in this repository, so it protects nothing: usable only with the explicit
# ORDERMESH_INSECURE_DEV_SECRETS=true, never in production.
DEV_KEY_ENCRYPTION_SECRET = "ordermesh-development-only-key-encryption-secret"
MIN_SECRET_LENGTH = 32

_COMPONENT_URL = re.compile(r"ORDERMESH_([A-Z]+)_DATABASE_URL(?:_FILE)?")


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
    grpc_max_concurrent_streams: int
    auth_service_addr: str
    inventory_service_addr: str
    ratelimit_service_addr: str
    log_level: str
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl_seconds: int
    refresh_token_ttl_seconds: int
    jwks_cache_seconds: int
    jwks_stale_grace_seconds: int
    token_cache_seconds: int
    token_cache_size: int
    password_hash_concurrency: int
    password_hash_queue: int
    key_encryption_secret: str | None
    insecure_dev_secrets: bool
    component_database_urls: Mapping[str, str]
    shutdown_grace_seconds: float
    idempotency_ttl_seconds: int
    outbox_retention_seconds: int
    watch_heartbeat_seconds: float
    live_feed_horizon_entries: int
    live_feed_horizon_seconds: int
    inbox_retention_seconds: int
    session_retention_seconds: int
    retention_interval_seconds: float
    schemas_dir: Path
    state_dir: Path | None
    metrics_port: int | None
    metrics_host: str
    zipkin_url: str | None
    trace_sample_ratio: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        source = os.environ if env is None else env
        reader = EnvReader(source)
        environment = reader.enum("ORDERMESH_ENV", Environment, Environment.DEVELOPMENT)
        grpc_port = reader.integer("ORDERMESH_GRPC_PORT", 50051, minimum=0, maximum=65535)
        local = f"127.0.0.1:{grpc_port}"
        insecure = reader.boolean("ORDERMESH_INSECURE_DEV_SECRETS", default=False)
        if insecure and environment is Environment.PRODUCTION:
            raise SettingsError("ORDERMESH_INSECURE_DEV_SECRETS cannot be used in production")
        component_urls = {
            match.group(1).lower(): reader.text(f"ORDERMESH_{match.group(1)}_DATABASE_URL", "")
            for name in source
            if (match := _COMPONENT_URL.fullmatch(name))
        }
        hash_concurrency = reader.integer(
            "ORDERMESH_PASSWORD_HASH_CONCURRENCY", os.cpu_count() or 1, minimum=1
        )
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
            grpc_max_concurrent_streams=reader.integer(
                "ORDERMESH_GRPC_MAX_CONCURRENT_STREAMS", 1000, minimum=1
            ),
            auth_service_addr=reader.text("AUTH_SERVICE_ADDR", local),
            inventory_service_addr=reader.text("INVENTORY_SERVICE_ADDR", local),
            ratelimit_service_addr=reader.text("RATELIMIT_SERVICE_ADDR", "127.0.0.1:50061"),
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
            # A verified access token is reused for at most this long (never past its exp);
            # 0 verifies every call's token afresh.
            token_cache_seconds=reader.integer("ORDERMESH_TOKEN_CACHE_SECONDS", 60, minimum=0),
            token_cache_size=reader.integer("ORDERMESH_TOKEN_CACHE_SIZE", 10_000, minimum=0),
            password_hash_concurrency=hash_concurrency,
            password_hash_queue=reader.integer(
                "ORDERMESH_PASSWORD_HASH_QUEUE", 4 * hash_concurrency, minimum=0
            ),
            key_encryption_secret=reader.text("ORDERMESH_KEY_ENCRYPTION_SECRET", "") or None,
            insecure_dev_secrets=insecure,
            component_database_urls={name: url for name, url in component_urls.items() if url},
            shutdown_grace_seconds=reader.number("ORDERMESH_SHUTDOWN_GRACE_SECONDS", 10.0),
            idempotency_ttl_seconds=reader.integer(
                "ORDERMESH_IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=60
            ),
            outbox_retention_seconds=reader.integer(
                "ORDERMESH_OUTBOX_RETENTION_SECONDS", 24 * 3600, minimum=0
            ),
            # WatchOrders sends a heartbeat after this many quiet seconds (under the idle
            # timeouts of proxies on the way).
            watch_heartbeat_seconds=reader.number("ORDERMESH_WATCH_HEARTBEAT_SECONDS", 15.0),
            # The live feed keeps about this many updates per user, and a user's feed ends
            # this long after its last update; older cursors resume from a snapshot.
            live_feed_horizon_entries=reader.integer(
                "ORDERMESH_LIVE_FEED_HORIZON_ENTRIES", 1000, minimum=10
            ),
            live_feed_horizon_seconds=reader.integer(
                "ORDERMESH_LIVE_FEED_HORIZON_SECONDS", 7 * 24 * 3600, minimum=60
            ),
            # Longer than a duplicate can arrive: topic retention (7 days) and a replay from
            # the dead-letter topic (kept 30 days).
            inbox_retention_seconds=reader.integer(
                "ORDERMESH_INBOX_RETENTION_SECONDS", 35 * 24 * 3600, minimum=3600
            ),
            session_retention_seconds=reader.integer(
                "ORDERMESH_SESSION_RETENTION_SECONDS", 24 * 3600, minimum=0
            ),
            retention_interval_seconds=reader.number("ORDERMESH_RETENTION_INTERVAL_SECONDS", 300.0),
            schemas_dir=Path(reader.text("ORDERMESH_SCHEMAS_DIR", str(SCHEMAS_DIR))),
            state_dir=Path(state) if (state := reader.text("ORDERMESH_STATE_DIR", "")) else None,
            # The loopback port this process serves /metrics on; unset serves none.
            metrics_port=reader.integer("ORDERMESH_METRICS_PORT", 0, minimum=1, maximum=65535)
            or None,
            # Loopback by default; a container sets 0.0.0.0 so its network's Prometheus can
            # scrape it.
            metrics_host=_address(
                reader.text("ORDERMESH_METRICS_HOST", "127.0.0.1"), "ORDERMESH_METRICS_HOST"
            ),
            # Where finished spans go (Zipkin's JSON v2 endpoint, .../api/v2/spans); unset
            # records no spans (trace context still passes through unchanged).
            zipkin_url=_http_url(reader.text("ORDERMESH_ZIPKIN_URL", ""), "ORDERMESH_ZIPKIN_URL"),
            # The share of new traces recorded (a trace begun upstream keeps its decision).
            trace_sample_ratio=_ratio(
                reader.number("ORDERMESH_TRACE_SAMPLE_RATIO", 1.0), "ORDERMESH_TRACE_SAMPLE_RATIO"
            ),
        )

    def database_url_for(self, component: str) -> str:
        """The DSN ``component`` connects with: its own role's; the owner's only outside
        production, where a missing one is an error."""
        url = self.component_database_urls.get(component)
        if url:
            return url
        if self.environment is Environment.PRODUCTION:
            raise SettingsError(
                f"ORDERMESH_{component.upper()}_DATABASE_URL must be set in production: each"
                " component connects as its own database role"
            )
        return self.database_url

    def require_key_encryption_secret(self) -> str:
        """The secret the auth service encrypts its signing keys with; refuses a missing,
        short or published one (unless ORDERMESH_INSECURE_DEV_SECRETS allows the last)."""
        secret = self.key_encryption_secret
        if secret is None and self.insecure_dev_secrets:
            return DEV_KEY_ENCRYPTION_SECRET
        if secret is None:
            raise SettingsError(
                "ORDERMESH_KEY_ENCRYPTION_SECRET (or ORDERMESH_KEY_ENCRYPTION_SECRET_FILE) must"
                f" be set to a random secret of at least {MIN_SECRET_LENGTH} characters"
                " (`make up` generates one into .run/secrets)"
            )
        if secret == DEV_KEY_ENCRYPTION_SECRET and not self.insecure_dev_secrets:
            raise SettingsError(
                "ORDERMESH_KEY_ENCRYPTION_SECRET is the published development constant"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"ORDERMESH_KEY_ENCRYPTION_SECRET is {len(secret)} characters; it must have at"
                f" least {MIN_SECRET_LENGTH}"
            )
        return secret


class EnvReader:
    """Typed reads of ``ORDERMESH_*`` variables (each may come from ``<NAME>_FILE``), for
    every composition root's settings; errors name the variable."""

    def __init__(self, source: Mapping[str, str]) -> None:
        self._source = source

    def text(self, name: str, default: str) -> str:
        """``name``'s value, else the content of the file ``name_FILE`` names, else
        ``default``."""
        value = self._source.get(name, "").strip()
        if value:
            return value
        file_name = self._source.get(f"{name}_FILE", "").strip()
        if file_name:
            try:
                value = Path(file_name).read_text().strip()
            except OSError as error:
                raise SettingsError(f"{name}_FILE={file_name}: {error.strerror}") from None
            if not value:
                raise SettingsError(f"{name}_FILE={file_name} is empty")
        return value or default

    def boolean(self, name: str, *, default: bool) -> bool:
        raw = self.text(name, "").lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

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


def _address(value: str, name: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise SettingsError(f"{name} must be an IP address, got {value!r}") from None


def _http_url(value: str, name: str) -> str | None:
    if not value:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name} must be an http(s) URL such as http://host:9411/api/v2/spans")
    return value


def _ratio(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be between 0 and 1, got {value}")
    return value
