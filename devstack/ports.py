"""Loopback ports of the dev stack, overridable with ``ORDERMESH_<NAME>_PORT``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    postgres: int = 55432
    redis: int = 56379
    kafka: int = 59092
    kafka_controller: int = 59093
    envoy: int = 8000
    envoy_tls: int = 8443
    envoy_admin: int = 9901
    grpc: int = 50051
    gateway: int = 8081
    ratelimit: int = 50061
    # The first of the ports the stack's processes serve Prometheus metrics on (loopback):
    # see devstack.stack.metrics_port.
    metrics_base: int = 59100
    prometheus: int = 59090
    zipkin: int = 59411

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field in dataclasses.fields(cls):
            var = f"ORDERMESH_{field.name.upper()}_PORT"
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                port = int(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a port number") from None
            if not 0 < port < 65536:
                raise ValueError(f"{var}={port} is out of range 1-65535")
            values[field.name] = port
        return cls(**values)


def current() -> Ports:
    """Ports as configured by the environment right now."""
    return Ports.from_env()
