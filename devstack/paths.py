"""Filesystem locations used by the dev stack.

``ORDERMESH_RUN_DIR`` moves the run dir (a second, isolated stack, e.g. for tests);
``ORDERMESH_CACHE`` moves the download cache.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
RUN_DIR: Path = Path(os.environ.get("ORDERMESH_RUN_DIR") or REPO_ROOT / ".run").absolute()
LOG_DIR: Path = RUN_DIR / "logs"
PID_DIR: Path = RUN_DIR / "pids"
CACHE_DIR: Path = Path(
    os.environ.get("ORDERMESH_CACHE") or Path.home() / ".cache" / "ordermesh"
).expanduser()


def ensure_run_dirs() -> None:
    for directory in (RUN_DIR, LOG_DIR, PID_DIR):
        directory.mkdir(parents=True, exist_ok=True)


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def pid_path(name: str) -> Path:
    return PID_DIR / f"{name}.pid"
