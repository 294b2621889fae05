"""Every process stops gracefully on SIGTERM: the gRPC host first reports NOT_SERVING
(so Envoy and health watchers drain it), then finishes in-flight calls and exits 0."""

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.paths import REPO_ROOT
from services.platform.settings import Settings
from tests.ports import reserve_port

pytestmark = pytest.mark.integration


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ORDERMESH_DATABASE_URL": settings.database_url,
        "ORDERMESH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ORDERMESH_SHUTDOWN_GRACE_SECONDS": "5",
        **extra,
    }


def test_api_reports_not_serving_then_exits_cleanly(settings: Settings, migrated: None) -> None:
    port = reserve_port()
    with subprocess.Popen(
        [sys.executable, "-m", "services", "--components", "inventory"],
        env=_env(settings, ORDERMESH_GRPC_PORT=str(port)),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _api_drains(process, port)
        log = process.stderr.read() if process.stderr else ""
    assert "shutdown requested" in log and "grpc server stopped" in log


def _api_drains(process: subprocess.Popen[str], port: int) -> None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            seen = []
            try:
                for reply in watch:
                    seen.append(reply.status)
            except grpc.RpcError as ended:
                assert ended.code() == grpc.StatusCode.UNAVAILABLE  # the server went away
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_workers_exit_cleanly_on_sigterm(settings: Settings, migrated: None) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "workers", "--components", "order_validator"],
        env=_env(settings),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _workers_stop(process)
        rest = process.stderr.read() if process.stderr else ""
    assert "workers stopped" in rest


def _workers_stop(process: subprocess.Popen[str]) -> None:
    try:
        deadline = time.monotonic() + 30
        started = ""
        while "workers starting" not in started and time.monotonic() < deadline:
            line = process.stderr.readline() if process.stderr else ""
            started += line
        assert "workers starting" in started
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
