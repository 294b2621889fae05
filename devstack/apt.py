"""Installing Debian packages on demand (root only)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path


def install(*packages: str) -> None:
    """``apt-get install -y`` the packages, running ``apt-get update`` once per process."""
    names = " ".join(packages)
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing {names}: install it with `sudo apt-get install -y {names}` "
            "(devstack only installs packages when run as root)"
        )
    print(f"devstack: apt-get install -y {names}", file=sys.stderr, flush=True)
    _update()
    _run("install", "-y", "-q", "--no-install-recommends", *packages)


@functools.cache
def _update() -> None:
    _run("update", "-q")


def _run(*args: str) -> None:
    argv = ["apt-get", *args]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise RuntimeError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n" + "\n".join(output)
        )


def ensure_executable(name: str, package: str) -> Path:
    """The executable ``name`` (on PATH or in /usr/bin), installing Debian's ``package``
    first if it is missing."""

    def found() -> Path | None:
        hit = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None
        )
        return Path(hit) if hit else None

    binary = found()
    if binary is None:
        install(package)
        binary = found()
    if binary is None:
        raise RuntimeError(f"{package} installed but no {name} executable found")
    return binary
