"""Copies the Google API protos ordermesh imports out of the googleapis-common-protos wheel.

buf cannot reach the Buf Schema Registry here, so the imports come from the pinned Python
package instead and are never vendored into the repository.
"""

import shutil
import sys
from pathlib import Path

import google.api

IMPORTS = (
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/api/field_behavior.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)


def main(target: Path) -> None:
    site_root = Path(google.api.__path__[0]).parent.parent
    for name in IMPORTS:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(site_root / name, destination)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
