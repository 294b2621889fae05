"""The bridge's typed settings, read once from the environment; a bad value stops the start.

Besides the platform's own (``ORDERMESH_REDIS_URL``, ``AUTH_SERVICE_ADDR`` for the JWKS,
the JWT issuer and audience, key-set caching, ``ORDERMESH_LOG_LEVEL``, ``ORDERMESH_ENV``):

=========================================  ===========  ==========================================
variable                                   default      meaning
=========================================  ===========  ==========================================
``ORDERMESH_GATEWAY_HOST``                 127.0.0.1    address to listen on (0.0.0.0 in compose)
``ORDERMESH_GATEWAY_PORT``                 8081         port to listen on
``ORDER_SERVICE_ADDR``                     127.0.0.1:   the order service (``WatchOrders``), by
                                           <grpc port>  default the local gRPC port
``ORDERMESH_GATEWAY_MAX_SOCKETS_PER_USER`` 5            concurrent sockets per user, all replicas
``ORDERMESH_GATEWAY_LEASE_TTL_SECONDS``    30           a crashed replica's sockets count this long
``ORDERMESH_GATEWAY_HEARTBEAT_SECONDS``    30           idle time before a heartbeat message
``ORDERMESH_GATEWAY_PING_SECONDS``         20           WebSocket ping interval (dead peers);
                                                        0 turns pings off
``ORDERMESH_GATEWAY_SEND_QUEUE``           256          messages queued per socket before it is
                                                        dropped as a slow consumer
``ORDERMESH_GATEWAY_UPSTREAM_CHANNELS``    16           connections to the order service (each
                                                        carries up to 1,000 watched users)
``ORDERMESH_GATEWAY_UPSTREAM_GRACE_SECONDS`` 20         order-service outage hidden from sockets
``ORDERMESH_GATEWAY_STATIC_DIR``           gateway/     the page's files
                                           static
``ORDERMESH_GATEWAY_STATS_SECONDS``        60           interval of the counters' log line
=========================================  ===========  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.platform.settings import EnvReader, Settings, SettingsError

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    platform: Settings
    host: str
    port: int
    order_service_addr: str
    max_sockets_per_user: int
    lease_ttl_seconds: float
    heartbeat_seconds: float
    ping_seconds: float | None
    send_queue_size: int
    upstream_channels: int
    upstream_grace_seconds: float
    static_dir: Path
    stats_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        source = os.environ if env is None else env
        platform = Settings.from_env(source)
        reader = EnvReader(source)
        lease_ttl = reader.integer("ORDERMESH_GATEWAY_LEASE_TTL_SECONDS", 30, minimum=3)
        heartbeat = _positive(reader, "ORDERMESH_GATEWAY_HEARTBEAT_SECONDS", 30.0)
        ping = reader.number("ORDERMESH_GATEWAY_PING_SECONDS", 20.0)
        if ping < 0:
            raise SettingsError(f"ORDERMESH_GATEWAY_PING_SECONDS={ping} must be 0 or more")
        static_dir = Path(reader.text("ORDERMESH_GATEWAY_STATIC_DIR", str(STATIC_DIR)))
        if not static_dir.is_dir():
            raise SettingsError(f"ORDERMESH_GATEWAY_STATIC_DIR={static_dir} is not a directory")
        return cls(
            platform=platform,
            host=reader.text("ORDERMESH_GATEWAY_HOST", "127.0.0.1"),
            port=reader.integer("ORDERMESH_GATEWAY_PORT", 8081, minimum=0, maximum=65535),
            order_service_addr=reader.text("ORDER_SERVICE_ADDR", f"127.0.0.1:{platform.grpc_port}"),
            max_sockets_per_user=reader.integer(
                "ORDERMESH_GATEWAY_MAX_SOCKETS_PER_USER", 5, minimum=1
            ),
            lease_ttl_seconds=float(lease_ttl),
            heartbeat_seconds=heartbeat,
            ping_seconds=ping or None,
            send_queue_size=reader.integer("ORDERMESH_GATEWAY_SEND_QUEUE", 256, minimum=1),
            upstream_channels=reader.integer(
                "ORDERMESH_GATEWAY_UPSTREAM_CHANNELS", 16, minimum=1, maximum=256
            ),
            upstream_grace_seconds=reader.number("ORDERMESH_GATEWAY_UPSTREAM_GRACE_SECONDS", 20.0),
            static_dir=static_dir,
            stats_seconds=_positive(reader, "ORDERMESH_GATEWAY_STATS_SECONDS", 60.0),
        )


def _positive(reader: EnvReader, name: str, default: float) -> float:
    value = reader.number(name, default)
    if value <= 0:
        raise SettingsError(f"{name}={value} must be more than 0")
    return value
