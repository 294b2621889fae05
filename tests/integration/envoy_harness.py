"""A real Envoy for integration tests, rendered from the edge template with the clusters a test
gives it (an in-process gRPC host, or a dead port to see the edge's own behaviour)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack import edge
from devstack.envoy import binary
from devstack.ports import HOST
from tests.ports import reserve_port


@dataclass(frozen=True)
class Edge:
    url: str
    port: int
    admin_port: int


@contextlib.contextmanager
def running_envoy(workdir: Path, clusters: Mapping[str, tuple[str, int]]) -> Iterator[Edge]:
    """Envoy on free ports in front of `clusters`, ready when this enters, stopped when it
    exits. It blocks while Envoy starts: from async code, enter it in a worker thread."""
    port, admin_port = reserve_port(), reserve_port()
    config = edge.render(
        listen_port=port,
        admin_port=admin_port,
        clusters=clusters,
        descriptor=edge.ENVOY_DESCRIPTOR,
        out=workdir / "envoy.yaml",
        gateway=None,
        listen_address=HOST,
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
