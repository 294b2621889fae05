"""What a worker process is waiting for, where ``ordermesh status`` can read it.

A consumer that cannot reach a dependency (Postgres, Kafka, a gRPC service) waits and
retries without limit; the relay does the same when Kafka or Postgres is away. They record
that here, on a :class:`StateBoard`, which a worker process writes every second to a small
JSON file in its state directory (``ORDERMESH_STATE_DIR``; the local stack uses
``.run/state``). The file is replaced atomically, written even when every dependency is
down, and removed on a clean stop; :func:`read_states` reads the files of live processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.platform import metrics

log = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Blockage:
    """One worker (a consumer group or the relay) waiting for a dependency."""

    worker: str
    dependency: str
    error: str
    since: str
    retries: int


@dataclass(frozen=True, slots=True)
class ProcessState:
    process: str
    pid: int
    written_at: str
    blocked: tuple[Blockage, ...]


class StateBoard:
    """The blockages of one process. Without a ``path`` nothing is written (tests read
    :meth:`blocked` directly)."""

    def __init__(self, process: str, path: Path | None = None) -> None:
        self._process = process
        self._path = path
        self._blocked: dict[str, Blockage] = {}

    def block(self, worker: str, dependency: str, error: str) -> None:
        """``worker`` is waiting for ``dependency``; a repeated call counts a retry."""
        previous = self._blocked.get(worker)
        since = previous.since if previous else datetime.now(UTC).isoformat(timespec="seconds")
        retries = previous.retries + 1 if previous else 0
        self._blocked[worker] = Blockage(worker, dependency, error[:300], since, retries)
        metrics.blockages.block(worker, dependency)

    def unblock(self, worker: str) -> None:
        self._blocked.pop(worker, None)
        metrics.blockages.unblock(worker)

    def blocked(self) -> tuple[Blockage, ...]:
        return tuple(self._blocked.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Write the state every second until ``stop``, then remove the file."""
        if self._path is None:
            return
        try:
            while not stop.is_set():
                self._write()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WRITE_INTERVAL)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def _write(self) -> None:
        assert self._path is not None
        state = ProcessState(
            self._process,
            os.getpid(),
            datetime.now(UTC).isoformat(timespec="seconds"),
            self.blocked(),
        )
        scratch = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_text(json.dumps(asdict(state)))
            scratch.replace(self._path)
        except OSError as exc:
            log.warning("cannot write the worker state file %s: %s", self._path, exc)


def state_path(directory: Path, process: str) -> Path:
    return directory / f"{process}-{os.getpid()}.json"


def read_states(directory: Path) -> list[ProcessState]:
    """The states written by processes that are still alive, by process name."""
    states = []
    for path in sorted(directory.glob("*.json")):
        try:
            raw = json.loads(path.read_text())
            state = ProcessState(
                raw["process"],
                int(raw["pid"]),
                raw["written_at"],
                tuple(Blockage(**item) for item in raw["blocked"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(state.pid):
            states.append(state)
    return states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
