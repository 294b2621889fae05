"""The local Envoy config as devstack.edge renders it, parsed, for the unit tests that read
it (without starting Envoy)."""

from __future__ import annotations

from typing import Any

import yaml

from devstack import edge


def rendered(**overrides: Any) -> dict[str, Any]:
    """``edge.render_text`` with loopback defaults (replaced by ``overrides``), as YAML data."""
    kwargs: dict[str, Any] = {
        "listen_port": 18000,
        "admin_port": 19901,
        "clusters": edge.local_clusters("127.0.0.1", 50051),
        "descriptor": edge.ENVOY_DESCRIPTOR,
        "gateway": ("127.0.0.1", 8081),
        "ratelimit": ("127.0.0.1", 50061),
        "listen_address": "127.0.0.1",
    }
    kwargs.update(overrides)
    config: dict[str, Any] = yaml.safe_load(edge.render_text(**kwargs))
    return config
