"""Reading the limits: the YAML file (PyYAML), the environment's overrides merged over it,
and live reloads (on SIGHUP, and when the file changes)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ratelimit.domain import ConfigError, LimitsConfig, Rate, RouteLimit, Tier

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).with_name("limits.yaml")
CONFIG_VAR = "ORDERMESH_RATELIMIT_CONFIG"
OVERRIDES_VAR = "ORDERMESH_RATELIMIT_OVERRIDES"
FAILURE_MODES = {"allow": False, "deny": True}


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return over


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _rate(value: Any, where: str) -> Rate:
    rate = Rate.parse(value, where)
    if rate is None:
        raise ConfigError(f"{where}: cannot be unlimited")
    return rate


def _scale(value: Any, where: str) -> int | None:
    if str(value).strip().lower() == "unlimited":
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {value!r} is not a whole number of at least 1")
    return value


def parse(document: Any) -> LimitsConfig:
    """The limits of a parsed YAML document; ``ConfigError`` names the first problem."""
    root = _mapping(document, "limits")
    known = {"anonymous", "login", "default_tier", "tiers", "routes"}
    if unknown := sorted(set(root) - known):
        raise ConfigError(f"limits: unknown keys {unknown}")
    tiers = {
        name: Tier(
            str(name),
            Rate.parse(_mapping(spec, f"tiers.{name}").get("overall", ""), f"tiers.{name}.overall"),
            _scale(spec.get("route_scale"), f"tiers.{name}.route_scale"),
        )
        for name, spec in _mapping(root.get("tiers"), "tiers").items()
    }
    routes = []
    for name, raw in _mapping(root.get("routes"), "routes").items():
        spec = _mapping(raw, f"routes.{name}")
        failure = str(spec.get("on_failure", "allow"))
        if failure not in FAILURE_MODES:
            raise ConfigError(f"routes.{name}.on_failure: {failure!r} is not allow or deny")
        methods = spec.get("methods")
        if not isinstance(methods, list) or not methods:
            raise ConfigError(f"routes.{name}.methods: list the gRPC methods (Service/Method)")
        for method in methods:
            if not isinstance(method, str) or method.count("/") != 1:
                raise ConfigError(f"routes.{name}.methods: {method!r} is not pkg.Service/Method")
        routes.append(
            RouteLimit(
                str(name),
                tuple(m.lstrip("/") for m in methods),
                _rate(spec.get("limit", ""), f"routes.{name}.limit"),
                FAILURE_MODES[failure],
            )
        )
    anonymous = _mapping(root.get("anonymous"), "anonymous")
    login = _mapping(root.get("login"), "login")
    return LimitsConfig(
        routes=tuple(routes),
        tiers=tiers,
        anonymous=_rate(anonymous.get("per_address", ""), "anonymous.per_address"),
        login_per_email=_rate(login.get("per_email", ""), "login.per_email"),
        default_tier=str(root.get("default_tier", "free")),
    )


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_VAR) or DEFAULT_PATH)


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> LimitsConfig:
    """The limits of ``path`` (default: ``config_path()``) with the environment's overrides."""
    env = os.environ if environ is None else environ
    path = path or config_path(env)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    overrides = env.get(OVERRIDES_VAR, "").strip()
    if overrides:
        try:
            document = _merge(document, yaml.safe_load(overrides))
        except yaml.YAMLError as error:
            raise ConfigError(f"{OVERRIDES_VAR}: not valid YAML or JSON: {error}") from error
    try:
        return parse(document)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


class LiveConfig:
    """The current limits, reloaded by ``reload()`` (SIGHUP) and by ``watch()`` when the
    file's modification time or size changes. A config that fails to load is logged and the
    limits in force stay."""

    def __init__(self, path: Path, loader: Callable[[Path], LimitsConfig] = load) -> None:
        self.path = path
        self._loader = loader
        self.current = loader(path)
        self._stamp = self._stat()
        self.reloads = 0

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self, why: str) -> bool:
        self._stamp = self._stat()
        try:
            fresh = self._loader(self.path)
        except ConfigError as error:
            log.error("rate limits not reloaded (%s), the previous ones stay: %s", why, error)
            return False
        self.current = fresh
        self.reloads += 1
        log.info("rate limits reloaded (%s) from %s", why, self.path)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._stat() != self._stamp:
                self.reload("file changed")
