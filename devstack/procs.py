"""Daemon supervision: one session, one pid file and one log file per name."""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devstack.paths import ensure_run_dirs, log_path, pid_path

_children: dict[int, subprocess.Popen[bytes]] = {}


class NotReadyError(RuntimeError):
    """A component did not become ready in time, or exited while starting."""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, start time in clock ticks) of ``pid``, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(
        stat is not None and stat[0] not in ("Z", "X")
        for stat in map(_proc_stat, _group_members(pgid))
    )


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


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
    user_kwargs: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        user_kwargs = {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": [
                g for g in os.getgrouplist(user, entry.pw_gid) if g != entry.pw_gid
            ],
        }
        child_env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)

    log = log_path(name)
    with log.open("ab") as log_file:
        log_file.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: "
            f"{' '.join(map(str, argv))}\n".encode()
        )
        log_file.flush()
        child: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
            close_fds=True,
            **user_kwargs,
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
    """Stop daemon ``name`` and its whole process group.

    Sends ``sig`` to the process group (or only to the leader when
    ``leader_only``), waits up to ``timeout`` seconds for the group to exit,
    then SIGKILLs it. Removes the pid file, stale or not. Returns True if a
    running daemon was stopped.
    """
    entry = _read_pid_file(name)
    if entry is None or not _alive(*entry):
        pid_path(name).unlink(missing_ok=True)
        return False
    pgid = entry[0]
    try:
        if leader_only:
            os.kill(pgid, sig)
        else:
            os.killpg(pgid, sig)
    except ProcessLookupError:
        pass

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _alive(pgid) and not _group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_deadline = time.monotonic() + 5.0
        while time.monotonic() < kill_deadline and (
            _alive(pgid) or _group_alive(pgid)
        ):
            time.sleep(0.05)
    _reap(pgid)
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
