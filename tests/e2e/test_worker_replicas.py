"""Two replicas of a worker in one consumer group share the partitions and lose nothing: a
second order validator started with `ordermesh up --replicas` takes over part of the orders
topic, every order created meanwhile is validated, and the replica is stopped again."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from devstack import kafka, procs, stack
from devstack.paths import REPO_ROOT
from services.platform.messaging import registry
from tests.e2e.conftest import User, order_body
from tests.e2e.pipeline import kill_9

pytestmark = pytest.mark.e2e

ORDERMESH = Path(sys.executable).parent / "ordermesh"
REPLICA = stack.replica_name("order_validator", 2)
ORDERS = 30


def ordermesh(*args: str) -> str:
    result = subprocess.run(
        [str(ORDERMESH), *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def second_validator() -> Iterator[None]:
    started_here = not procs.is_running(REPLICA)
    output = ordermesh("up", "--replicas", "order_validator=2")
    assert REPLICA in output
    yield
    if started_here:
        output = ordermesh("up", "--replicas", "order_validator=1")
        assert f"{REPLICA} stopped" in output
        assert not procs.is_running(REPLICA)


def _assignments(admin: AdminClient) -> list[set[tuple[str, int]]]:
    group = registry.ORDER_VALIDATOR_GROUP
    description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    return [
        {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    ]


def _wait(condition: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{condition}: not within {timeout:g}s"
        time.sleep(0.2)


def test_two_validators_share_the_partitions_and_validate_every_order(
    http: httpx.Client, user: User, second_validator: None
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap()})

    def shared() -> bool:
        members = _assignments(admin)
        return len(members) >= 2 and all(members)

    _wait("both validators own partitions", shared)
    status = ordermesh("status")
    assert re.search(rf"^{REPLICA}\s+running", status, re.MULTILINE), status
    group_line = re.search(
        rf"^{registry.ORDER_VALIDATOR_GROUP}\s+\d+\s+(\d+)", status, re.MULTILINE
    )
    assert group_line is not None and int(group_line[1]) >= 2, status

    order_ids = []
    for _ in range(ORDERS):
        response = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
        assert response.status_code == 200, response.text
        order_ids.append(response.json()["order_id"])

    _wait_all_shipped(http, user, order_ids)


def _wait_all_shipped(http: httpx.Client, user: User, order_ids: list[str]) -> None:
    pending = set(order_ids)

    def all_shipped() -> bool:
        for order_id in list(pending):
            response = http.get(f"/api/v1/orders/{order_id}", headers=user.headers)
            assert response.status_code == 200, response.text
            status = response.json()["status"]
            assert status not in ("ORDER_STATUS_FAILED", "ORDER_STATUS_CANCELLED"), status
            if status == "ORDER_STATUS_SHIPPED":
                pending.discard(order_id)
        return not pending

    _wait(f"all {len(order_ids)} orders SHIPPED", all_shipped)


def test_a_dead_replicas_partitions_move_to_a_live_one(
    http: httpx.Client, user: User, second_validator: None
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap()})

    def shared() -> bool:
        members = _assignments(admin)
        return len(members) == 2 and all(members)

    _wait("both validators own partitions", shared)
    kill_9(REPLICA)
    every_partition = {(registry.ORDERS, partition) for partition in range(3)}

    def survivor_owns_all() -> bool:
        members = _assignments(admin)
        return len(members) == 1 and members[0] == every_partition

    # The dead member's session (10 s) runs out, then the group rebalances.
    _wait("the live validator owning every partition", survivor_owns_all, timeout=45)
    order_ids = []
    for _ in range(ORDERS):
        response = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
        assert response.status_code == 200, response.text
        order_ids.append(response.json()["order_id"])
    _wait_all_shipped(http, user, order_ids)
