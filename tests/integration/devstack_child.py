"""Driving devstack from a child interpreter with its own ``ORDERMESH_RUN_DIR`` and ports (as
``devstack.paths`` reads them at import), so a running dev stack is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.paths import REPO_ROOT


def isolated_env(run_dir: Path, **settings: str) -> dict[str, str]:
    """This environment with the repository importable, ``run_dir`` as the run dir and
    ``settings`` (e.g. ``ORDERMESH_ZIPKIN_PORT``) on top."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "ORDERMESH_RUN_DIR": str(run_dir),
        **settings,
    }


def drive(driver: str, env: dict[str, str], *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run the Python source ``driver`` with ``args``; it must succeed and print its facts as
    one JSON object on its last line."""
    done = subprocess.run(
        [sys.executable, "-c", driver, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until ``check`` returns something truthy; its last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"{what}: not after {timeout:g}s"
            return result
        time.sleep(0.5)
