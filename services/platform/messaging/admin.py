"""Topic administration: create ordermesh's topics idempotently."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions, NewTopic

from services.platform.messaging.registry import ALL, TopicSpec

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = 30.0


def ensure_topics(bootstrap: str, topics: Sequence[TopicSpec] = ALL) -> None:
    """Create missing topics and grow partition counts that are too small.

    Existing topics are otherwise left as they are (their config is not rewritten), so the
    call is safe to repeat from every process at startup.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=_REQUEST_TIMEOUT)
    missing = [spec for spec in topics if spec.name not in metadata.topics]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=dict(spec.config),
                )
                for spec in missing
            ],
            request_timeout=_REQUEST_TIMEOUT,
        )
        for name, future in futures.items():
            try:
                future.result()
                log.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    too_small = [
        spec
        for spec in topics
        if spec.name in metadata.topics
        and len(metadata.topics[spec.name].partitions) < spec.partitions
    ]
    if too_small:
        futures = admin.create_partitions(
            [NewPartitions(spec.name, spec.partitions) for spec in too_small],
            request_timeout=_REQUEST_TIMEOUT,
        )
        for future in futures.values():
            future.result()


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Delete topics; names that do not exist are ignored."""
    names = list(names)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_topics(names, request_timeout=_REQUEST_TIMEOUT)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
