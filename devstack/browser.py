"""The browser the browser tests drive: Debian's Chromium, installed on demand.

Playwright's own browser download cannot reach its host from these machines, so the
``playwright`` wheel drives the Debian build through ``executable_path``.
``python -m devstack.browser`` installs it (``scripts/test`` does, before the tests run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack import apt

PACKAGE = "chromium"


def _binary() -> Path | None:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None
    )
    return Path(found) if found else None


def ensure_chromium() -> Path:
    """Install Debian's chromium if needed; return its executable."""
    binary = _binary()
    if binary is None:
        apt.install(PACKAGE)
        binary = _binary()
    if binary is None:
        raise RuntimeError(f"{PACKAGE} installed but no chromium executable found")
    return binary


def main() -> None:
    print(ensure_chromium())


if __name__ == "__main__":
    main()
