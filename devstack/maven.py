"""Java servers from Maven Central: the machine's Java 17, and artifacts resolved once with
``mvn dependency:copy-dependencies`` from a small pom into a directory of the cache.

A resolved directory is complete when its marker holds the fingerprint of the pom and the
version (and the files the caller requires are there); it is filled in a staging directory
and renamed into place under a lock, so concurrent ``up`` runs resolve it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from devstack import apt


def java() -> Path:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if found is None:
        apt.install("openjdk-17-jre-headless")
        found = shutil.which("java")
    if found is None:
        raise RuntimeError("java not found after installing openjdk-17-jre-headless")
    return Path(found)


def _mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        apt.install("maven")
        found = shutil.which("mvn")
    if found is None:
        raise RuntimeError("mvn not found after installing maven")
    return found


def fingerprint(pom: Path, version: str) -> str:
    return hashlib.sha256(pom.read_bytes() + version.encode()).hexdigest()


def is_complete(marker: Path, expected: str, files: Sequence[Path]) -> bool:
    try:
        found = marker.read_text().strip()
    except FileNotFoundError:
        return False
    return found == expected and all(path.is_file() for path in files)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve(
    what: str,
    *,
    pom: Path,
    version: str,
    properties: Mapping[str, str],
    target: Path,
    marker: Path,
    required: Sequence[str],
    install_log: Path,
) -> Path:
    """Copy the runtime dependencies of ``pom`` into ``target`` unless ``marker`` says they
    are already there; ``required`` names files that must be among them. Returns ``target``."""
    expected = fingerprint(pom, version)
    wanted = [target / name for name in required]
    if is_complete(marker, expected, wanted):
        return target
    with locked(target.parent.with_name(f"{target.parent.name}.lock")):
        if is_complete(marker, expected, wanted):
            return target
        staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        argv = [
            _mvn(),
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            *(f"-D{key}={value}" for key, value in properties.items()),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        install_log.parent.mkdir(parents=True, exist_ok=True)
        with install_log.open("ab") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        missing = [name for name in required if not (staging / name).is_file()]
        if result.returncode != 0 or missing:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(
                f"resolving {what} {version} with Maven failed (exit {result.returncode}"
                f"{', missing ' + ', '.join(missing) if missing else ''}); see {install_log}"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        marker.write_text(expected + "\n")
    return target
