"""The browser the browser tests drive: Debian's Chromium, installed on demand.

Playwright's own browser download cannot reach its host from these machines, so the
``playwright`` wheel drives the Debian build through ``executable_path``.
``python -m devstack.browser`` installs it (``scripts/test`` does, before the tests run).
"""

from __future__ import annotations

from pathlib import Path

from devstack import apt

PACKAGE = "chromium"


def ensure_chromium() -> Path:
    """Install Debian's chromium if needed; return its executable."""
    return apt.ensure_executable("chromium", PACKAGE)


def main() -> None:
    print(ensure_chromium())


if __name__ == "__main__":
    main()
