"""The whole local stack: what runs, in which order, and how each part is checked.

`up` is idempotent: a component already running is left alone. `down` stops, in reverse
order, exactly the processes whose pid files `up` wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack import edge, envoy, kafka, postgres, procs, redis
from devstack.paths import REPO_ROOT, RUN_DIR, ensure_run_dirs, log_path
from devstack.ports import HOST, Ports

DESCRIPTOR = REPO_ROOT / "gen" / "descriptor" / "ordermesh.binpb"
ENVOY_CONFIG = RUN_DIR / "envoy" / "envoy.yaml"
SERVICE_NAMES = ("auth", "order", "inventory", "payment", "fulfillment", "webhook")


@dataclass(frozen=True)
class AppProcess:
    """An ordermesh Python process hosting one or more components."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    port: Callable[[Ports], int] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


APP_PROCESSES = (
    AppProcess("api", "services", port=lambda ports: ports.grpc),
    AppProcess("relay", "workers", ("--components", "relay")),
    AppProcess("workers", "workers", ("--components", "consumers")),
)


def app_env(ports: Ports) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ORDERMESH_ENV", "development")
    env.update(
        {
            "ORDERMESH_DATABASE_URL": postgres.dsn(),
            "ORDERMESH_REDIS_URL": redis.url(),
            "ORDERMESH_KAFKA_BOOTSTRAP": kafka.bootstrap(),
            "ORDERMESH_GRPC_HOST": HOST,
            "ORDERMESH_GRPC_PORT": str(ports.grpc),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _say(message: str) -> None:
    print(f"ordermesh: {message}", flush=True)


def _timed(what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    _say(f"{what} ready ({time.monotonic() - started:.1f}s)")


def _python_step(what: str, *args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise procs.NotReadyError(f"{what} failed (exit {result.returncode})")


def up(ports: Ports) -> None:
    ensure_run_dirs()
    for server in (postgres, redis, kafka):
        started = time.monotonic()
        server.ensure_installed()
        server.start()
        _say(f"{server.NAME} ready ({time.monotonic() - started:.1f}s)")
    env = app_env(ports)
    _python_step("database migrations", "-m", "services", "--migrate", env=env)
    _python_step("demo catalog", "-m", "services.inventory.seed", env=env)
    _python_step("kafka topics", "-m", "workers", "--create-topics", env=env)
    _say("migrations applied, catalog seeded, topics created")
    for process in APP_PROCESSES:
        _start_app(process, ports, env)
    ENVOY_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    edge.render(
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        clusters={name: (HOST, ports.grpc) for name in SERVICE_NAMES},
        descriptor=DESCRIPTOR,
        out=ENVOY_CONFIG,
        gateway=None,
    )
    _timed("envoy", lambda: envoy.start(ENVOY_CONFIG, admin_port=ports.envoy_admin))
    _wait_healthy(ports)
    _print_urls(ports)


def _start_app(process: AppProcess, ports: Ports, env: dict[str, str]) -> None:
    if procs.is_running(process.name):
        _say(f"{process.name} already running")
        return
    procs.start_daemon(process.name, process.argv(), env=env, cwd=REPO_ROOT)
    if process.port is not None:
        port = process.port(ports)
        procs.wait_until(
            lambda: procs.port_in_use(port),
            60,
            f"{process.name} on port {port}",
            name=process.name,
        )
    else:
        time.sleep(0.5)
        if not procs.is_running(process.name):
            raise procs.NotReadyError(
                f"{process.name} exited while starting; see {log_path(process.name)}"
            )
    _say(f"{process.name} started")


def health_status(ports: Ports) -> int | None:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://{HOST}:{ports.envoy}/health", timeout=2
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def _wait_healthy(ports: Ports) -> None:
    procs.wait_until(lambda: health_status(ports) == 200, 60, "GET /health through Envoy")


def _print_urls(ports: Ports) -> None:
    base = f"http://localhost:{ports.envoy}"
    print(
        f"""
ordermesh is up.
  REST + gRPC + grpc-web  {base}   (one door: Envoy)
  health                  {base}/health
  API docs (OpenAPI)      {base}/docs
  gRPC                    grpcurl -plaintext localhost:{ports.envoy} list
  Envoy admin             http://127.0.0.1:{ports.envoy_admin}
  logs                    .venv/bin/ordermesh logs [name] [-f]
  stop                    make down
""",
        flush=True,
    )


def down() -> None:
    stopped = []
    envoy.stop()
    stopped.append(envoy.NAME)
    for process in reversed(APP_PROCESSES):
        procs.stop(process.name)
        stopped.append(process.name)
    kafka.stop()
    redis.stop()
    postgres.stop()
    _say("stopped " + ", ".join([*stopped, kafka.NAME, redis.NAME, postgres.NAME]))


COMPONENT_NAMES = (
    postgres.NAME,
    redis.NAME,
    kafka.NAME,
    *(process.name for process in APP_PROCESSES),
    envoy.NAME,
)


def status(ports: Ports) -> list[tuple[str, str]]:
    rows = []
    for name in COMPONENT_NAMES:
        running = procs.is_running(name)
        pid = procs.read_pid(name) if running else None
        rows.append((name, f"running (pid {pid})" if running else "stopped"))
    code = health_status(ports)
    rows.append(("GET /health", "no answer" if code is None else str(code)))
    return rows


def log_file(name: str) -> Path:
    return log_path(name)
