"""The webhook context's own settings, read once from the environment by its composition
roots (the registration service and the sender), failing fast on a malformed value."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from services.platform.settings import SettingsError
from services.webhook.domain.delivery import RetryPolicy

PREFIX = "ORDERMESH_WEBHOOK_"
ALLOWED_NETWORKS = PREFIX + "ALLOWED_NETWORKS"
HOSTS_FILE = PREFIX + "HOSTS_FILE"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``allowed_networks``: targets in these networks pass the SSRF check even if private or
    loopback (empty: only public addresses). ``hosts_file``: a hosts(5)-style map consulted
    before DNS, re-read when it changes (for local use and the tests' controlled resolver)."""

    allowed_networks: tuple[Network, ...] = ()
    hosts_file: Path | None = None
    connect_timeout: float = 5.0
    total_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    disable_after_failures: int = 20
    per_endpoint_concurrency: int = 4
    per_user_concurrency: int = 16
    concurrency: int = 64
    lease: timedelta = timedelta(seconds=60)
    poll_interval: float = 1.0
    rotation_grace: timedelta = timedelta(hours=24)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        source = os.environ if env is None else env
        reader = _Reader(source)
        hosts = source.get(HOSTS_FILE, "").strip()
        settings = cls(
            allowed_networks=reader.networks(ALLOWED_NETWORKS),
            hosts_file=Path(hosts) if hosts else None,
            connect_timeout=reader.seconds("CONNECT_TIMEOUT_SECONDS", 5.0),
            total_timeout=reader.seconds("TIMEOUT_SECONDS", 10.0),
            retry=RetryPolicy(
                max_attempts=reader.count("MAX_ATTEMPTS", 15),
                base_delay=timedelta(seconds=reader.seconds("RETRY_BASE_SECONDS", 10.0)),
                max_delay=timedelta(seconds=reader.seconds("RETRY_MAX_DELAY_SECONDS", 4 * 3600)),
                min_span=timedelta(
                    seconds=reader.seconds("RETRY_MIN_SPAN_SECONDS", 24 * 3600, zero_ok=True)
                ),
            ),
            disable_after_failures=reader.count("DISABLE_AFTER_FAILURES", 20),
            per_endpoint_concurrency=reader.count("PER_ENDPOINT_CONCURRENCY", 4),
            per_user_concurrency=reader.count("PER_USER_CONCURRENCY", 16),
            concurrency=reader.count("SENDER_CONCURRENCY", 64),
            lease=timedelta(seconds=reader.seconds("LEASE_SECONDS", 60.0)),
            poll_interval=reader.seconds("POLL_SECONDS", 1.0),
            rotation_grace=timedelta(
                seconds=reader.seconds("ROTATION_GRACE_SECONDS", 24 * 3600, zero_ok=True)
            ),
        )
        if settings.lease.total_seconds() <= settings.total_timeout:
            raise SettingsError(
                f"{PREFIX}LEASE_SECONDS must be longer than {PREFIX}TIMEOUT_SECONDS"
                f" ({settings.total_timeout:g}), or a slow attempt could be sent twice"
            )
        return settings

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.allowed_networks)


class _Reader:
    def __init__(self, source: Mapping[str, str]) -> None:
        self._source = source

    def _raw(self, name: str) -> tuple[str, str]:
        full = name if name.startswith(PREFIX) else PREFIX + name
        return full, self._source.get(full, "").strip()

    def seconds(self, name: str, default: float, *, zero_ok: bool = False) -> float:
        full, raw = self._raw(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{full} must be a number of seconds, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise SettingsError(f"{full} must be more than 0 seconds, got {raw!r}")
        return value

    def count(self, name: str, default: int) -> int:
        full, raw = self._raw(name)
        if not raw:
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise SettingsError(f"{full} must be a whole number of at least 1, got {raw!r}")
        return int(raw)

    def networks(self, name: str) -> tuple[Network, ...]:
        full, raw = self._raw(name)
        found: list[Network] = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            try:
                found.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SettingsError(
                    f"{full} must list networks such as 127.0.0.0/8,::1/128; {item!r} is not one"
                ) from None
        return tuple(found)
