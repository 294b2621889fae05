"""Filesystem locations used by the dev stack."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
RUN_DIR: Path = REPO_ROOT / ".run"
LOG_DIR: Path = RUN_DIR / "logs"
PID_DIR: Path = RUN_DIR / "pids"
CACHE_DIR: Path = Path(
    os.environ.get("ORDERMESH_CACHE") or Path.home() / ".cache" / "ordermesh"
).expanduser()


def ensure_run_dirs() -> None:
    """Create ``.run`` with its log and pid dirs; ``.run`` ignores itself in git."""
    for directory in (RUN_DIR, LOG_DIR, PID_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    ignore = RUN_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def pid_path(name: str) -> Path:
    return PID_DIR / f"{name}.pid"
