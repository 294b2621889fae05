"""The rate-limit service's typed settings, read once from the environment; a bad value
stops the start.

Besides the platform's own (``ORDERMESH_REDIS_URL``, ``ORDERMESH_LOG_LEVEL``,
``ORDERMESH_SHUTDOWN_GRACE_SECONDS``):

=====================================  ==============  ==========================================
variable                               default         meaning
=====================================  ==============  ==========================================
``ORDERMESH_RATELIMIT_HOST``           127.0.0.1       address to listen on (0.0.0.0 in compose)
``ORDERMESH_RATELIMIT_PORT``           50061           port to listen on
``ORDERMESH_RATELIMIT_CONFIG``         ratelimit/      the limits (YAML), reloaded on change
                                       limits.yaml
``ORDERMESH_RATELIMIT_OVERRIDES``      (none)          YAML/JSON merged over the file
``ORDERMESH_RATELIMIT_REDIS_TIMEOUT``  0.25            seconds before a Redis call counts as failed
=====================================  ==============  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ratelimit.config import config_path
from services.platform.settings import EnvReader, Settings, SettingsError


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    platform: Settings
    host: str
    port: int
    config_path: Path
    redis_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RateLimitSettings:
        source = os.environ if env is None else env
        reader = EnvReader(source)
        timeout = reader.number("ORDERMESH_RATELIMIT_REDIS_TIMEOUT", 0.25)
        if timeout <= 0:
            raise SettingsError(f"ORDERMESH_RATELIMIT_REDIS_TIMEOUT={timeout} must be positive")
        path = config_path(source)
        if not path.is_file():
            raise SettingsError(f"ORDERMESH_RATELIMIT_CONFIG={path} is not a file")
        return cls(
            platform=Settings.from_env(source),
            host=reader.text("ORDERMESH_RATELIMIT_HOST", "127.0.0.1"),
            port=reader.integer("ORDERMESH_RATELIMIT_PORT", 50061, minimum=0, maximum=65535),
            config_path=path,
            redis_timeout=timeout,
        )
