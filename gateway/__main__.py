"""Entrypoint of the WebSocket bridge: ``python -m gateway`` (serve until SIGTERM), or
``python -m gateway --healthcheck`` (exit 0 if this host's bridge answers ``/healthz``)."""

import argparse
import sys
import urllib.error
import urllib.request

import uvloop

from gateway.app import HEALTH_PATH, serve
from gateway.settings import GatewaySettings
from services.platform.logging import configure_logging
from services.platform.settings import SettingsError


def healthcheck(settings: GatewaySettings) -> int:
    url = f"http://127.0.0.1:{settings.port}{HEALTH_PATH}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--healthcheck", action="store_true", help="probe /healthz and exit")
    args = parser.parse_args()
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as error:
        sys.exit(f"python -m gateway: refusing to start: {error}")
    if args.healthcheck:
        sys.exit(healthcheck(settings))
    configure_logging("gateway", settings.platform.log_level)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
