"""Installing Debian packages on demand (root only)."""

from __future__ import annotations

import os
import subprocess
import sys

_updated = False


def install(*packages: str) -> None:
    """``apt-get install -y`` the packages, running ``apt-get update`` once first."""
    global _updated
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing {' '.join(packages)}: install it with "
            f"`sudo apt-get install -y {' '.join(packages)}` (devstack only installs as root)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"devstack: apt-get install -y {' '.join(packages)}", file=sys.stderr, flush=True)
    if not _updated:
        _run(["apt-get", "update", "-q"], env)
        _updated = True
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env)


def _run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise RuntimeError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n" + "\n".join(output)
        )
