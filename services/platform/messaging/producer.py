"""The producer settings every ordermesh producer uses, and delivery reports waited for
without blocking the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TypeAlias

from confluent_kafka import KafkaError, Message, Producer

ConfigValue: TypeAlias = str | int | float | bool

PRODUCER_DEFAULTS: Mapping[str, ConfigValue] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.timeout.ms": 30_000,
    # Below the broker's own limit (about 1 MiB), so librdkafka refuses an oversized record
    # itself, at produce(), before any later record of its key has been sent.
    "message.max.bytes": 1_000_000,
}
_ENFORCED: Mapping[str, ConfigValue] = {"enable.idempotence": True, "acks": "all"}


def producer_config_with_defaults(overrides: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    """Defaults, then ``overrides``; idempotence and ``acks=all`` cannot be turned off."""
    return {**PRODUCER_DEFAULTS, **overrides, **_ENFORCED}


class DeliveryTracker:
    """Delivery reports of one batch, filled from librdkafka's callback thread."""

    def __init__(self, size: int) -> None:
        self.acknowledged = [False] * size
        self.errors: dict[int, KafkaError] = {}
        self.reported = 0

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.acknowledged[index] = True
            else:
                self.errors[index] = error
            self.reported += 1

        return on_delivery


async def flush_until_reported(
    producer: Producer, tracker: DeliveryTracker, expected: int, max_wait: float
) -> None:
    """Serve delivery callbacks in a worker thread until ``expected`` reports or ``max_wait``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while tracker.reported < expected and loop.time() < deadline:
        await asyncio.to_thread(producer.flush, min(1.0, max(0.0, deadline - loop.time())))
