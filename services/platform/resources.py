"""What the composition root hands to each component it hosts."""

from dataclasses import dataclass

import grpc

from services.platform.db import Pool
from services.platform.settings import Settings
from services.platform.tokens import TokenVerifier
from workers.codec import EventCodec


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    verifier: TokenVerifier
    auth_channel: grpc.aio.Channel
    inventory_channel: grpc.aio.Channel
    codec: EventCodec
