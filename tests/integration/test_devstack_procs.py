"""Process supervision in devstack.procs with throwaway shell daemons."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import procs
from devstack.paths import ensure_run_dirs, log_path, pid_path
from devstack.ports import Ports


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pids_running(argv: str) -> list[int]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    )
    found = []
    for line in out.stdout.splitlines():
        pid, state, args = line.strip().split(None, 2)
        if args == argv and not state.startswith("Z"):
            found.append(int(pid))
    return found


@pytest.fixture
def name() -> Iterator[str]:
    daemon = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield daemon
    finally:
        procs.stop(daemon, timeout=1.0)
        log_path(daemon).unlink(missing_ok=True)


def test_start_is_idempotent_and_stop_removes_pid_file(name: str) -> None:
    pid = procs.start_daemon(name, ["sleep", "301"])
    assert procs.start_daemon(name, ["sleep", "301"]) == pid
    assert procs.is_running(name)
    assert procs.stop(name) is True
    assert not _alive(pid)
    assert not pid_path(name).exists()
    assert procs.stop(name) is False


def test_stale_and_reused_pid_files_are_ignored(name: str) -> None:
    ensure_run_dirs()
    pid_path(name).write_text("999999\n")
    assert not procs.is_running(name)
    assert procs.stop(name) is False
    assert not pid_path(name).exists()

    bystander = subprocess.Popen(["sleep", "302"])
    try:
        pid_path(name).write_text(f"{bystander.pid}\n1\n")
        assert not procs.is_running(name)
        assert procs.stop(name) is False
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_sigterm_ignored_escalates_to_sigkill(name: str) -> None:
    marker = f"sleep 303.{uuid.uuid4().int % 1000}"
    procs.start_daemon(name, ["bash", "-c", f"trap '' TERM; {marker} & {marker} & wait"])
    procs.wait_until(lambda: len(_pids_running(marker)) == 2, 5, "children started")
    started = time.monotonic()
    assert procs.stop(name, timeout=0.5) is True
    assert time.monotonic() - started < 5
    assert _pids_running(marker) == []


def test_descendant_in_its_own_session_is_stopped(name: str) -> None:
    marker = f"sleep 304.{uuid.uuid4().int % 1000}"
    procs.start_daemon(name, ["bash", "-c", f"setsid {marker} & wait"])
    procs.wait_until(lambda: bool(_pids_running(marker)), 5, "child started")
    assert procs.stop(name, timeout=0.5) is True
    assert _pids_running(marker) == []


def test_wait_until_fails_fast_and_points_to_log(name: str) -> None:
    procs.start_daemon(name, ["bash", "-c", "echo bad config; exit 3"])
    started = time.monotonic()
    with pytest.raises(procs.NotReadyError) as excinfo:
        procs.wait_until(lambda: False, 30, "thing", name=name)
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert "thing: exited while starting" in message
    assert str(log_path(name)) in message
    assert "bad config" in message


def test_port_in_use() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert procs.port_in_use(port)
    assert not procs.port_in_use(port)


def test_ports_from_env() -> None:
    ports = Ports.from_env({"ORDERMESH_KAFKA_PORT": "19092", "ORDERMESH_REDIS_PORT": ""})
    assert ports.kafka == 19092
    assert ports.redis == 56379
    assert ports.kafka_controller == 59093
    with pytest.raises(ValueError, match="ORDERMESH_POSTGRES_PORT"):
        Ports.from_env({"ORDERMESH_POSTGRES_PORT": "abc"})
