"""Go command-line tools the tests and benches drive (grpcurl, ghz).

Each is taken from PATH, else from ``~/.cache/ordermesh/bin`` (``CACHE_DIR/bin``), else built
there once with ``go install`` at a pinned version: outside the clone, shared by every clone on
the machine, nothing of it committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import CACHE_DIR

BIN_DIR = CACHE_DIR / "bin"


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    version: str


GRPCURL = GoTool("grpcurl", "github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.3")
GHZ = GoTool("ghz", "github.com/bojand/ghz/cmd/ghz", "v0.120.0")


class GoToolError(RuntimeError):
    """A tool is not installed and cannot be built here."""


def executable(tool: GoTool, directory: Path = BIN_DIR, *, from_path: bool = True) -> str:
    """The path of ``tool``: from PATH (unless ``from_path`` is false), else from
    ``directory``, where it is installed with ``go install`` if it is not there yet."""
    found = (shutil.which(tool.name) if from_path else None) or shutil.which(
        tool.name, path=str(directory)
    )
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        raise GoToolError(f"{tool.name} is not installed and there is no Go toolchain to build it")
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"installing {tool.name} {tool.version} into {directory} (go install, once) ...",
        file=sys.stderr,
        flush=True,
    )
    built = subprocess.run(
        [go, "install", f"{tool.module}@{tool.version}"],
        env={**os.environ, "GOBIN": str(directory), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = shutil.which(tool.name, path=str(directory))
    if built.returncode != 0 or found is None:
        raise GoToolError(
            f"go install {tool.module}@{tool.version} failed:\n{built.stderr[-2000:]}"
        )
    return found
