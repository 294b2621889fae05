"""The local stack's Zipkin, for real: devstack resolves the exec jar (once, into the cache),
starts the server on 127.0.0.1 alone, waits for UP, a span posted to the JSON v2 endpoint
comes back from the query API, a second start leaves the running server alone, and ``stop``
ends it and frees the port.

A child interpreter drives devstack with its own ``ORDERMESH_RUN_DIR`` and port, so a
running dev stack (and its Zipkin) is never touched.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from tests.integration.devstack_child import drive, eventually, isolated_env
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

DRIVER = """
import json, sys
from devstack import procs, zipkin

if sys.argv[1] == "down":
    print(json.dumps({"stopped": zipkin.stop(), "stopped_again": zipkin.stop()}))
    raise SystemExit(0)
zipkin.launch()
zipkin.wait_ready()
print(json.dumps({"pid": procs.read_pid(zipkin.NAME), "spans_url": zipkin.spans_url()}))
"""
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def zipkin_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = isolated_env(tmp_path / "run", ORDERMESH_ZIPKIN_PORT=str(reserve_port()))
    try:
        yield env
    finally:
        drive(DRIVER, env, "down")


def _trace(base: str, trace_id: str) -> list[dict[str, Any]]:
    try:
        with _NO_PROXY.open(f"{base}/api/v2/trace/{trace_id}", timeout=5) as response:
            spans: list[dict[str, Any]] = json.loads(response.read())
    except OSError:
        return []
    return spans


def test_starts_on_loopback_stores_spans_in_memory_and_stops(
    zipkin_env: dict[str, str],
) -> None:
    port = int(zipkin_env["ORDERMESH_ZIPKIN_PORT"])
    started = drive(DRIVER, zipkin_env, "up", timeout=300)
    assert started["spans_url"] == f"http://127.0.0.1:{port}/api/v2/spans"

    # Bound to 127.0.0.1 alone: another loopback address finds nothing listening.
    assert procs.tcp_open("127.0.0.1", port)
    assert not procs.tcp_open("127.0.0.2", port)

    trace_id = secrets.token_hex(16)
    span = {
        "traceId": trace_id,
        "id": trace_id[:16],
        "name": "devstack-check",
        "timestamp": int(time.time() * 1_000_000),
        "duration": 1500,
        "localEndpoint": {"serviceName": "devstack-test"},
    }
    request = urllib.request.Request(
        started["spans_url"],
        data=json.dumps([span]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _NO_PROXY.open(request, timeout=5) as response:
        assert response.status == 202
    [stored] = eventually(lambda: _trace(f"http://127.0.0.1:{port}", trace_id), "the span")
    assert stored["name"] == "devstack-check"

    rerun = drive(DRIVER, zipkin_env, "up", timeout=300)
    assert rerun["pid"] == started["pid"]

    assert drive(DRIVER, zipkin_env, "down") == {"stopped": True, "stopped_again": False}
    eventually(lambda: not procs.port_in_use(port), "the port released", timeout=5)
