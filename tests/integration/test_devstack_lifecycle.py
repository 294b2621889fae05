"""Start the real Postgres, Redis and Kafka through devstack, probe them, stop them.

The stack under test is isolated from any running dev stack: a child interpreter
drives it with its own ``ORDERMESH_RUN_DIR`` (under ``.run``) and free ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import procs
from devstack.paths import REPO_ROOT
from tests.ports import reserve_ports

pytestmark = pytest.mark.integration

DRIVER = """
import json, socket, sys
from devstack import kafka, postgres, procs, redis
from devstack.ports import HOST, current

components = (postgres, redis, kafka)
if sys.argv[1] == "down":
    for component in reversed(components):
        component.stop()
    raise SystemExit(0)

for component in components:
    component.start()
facts = {"pids": {m.NAME: procs.read_pid(m.NAME) for m in components}}
facts["psql"] = postgres.psql("SELECT current_user", database="ordermesh", user="ordermesh")
facts["dsn"] = postgres.dsn()
with socket.create_connection((HOST, current().redis), timeout=2) as sock:
    sock.sendall(b"SET devstack ok\\r\\nGET devstack\\r\\n")
    reply = b""
    while reply.count(b"\\r\\n") < 3:
        reply += sock.recv(64)
facts["redis"] = reply.decode()
facts["brokers"] = kafka.broker_count()
facts["bootstrap"] = kafka.bootstrap()
for component in components:
    component.start()
facts["pids_after_rerun"] = {m.NAME: procs.read_pid(m.NAME) for m in components}
facts["stopped"] = [m.stop() for m in reversed(components)]
facts["stopped_again"] = [m.stop() for m in reversed(components)]
print(json.dumps(facts))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def isolated_env() -> Iterator[dict[str, str]]:
    run_dir = REPO_ROOT / ".run" / f"test-lifecycle-{uuid.uuid4().hex[:8]}"
    postgres_port, redis_port, kafka_port, controller_port = reserve_ports(4)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "ORDERMESH_RUN_DIR": str(run_dir),
        "ORDERMESH_POSTGRES_PORT": str(postgres_port),
        "ORDERMESH_REDIS_PORT": str(redis_port),
        "ORDERMESH_KAFKA_PORT": str(kafka_port),
        "ORDERMESH_KAFKA_CONTROLLER_PORT": str(controller_port),
    }
    try:
        yield env
    finally:
        _drive("down", env)
        shutil.rmtree(run_dir, ignore_errors=True)


def _drive(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, command],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_up_probe_down(isolated_env: dict[str, str]) -> None:
    result = _drive("up-probe-down", isolated_env)
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])

    pids: dict[str, int] = facts["pids"]
    assert set(pids) == {"postgres", "redis", "kafka"}
    assert all(isinstance(pid, int) for pid in pids.values()), pids
    assert facts["psql"] == "ordermesh"
    port = isolated_env["ORDERMESH_POSTGRES_PORT"]
    secrets_dir = Path(isolated_env["ORDERMESH_RUN_DIR"]) / "secrets"
    password = (secrets_dir / "postgres-ordermesh").read_text().strip()
    assert len(password) >= 32
    assert facts["dsn"] == f"postgresql://ordermesh:{password}@127.0.0.1:{port}/ordermesh"
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"
    assert facts["redis"] == "+OK\r\n$2\r\nok\r\n"
    assert facts["brokers"] == 1
    assert facts["bootstrap"] == f"127.0.0.1:{isolated_env['ORDERMESH_KAFKA_PORT']}"
    assert facts["pids_after_rerun"] == pids
    assert facts["stopped"] == [True, True, True]
    assert facts["stopped_again"] == [False, False, False]

    pid_dir = Path(isolated_env["ORDERMESH_RUN_DIR"]) / "pids"
    assert sorted(p.name for p in pid_dir.iterdir()) == []
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    ports = [
        int(isolated_env[f"ORDERMESH_{name}_PORT"])
        for name in ("POSTGRES", "REDIS", "KAFKA", "KAFKA_CONTROLLER")
    ]
    deadline = time.monotonic() + 5
    while any(procs.port_in_use(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in ports if procs.port_in_use(p)] == []
