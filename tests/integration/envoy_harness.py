"""A real Envoy for integration tests, rendered from the edge template with the clusters a test
gives it (an in-process gRPC host, or a dead port to see the edge's own behaviour), and the
real rate-limit service beside it (on the test Redis, with limits too high to be met: these
tests are about the edge's other duties; tests/e2e holds the real limits)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from devstack import edge, procs, redis
from devstack.envoy import binary
from devstack.paths import REPO_ROOT
from devstack.ports import HOST
from ratelimit import config as limits_config
from tests.ports import reserve_port

UNREACHABLE_LIMIT = "1000000/minute"


def generous_limits() -> str:
    """ORDERMESH_RATELIMIT_OVERRIDES raising every limit out of a test's reach."""
    limits = limits_config.load()
    overrides = {
        "anonymous": {"per_address": UNREACHABLE_LIMIT},
        "login": {"per_email": UNREACHABLE_LIMIT},
        "routes": {route.name: {"limit": UNREACHABLE_LIMIT} for route in limits.routes},
        "tiers": {name: {"overall": UNREACHABLE_LIMIT} for name in limits.tiers},
    }
    return yaml.safe_dump(overrides, default_flow_style=True, width=10_000)


@contextlib.contextmanager
def running_ratelimit(
    workdir: Path, *, overrides: str | None = None, config: Path | None = None
) -> Iterator[int]:
    """``python -m ratelimit`` on a free port, with generous limits unless ``overrides`` (""
    for the shipped limits) or another ``config`` file are given; yields the port."""
    port = reserve_port()
    env = {
        **os.environ,
        "ORDERMESH_REDIS_URL": redis.url(),
        "ORDERMESH_RATELIMIT_PORT": str(port),
        "ORDERMESH_RATELIMIT_OVERRIDES": generous_limits() if overrides is None else overrides,
    }
    if config is not None:
        env["ORDERMESH_RATELIMIT_CONFIG"] = str(config)
    with (workdir / "ratelimit.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ratelimit"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not procs.port_in_use(port):
                assert process.poll() is None, (workdir / "ratelimit.log").read_text()
                assert time.monotonic() < deadline, "the rate-limit service did not start"
                time.sleep(0.05)
            yield port
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            # A graceful shutdown: health NOT_SERVING, in-flight calls finish, exit 0.
            assert process.wait(timeout=10) == 0, (workdir / "ratelimit.log").read_text()


@dataclass(frozen=True)
class Edge:
    url: str
    port: int
    admin_port: int


@contextlib.contextmanager
def running_envoy(
    workdir: Path,
    clusters: Mapping[str, tuple[str, int]],
    *,
    tracing: edge.Tracing | None = None,
) -> Iterator[Edge]:
    """Envoy on free ports in front of `clusters` (and a rate-limit service), tracing to
    ``tracing``'s Zipkin if given, ready when this enters, stopped when it exits. It blocks
    while they start: from async code, enter it in a worker thread."""
    with running_ratelimit(workdir) as ratelimit_port:
        yield from _running_envoy(workdir, clusters, ratelimit_port, tracing)


def _running_envoy(
    workdir: Path,
    clusters: Mapping[str, tuple[str, int]],
    ratelimit_port: int,
    tracing: edge.Tracing | None = None,
) -> Iterator[Edge]:
    port, admin_port = reserve_port(), reserve_port()
    config = edge.render(
        listen_port=port,
        admin_port=admin_port,
        clusters=clusters,
        descriptor=edge.ENVOY_DESCRIPTOR,
        out=workdir / "envoy.yaml",
        ratelimit=(HOST, ratelimit_port),
        gateway=None,
        listen_address=HOST,
        tracing=tracing,
    )
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary()),
                "-c",
                str(config),
                "--log-level",
                "warn",
                "--concurrency",
                "1",
                "--disable-hot-restart",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://{HOST}:{admin_port}/ready").status_code == 200:
                        break
                assert time.monotonic() < deadline, "envoy did not become ready"
                time.sleep(0.1)
            yield Edge(f"http://{HOST}:{port}", port, admin_port)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
