"""A private Redis server in ``.run/redis``, listening on 127.0.0.1, with an append-only
file (fsync every second): the live feed survives a restart."""

from __future__ import annotations

import socket
from pathlib import Path

from devstack import apt, procs
from devstack.paths import RUN_DIR, ensure_run_dirs
from devstack.ports import HOST, current

NAME = "redis"
DATA_DIR = RUN_DIR / "redis"


def ensure_installed() -> Path:
    """Install Debian's redis-server if needed; return the binary."""
    return apt.ensure_executable("redis-server", "redis-server")


def ping(port: int | None = None, timeout: float = 1.0) -> bool:
    """Send a raw RESP ``PING`` and expect ``+PONG``."""
    port = current().redis if port is None else port
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start(timeout: float = 30.0) -> None:
    """Install and start redis-server; a running server is left alone."""
    binary = ensure_installed()
    port = current().redis
    if not procs.is_running(NAME):
        procs.check_port_free(NAME, port, "ORDERMESH_REDIS_PORT")
        ensure_run_dirs()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(DATA_DIR),
            "--save",
            "",
            # The live feed lives here: it survives a restart (fsync every second).
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]
        procs.start_daemon(NAME, argv, cwd=DATA_DIR)
    procs.wait_until(lambda: ping(port), timeout, f"redis on {HOST}:{port}", name=NAME)


def stop(timeout: float = 20.0) -> bool:
    return procs.stop(NAME, timeout)


def url(db: int = 0) -> str:
    return f"redis://{HOST}:{current().redis}/{db}"
