"""Operability end to end: after orders flow through the public port, the stack's own
Prometheus scrapes every process (and Envoy), the create→SHIPPED p99 and consumer lag
queries answer, every PromQL expression of the Grafana dashboard runs, and `ordermesh top`,
driven in tmux, shows the orders/s figure moving while orders flow."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from tests.e2e.conftest import User, order_body, register_and_login, wait_for_order

pytestmark = pytest.mark.e2e

SHIPPED = "ORDER_STATUS_SHIPPED"
DASHBOARD = REPO_ROOT / "observability" / "grafana" / "dashboards" / "ordermesh.json"
# The panels that must show data once orders have flowed (others may be empty on a healthy
# stack: errors, dead letters, blocked consumers, webhook attempts, stuck orders).
WITH_DATA = {
    "Orders per second by status reached",
    "Consumer lag by group",
    "Consumer events by outcome",
    "Outbox backlog",
    "Relay publishes",
    "gRPC requests by method and code",
    "gRPC latency p99 by method",
    "Rate-limit decisions",
    "Scrape targets up",
}


def prometheus() -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{Ports.from_env().prometheus}", timeout=10)


def query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/query", params={"query": expr})
    assert answer.status_code == 200, (expr, answer.text)
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


@pytest.fixture(scope="module")
def orders_flowed(session_http: httpx.Client) -> None:
    """A few orders shipped, and Prometheus has scraped since (every 5 s)."""
    user = register_and_login(session_http)
    for _ in range(3):
        created = session_http.post("/api/v1/orders", json=order_body(), headers=user.headers)
        assert created.status_code == 200, created.text
        wait_for_order(
            session_http,
            user,
            created.json()["order_id"],
            lambda o: o["status"] == "ORDER_STATUS_SHIPPED",
        )
    time.sleep(11)  # two scrape intervals


def test_prometheus_scrapes_every_process_and_envoy(orders_flowed: None) -> None:
    with prometheus() as client:
        deadline = time.monotonic() + 30
        while True:
            targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
            health = {target["labels"]["process"]: target["health"] for target in targets}
            if set(health.values()) == {"up"} or time.monotonic() > deadline:
                break
            time.sleep(1)
    expected = {"ratelimit", "api", "relay", "workers", "webhook-sender", "gateway", "envoy"}
    assert expected <= set(health), health
    assert {name: health[name] for name in expected} == dict.fromkeys(expected, "up")


def test_create_to_shipped_p99_and_consumer_lag_answer(orders_flowed: None) -> None:
    with prometheus() as client:
        p99 = query(
            client,
            "histogram_quantile(0.99, sum by (le)"
            " (rate(ordermesh_order_create_to_shipped_seconds_bucket[5m])))",
        )
        lag = query(client, "sum by (group) (ordermesh_consumer_lag)")
    [seconds] = values(p99)
    assert 0 < seconds < 60, p99
    groups = {sample["metric"]["group"] for sample in lag}
    assert {"ordermesh.order-validator", "ordermesh.webhook-dispatcher"} <= groups, groups
    assert all(value >= 0 for value in values(lag))


def test_every_dashboard_query_runs_and_the_core_panels_have_data(orders_flowed: None) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert set(panels) >= WITH_DATA
    empty = []
    with prometheus() as client:
        for title, panel in panels.items():
            for target in panel["targets"]:
                result = query(client, target["expr"])
                if title in WITH_DATA and not result:
                    empty.append((title, target["expr"]))
    assert not empty, empty


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ordermesh_top_in_tmux_shows_orders_per_second_moving(
    http: httpx.Client, user: User
) -> None:
    session = f"ordermesh-top-{uuid.uuid4().hex[:8]}"
    # A tmux server keeps its own environment: the stack's ports go on the command line.
    settings = " ".join(
        f"{name}={shlex.quote(value)}"
        for name, value in os.environ.items()
        if name.startswith("ORDERMESH_")
    )
    command = f"env {settings} {Path(sys.executable).parent / 'ordermesh'} top --interval 1"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", command],
        check=True,
    )
    stop = threading.Event()

    def place_orders() -> None:
        while not stop.is_set():
            http.post("/api/v1/orders", json=order_body(), headers=user.headers)
            time.sleep(0.1)

    placing = threading.Thread(target=place_orders, daemon=True)
    try:
        time.sleep(3)
        placing.start()
        captures = []
        for _ in range(2):
            time.sleep(4)
            pane = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            captures.append(pane)
    finally:
        stop.set()
        placing.join(timeout=5)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    for pane in captures:
        assert "orders/s by status reached" in pane, pane
    rows = [_orders_row(pane) for pane in captures]
    assert rows[0] != rows[1], captures
    assert any(float(value) > 0 for value in rows[1]), captures


def _orders_row(pane: str) -> list[str]:
    """The figures under the orders/s table's header (one per status)."""
    lines = pane.splitlines()
    for index, line in enumerate(lines):
        if "pending" in line and "shipped" in line:
            for below in lines[index + 1 : index + 4]:
                cells = [cell for cell in below.replace("│", " ").split() if _number(cell)]
                if len(cells) >= 8:
                    return cells[:8]
    raise AssertionError(f"no orders/s row in:\n{pane}")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
