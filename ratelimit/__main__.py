"""Entrypoint of the rate-limit service: ``python -m ratelimit`` (serve until SIGTERM; SIGHUP
reloads the limits), or ``python -m ratelimit --check`` (load the limits, print them, exit)."""

import argparse
import sys

import uvloop

from ratelimit.app import RateLimitServer
from ratelimit.config import load
from ratelimit.domain import ConfigError
from ratelimit.settings import RateLimitSettings
from services.platform.logging import configure_logging
from services.platform.metrics import serving
from services.platform.server import run_until_signalled
from services.platform.settings import SettingsError


async def serve(settings: RateLimitSettings) -> None:
    server = RateLimitServer(settings)
    with serving(settings.platform.metrics_port, settings.platform.metrics_host):
        await run_until_signalled(server.start, server.stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ratelimit", description=__doc__)
    parser.add_argument("--check", action="store_true", help="validate the limits and exit")
    args = parser.parse_args()
    try:
        settings = RateLimitSettings.from_env()
        limits = load(settings.config_path)
    except (SettingsError, ConfigError) as error:
        sys.exit(f"python -m ratelimit: refusing to start: {error}")
    if args.check:
        for route in limits.routes:
            mode = "closed" if route.fail_closed else "open"
            print(f"{route.name}: {route.rate.describe()}, fails {mode}")
        return
    configure_logging("ratelimit", settings.platform.log_level)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
