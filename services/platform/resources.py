"""What the composition root hands to each component it hosts."""

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from services.platform.db import Pool
from services.platform.messaging.codec import EventCodec
from services.platform.settings import Settings
from services.platform.tokens import TokenVerifier


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pools: Mapping[str, Pool]
    verifier: TokenVerifier
    auth_channel: grpc.aio.Channel
    inventory_channel: grpc.aio.Channel
    ratelimit_channel: grpc.aio.Channel
    codec: EventCodec

    def pool(self, component: str) -> Pool:
        """The pool of ``component``, connected as its own database role."""
        try:
            return self.pools[component]
        except KeyError:
            raise KeyError(f"no database pool was opened for {component!r}") from None
