"""Rotates the token signing key: `python -m services.auth.rotate_keys`.

Adds a key and publishes it in the JWKS, waits until every JWKS cache has seen it, makes it
the signing key, then retires keys superseded longer ago than the refresh-token lifetime
(nothing they signed is still valid). Safe to re-run, and to run from several places at
once: an interrupted run leaves its pending key for the next run to finish.
"""

import argparse
import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from services.auth import handlers
from services.auth.bootstrap import signing_key_store, token_policy
from services.auth.domain.commands import RotateSigningKey
from services.auth.domain.model import RotationOutcome
from services.common.clock import utc_now
from services.platform.db import open_pool
from services.platform.logging import configure_logging
from services.platform.settings import Settings

log = logging.getLogger("ordermesh.auth.rotate_keys")

# Envoy's jwt_authn caches a remote JWKS for 10 minutes unless configured otherwise.
DEFAULT_PUBLISH_DELAY_SECONDS = 15 * 60


async def rotate(settings: Settings, publish_delay: timedelta) -> RotationOutcome:
    policy = token_policy(settings)
    pool = await open_pool(settings, name="auth-rotate-keys")
    try:
        return await handlers.rotate_signing_key(
            RotateSigningKey(
                publish_delay=publish_delay,
                token_lifetime=max(policy.access_ttl, policy.refresh_ttl),
            ),
            signing_key_store(settings, pool),
            utc_now,
            asyncio.sleep,
        )
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.auth.rotate_keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--publish-delay-seconds",
        type=float,
        default=DEFAULT_PUBLISH_DELAY_SECONDS,
        help="how long the new key is published before it signs "
        f"(default {DEFAULT_PUBLISH_DELAY_SECONDS}; must exceed every JWKS cache lifetime)",
    )
    args = parser.parse_args(argv)
    if args.publish_delay_seconds < 0:
        parser.error("--publish-delay-seconds must not be negative")
    settings = Settings.from_env()
    configure_logging("auth-rotate-keys", settings.log_level)
    outcome = asyncio.run(rotate(settings, timedelta(seconds=args.publish_delay_seconds)))
    log.info(
        "signing key rotated",
        extra={"activated_kid": outcome.activated_kid, "retired_kids": list(outcome.retired_kids)},
    )


if __name__ == "__main__":
    main()
