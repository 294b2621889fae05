"""The webhook service's own settings, read once from the environment by its component."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.platform.settings import SettingsError

ALLOW_PRIVATE_TARGETS = "ORDERMESH_WEBHOOK_ALLOW_PRIVATE_TARGETS"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    allow_private_targets: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "WebhookSettings":
        source = os.environ if env is None else env
        return cls(allow_private_targets=_flag(source, ALLOW_PRIVATE_TARGETS, default=False))


def _flag(source: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = source.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")
