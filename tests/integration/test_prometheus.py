"""The local stack's Prometheus, for real: devstack starts Debian's server with a generated
config against a small local HTTP server that serves fixed metrics, Prometheus scrapes it
(both the processes' /metrics and Envoy's /stats/prometheus), the HTTP API shows the targets
up, the samples labelled with their process and the rules evaluated; a second start reloads
a new config in place, and ``stop`` ends it.

A child interpreter drives devstack with its own ``ORDERMESH_RUN_DIR`` and port, so a
running dev stack (and its Prometheus) is never touched.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from tests.integration.devstack_child import drive, eventually, isolated_env
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

PROCESS_METRICS = b"""\
# HELP ordermesh_relay_parked Outbox rows the relay parked.
# TYPE ordermesh_relay_parked gauge
ordermesh_relay_parked{schema="orders"} 2
"""
ENVOY_METRICS = b"""\
# TYPE envoy_server_live gauge
envoy_server_live{} 1
"""

DRIVER = """
import json, sys
from devstack import procs, prometheus

command, address = sys.argv[1], sys.argv[2]
if command == "down":
    print(json.dumps({"stopped": prometheus.stop(), "stopped_again": prometheus.stop()}))
    raise SystemExit(0)
targets = [("relay", address)] + ([("workers", address)] if command == "rerun" else [])
prometheus.render(targets, envoy_admin=address)
prometheus.start()
print(json.dumps({"pid": procs.read_pid(prometheus.NAME), "url": prometheus.url()}))
"""


class _FixedMetrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/metrics": PROCESS_METRICS, "/stats/prometheus": ENVOY_METRICS}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Prometheus calls every 5 s."""


@pytest.fixture
def metrics_address() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def prometheus_env(tmp_path: Path, metrics_address: str) -> Iterator[dict[str, str]]:
    env = isolated_env(tmp_path / "run", ORDERMESH_PROMETHEUS_PORT=str(reserve_port()))
    try:
        yield env
    finally:
        _drive("down", env, metrics_address)


def _drive(command: str, env: dict[str, str], address: str) -> dict[str, Any]:
    return drive(DRIVER, env, command, address)


def _api(base: str, path: str, **query: str) -> Any:
    url = f"{base}/api/v1/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        reply = json.loads(response.read())
    assert reply["status"] == "success", reply
    return reply["data"]


def _targets(base: str) -> dict[str, dict[str, Any]]:
    return {t["labels"]["job"]: t for t in _api(base, "targets", state="active")["activeTargets"]}


def _all_up(base: str, jobs: set[str]) -> dict[str, dict[str, Any]] | None:
    targets = _targets(base)
    healthy = set(targets) == jobs and all(t["health"] == "up" for t in targets.values())
    return targets if healthy else None


def test_scrapes_the_generated_targets_evaluates_the_rules_reloads_and_stops(
    prometheus_env: dict[str, str], metrics_address: str
) -> None:
    started = _drive("up", prometheus_env, metrics_address)
    base = started["url"]
    assert base == f"http://127.0.0.1:{prometheus_env['ORDERMESH_PROMETHEUS_PORT']}"

    targets = eventually(lambda: _all_up(base, {"relay", "envoy"}), "both targets up")
    assert targets["relay"]["scrapeUrl"] == f"http://{metrics_address}/metrics"
    assert targets["envoy"]["scrapeUrl"] == f"http://{metrics_address}/stats/prometheus"
    assert targets["relay"]["labels"]["process"] == "relay"
    assert targets["envoy"]["labels"]["process"] == "envoy"
    assert targets["relay"]["scrapeInterval"] == "5s"

    [parked] = _api(base, "query", query="ordermesh_relay_parked")["result"]
    assert parked["metric"] == {
        "__name__": "ordermesh_relay_parked",
        "instance": metrics_address,
        "job": "relay",
        "process": "relay",
        "schema": "orders",
    }
    assert parked["value"][1] == "2"
    [live] = _api(base, "query", query="envoy_server_live")["result"]
    assert live["metric"]["process"] == "envoy"

    # The repository's rules are loaded and evaluated: two rows parked is an alert.
    groups = {group["name"] for group in _api(base, "rules")["groups"]}
    assert {"ordermesh.orders", "ordermesh.pipeline", "ordermesh.latency"} <= groups
    alerts = eventually(
        lambda: [
            alert
            for alert in _api(base, "alerts")["alerts"]
            if alert["labels"]["alertname"] == "OrdermeshOutboxRowsParked"
        ],
        "OrdermeshOutboxRowsParked active",
    )
    assert alerts[0]["state"] == "firing"
    assert alerts[0]["labels"]["severity"] == "warning"

    # A second start (a re-run of `ordermesh up`) reloads a new config into the same server.
    rerun = _drive("rerun", prometheus_env, metrics_address)
    assert rerun["pid"] == started["pid"]
    eventually(lambda: _all_up(base, {"relay", "workers", "envoy"}), "the added target up")

    stopped = _drive("down", prometheus_env, metrics_address)
    assert stopped == {"stopped": True, "stopped_again": False}
    assert _gone(started["pid"])
    port = int(prometheus_env["ORDERMESH_PROMETHEUS_PORT"])
    eventually(lambda: not procs.port_in_use(port), "the port released", timeout=5)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
