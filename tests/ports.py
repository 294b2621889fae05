"""Ports for the servers tests start as separate processes (Envoy, a service, a throwaway
Postgres), reserved without a race.

Probing a port the OS hands out and releasing it is racy: the OS may hand the same port to
any other socket before the server binds it. Instead ports come from a range outside the
kernel's ephemeral range (so the OS never hands them out on its own), and each one is
claimed with a lock file created exclusively, so concurrent tests and test sessions never
take the same port. A claimed port is also checked to be free now. Claims are released when
the test session's process exits. In-process servers bind port 0 instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
from pathlib import Path

RANGE = range(21000, 29000)
CLAIMS = Path(os.environ.get("TMPDIR", "/tmp")) / "ordermesh-test-ports"

_claimed: list[Path] = []


def reserve_port() -> int:
    """A free port that no other test holds, kept until this process exits."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    start = RANGE.start + (os.getpid() * 7919) % len(RANGE)
    for offset in range(len(RANGE)):
        port = RANGE.start + (start - RANGE.start + offset) % len(RANGE)
        claim = CLAIMS / f"{port}.lock"
        if claim.exists() and not _holder_alive(claim):
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()
        try:
            descriptor = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        if _free(port):
            _claimed.append(claim)
            return port
        claim.unlink()
    raise RuntimeError(f"no free port left in {RANGE.start}-{RANGE.stop - 1}")


def reserve_ports(count: int) -> list[int]:
    return [reserve_port() for _ in range(count)]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _holder_alive(claim: Path) -> bool:
    try:
        pid = int(claim.read_text() or "0")
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


@atexit.register
def _release() -> None:
    for claim in _claimed:
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()
