"""Daemon supervision: one session, one pid file and one log file per name."""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import pwd
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack.paths import ensure_run_dirs, log_path, pid_path

_children: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _release_children() -> None:
    """Daemons outlive this process: drop their handles without a ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _children.clear()


class NotReadyError(RuntimeError):
    """A component did not become ready in time, or exited while starting."""


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, start time in clock ticks) of ``pid``, or None if gone."""
    fields = _stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[19]))


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int, start_ticks: int | None = None) -> bool:
    _reap(pid)
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[1] == start_ticks


def _read_pid_file(name: str) -> tuple[int, int | None] | None:
    try:
        lines = pid_path(name).read_text().split()
    except FileNotFoundError:
        return None
    try:
        pid = int(lines[0])
        start_ticks = int(lines[1]) if len(lines) > 1 else None
    except (IndexError, ValueError):
        return None
    return (pid, start_ticks) if pid > 1 else None


def read_pid(name: str) -> int | None:
    """Pid of the running daemon ``name``; None if it is not running."""
    entry = _read_pid_file(name)
    if entry is None or not _alive(*entry):
        return None
    return entry[0]


def is_running(name: str) -> bool:
    return read_pid(name) is not None


def _scan() -> dict[int, tuple[int, int, str, int]]:
    """Map pid -> (ppid, pgid, state, start ticks) for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None:
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    return table


def _tree(leader: int) -> dict[int, int]:
    """Live members of ``leader``'s process group and its descendants, with start ticks."""
    table = _scan()
    members = {pid for pid, (_, pgid, _, _) in table.items() if pgid == leader}
    members.add(leader)
    frontier = set(members)
    while frontier:
        frontier = {pid for pid, info in table.items() if info[0] in frontier} - members
        members |= frontier
    return {
        pid: table[pid][3] for pid in members if pid in table and table[pid][2] not in ("Z", "X")
    }


def as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a child as ``user`` with its groups."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    groups = [g for g in os.getgrouplist(user, entry.pw_gid) if g != entry.pw_gid]
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}


def start_daemon(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` in a new session, logging to ``.run/logs/<name>.log``.

    Returns the pid, which is also the process group id. If ``name`` is
    already running it is left alone and its pid is returned. ``user`` runs the
    daemon as that OS user (with its primary and supplementary groups).
    """
    ensure_run_dirs()
    existing = read_pid(name)
    if existing is not None:
        return existing
    pid_path(name).unlink(missing_ok=True)

    child_env = dict(os.environ if env is None else env)
    if user is not None:
        child_env.setdefault("HOME", pwd.getpwnam(user).pw_dir)
        child_env.update(USER=user, LOGNAME=user)

    log = log_path(name)
    with log.open("ab") as log_file:
        log_file.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: "
            f"{' '.join(map(str, argv))}\n".encode()
        )
        log_file.flush()
        child: subprocess.Popen[bytes] = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
            close_fds=True,
            **as_user(user),
        )
    _children[child.pid] = child
    stat = _proc_stat(child.pid)
    start_ticks = "" if stat is None else f"{stat[1]}"
    tmp = pid_path(name).with_suffix(".pid.tmp")
    tmp.write_text(f"{child.pid}\n{start_ticks}\n")
    tmp.replace(pid_path(name))
    return child.pid


def stop(
    name: str,
    timeout: float = 20.0,
    *,
    sig: signal.Signals = signal.SIGTERM,
    leader_only: bool = False,
) -> bool:
    """Stop daemon ``name``, its process group and its descendants.

    Sends ``sig`` to the process group (or only to the leader when
    ``leader_only``), waits up to ``timeout`` seconds for all of them to exit,
    then SIGKILLs whatever is left. Removes the pid file, stale or not.
    Returns True if a running daemon was stopped.
    """
    entry = _read_pid_file(name)
    if entry is None or not _alive(*entry):
        pid_path(name).unlink(missing_ok=True)
        return False
    leader = entry[0]
    tracked = _tree(leader)
    with contextlib.suppress(ProcessLookupError):
        if leader_only:
            os.kill(leader, sig)
        else:
            os.killpg(leader, sig)

    def remaining() -> dict[int, int]:
        _reap(leader)
        tracked.update(_tree(leader) if _alive(leader) else {})
        return {pid: ticks for pid, ticks in tracked.items() if _alive(pid, ticks)}

    deadline = time.monotonic() + timeout
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = remaining()
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5.0
        while remaining() and time.monotonic() < kill_deadline:
            time.sleep(0.05)
    pid_path(name).unlink(missing_ok=True)
    return True


def log_tail(name: str, lines: int = 20) -> str:
    try:
        with log_path(name).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            data = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    name: str | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``predicate`` until true; raise NotReadyError naming ``what``.

    With ``name`` the error points to that daemon's log file, and the wait
    fails at once if the daemon has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        exited = name is not None and not is_running(name)
        if exited or time.monotonic() >= deadline:
            reason = "exited while starting" if exited else f"not ready after {timeout:g}s"
            message = f"{what}: {reason}"
            if name is not None:
                message += f"; see {log_path(name)}"
                tail = log_tail(name)
                if tail:
                    message += f"\n--- last lines of {log_path(name).name} ---\n{tail}"
            raise NotReadyError(message)
        time.sleep(interval)


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(host: str, port: int, timeout: float, *, name: str | None = None) -> None:
    wait_until(
        lambda: tcp_open(host, port),
        timeout,
        f"{name or 'service'} accepting TCP on {host}:{port}",
        name=name,
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on (or has bound) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def check_port_free(name: str, port: int, env_var: str) -> None:
    """Raise if ``port`` is taken by something other than daemon ``name``."""
    if port_in_use(port) and not is_running(name):
        raise RuntimeError(
            f"{name}: port 127.0.0.1:{port} is already in use by another process "
            f"(see `ss -ltnp 'sport = :{port}'`); stop it or set {env_var}"
        )
