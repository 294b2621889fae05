"""The dead-letter topic: what a consumer gives up on, and the operator's tools for it
(``ordermesh dlq list|replay|discard``).

A consumer copies a message it cannot decode, or whose handler keeps failing for a reason
about the event itself, to the dead-letter topic with ``dlq_*`` headers naming the error, the
group and where the message came from (:func:`dead_letter_headers`). Progress through the
topic is the replay group's committed offset, so a listing shows only letters not yet
settled, and a replay can be resumed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from services.platform.messaging.codec import CE_ID, CE_TYPE, header_map
from services.platform.messaging.producer import (
    ConfigValue,
    DeliveryTracker,
    producer_config_with_defaults,
)
from services.platform.messaging.registry import DEAD_LETTER, DLQ_REPLAYER_GROUP

DLQ_ERROR = "dlq_error"
DLQ_ORIGINAL_TOPIC = "dlq_original_topic"
DLQ_ORIGINAL_PARTITION = "dlq_original_partition"
DLQ_ORIGINAL_OFFSET = "dlq_original_offset"
DLQ_CONSUMER_GROUP = "dlq_consumer_group"
DLQ_ATTEMPTS = "dlq_attempts"
DLQ_FAILED_AT = "dlq_failed_at"
_DLQ_PREFIX = "dlq_"
_ERROR_HEADER_LIMIT = 2000
_ADMIN_TIMEOUT = 10.0

Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(message: Message, *, error: str, group: str, attempts: int) -> Headers:
    """The message's own headers (without earlier ``dlq_*`` ones) and why it is dead."""
    return [
        *without_dlq_headers(message),
        (DLQ_ERROR, error[:_ERROR_HEADER_LIMIT].encode()),
        (DLQ_ORIGINAL_TOPIC, str(message.topic()).encode()),
        (DLQ_ORIGINAL_PARTITION, str(message.partition()).encode()),
        (DLQ_ORIGINAL_OFFSET, str(message.offset()).encode()),
        (DLQ_CONSUMER_GROUP, group.encode()),
        (DLQ_ATTEMPTS, str(attempts).encode()),
        (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
    ]


def headers_of(message: Message) -> Headers:
    headers = message.headers() or ()
    return list(headers.items() if isinstance(headers, dict) else headers)


def without_dlq_headers(message: Message) -> Headers:
    return [
        (name, value) for name, value in headers_of(message) if not name.startswith(_DLQ_PREFIX)
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of the dead-letter topic, with its error headers parsed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]
    original_topic: str
    original_partition: int
    original_offset: int
    consumer_group: str
    error: str
    attempts: int
    failed_at: str
    event_id: str | None
    event_type: str | None


def list_dead_letters(
    bootstrap: str,
    limit: int = 100,
    *,
    topic: str = DEAD_LETTER,
    replay_group: str = DLQ_REPLAYER_GROUP,
) -> list[DeadLetter]:
    """The dead letters not yet replayed, oldest first (at most ``limit``)."""
    consumer = _dlq_consumer(bootstrap, replay_group)
    try:
        return [_dead_letter(message) for message in _pending(consumer, topic, limit)]
    finally:
        consumer.close()


class UnknownDeadLetterError(LookupError):
    """Some requested event ids have no pending dead letter; nothing was moved."""

    def __init__(self, event_ids: Collection[str]) -> None:
        self.event_ids = tuple(sorted(event_ids))
        super().__init__("no pending dead letter for event id " + ", ".join(self.event_ids))


def replay_dead_letters(
    bootstrap: str,
    *,
    limit: int | None = None,
    event_ids: Collection[str] | None = None,
    topic: str = DEAD_LETTER,
    replay_group: str = DLQ_REPLAYER_GROUP,
    producer_config: Mapping[str, ConfigValue] | None = None,
) -> int:
    """Move pending dead letters back to their original topics; returns how many records
    were produced.

    A replayed record keeps its key, value and CloudEvents headers (the ``dlq_*``
    headers are dropped); consumer groups that already applied it skip it via their inbox.
    A record that several groups dead-lettered is replayed once (every group reads it
    again). Progress is the replay group's committed offset, so a replay can be resumed.

    With ``event_ids`` only those events' dead letters are replayed, and all of them must
    be pending (else ``UnknownDeadLetterError`` and nothing moves). The committed offset
    is one position per partition, so pending letters that precede a replayed one are
    re-appended to the dead-letter topic, keeping their headers, and stay pending. Run one
    replay at a time.
    """
    return _settle(
        bootstrap,
        replay=True,
        limit=limit,
        event_ids=event_ids,
        topic=topic,
        replay_group=replay_group,
        producer_config=producer_config,
    )


def discard_dead_letters(
    bootstrap: str,
    event_ids: Collection[str],
    *,
    topic: str = DEAD_LETTER,
    replay_group: str = DLQ_REPLAYER_GROUP,
    producer_config: Mapping[str, ConfigValue] | None = None,
) -> int:
    """Drop the pending dead letters of ``event_ids`` without replaying them; returns how
    many. The dead-letter topic keeps them until retention, behind the replay offset."""
    return _settle(
        bootstrap,
        replay=False,
        limit=None,
        event_ids=event_ids,
        topic=topic,
        replay_group=replay_group,
        producer_config=producer_config,
    )


@dataclass(frozen=True, slots=True)
class _Move:
    """How one pending dead letter is settled: produced to ``destination`` (back to its
    original topic when ``replayed``, else re-appended to the dead-letter topic), or with no
    destination settled at once or by the delivery of the record at index ``same_as``."""

    destination: str | None = None
    replayed: bool = False
    same_as: int | None = None


def _settle(
    bootstrap: str,
    *,
    replay: bool,
    limit: int | None,
    event_ids: Collection[str] | None,
    topic: str,
    replay_group: str,
    producer_config: Mapping[str, ConfigValue] | None,
) -> int:
    """Replay (or drop) the chosen pending letters, re-append the unchosen letters before
    them, then commit the replay group's offset past every letter that was settled."""
    consumer = _dlq_consumer(bootstrap, replay_group)
    producer = Producer(
        producer_config_with_defaults({"bootstrap.servers": bootstrap, **(producer_config or {})})
    )
    try:
        messages = _pending(consumer, topic, limit if event_ids is None else None)
        letters = [_dead_letter(message) for message in messages]
        moves = _plan(letters, event_ids, replay=replay, topic=topic)
        tracker = DeliveryTracker(len(messages))
        for index, move in moves.items():
            if move.destination is None:
                tracker.acknowledged[index] = move.same_as is None
                continue
            message = messages[index]
            producer.produce(
                move.destination,
                message.value(),
                key=message.key(),
                headers=without_dlq_headers(message) if move.replayed else headers_of(message),
                on_delivery=tracker.callback(index),
            )
        sent = [index for index, move in moves.items() if move.destination is not None]
        if sent:
            producer.flush(60.0)
        _commit_settled(consumer, topic, letters, moves, tracker.acknowledged)
        failed = sum(1 for index in sent if not tracker.acknowledged[index])
        if failed:
            raise KafkaException(f"{failed} dead letters could not be moved; rerun the command")
        if replay:
            return sum(1 for move in moves.values() if move.replayed)
        return sum(1 for move in moves.values() if move.destination is None)
    finally:
        consumer.close()


def _plan(
    letters: Sequence[DeadLetter], event_ids: Collection[str] | None, *, replay: bool, topic: str
) -> dict[int, _Move]:
    """The move of every letter up to the last chosen one in its partition (by index)."""
    wanted = None if event_ids is None else set(event_ids)
    if wanted is not None:
        missing = wanted - {letter.event_id for letter in letters}
        if missing:
            raise UnknownDeadLetterError(missing)
    chosen = [wanted is None or letter.event_id in wanted for letter in letters]
    orphans = [
        letter.offset
        for letter, pick in zip(letters, chosen, strict=True)
        if replay and pick and not letter.original_topic
    ]
    if orphans:
        raise ValueError(f"dead letters at {topic} offsets {orphans} name no original topic")
    cutoff: dict[int, int] = {}
    for letter, pick in zip(letters, chosen, strict=True):
        if pick:
            cutoff[letter.partition] = max(letter.offset, cutoff.get(letter.partition, -1))
    moves: dict[int, _Move] = {}
    first_replay: dict[tuple[str, int, int], int] = {}
    for index, (letter, pick) in enumerate(zip(letters, chosen, strict=True)):
        if letter.offset > cutoff.get(letter.partition, -1):
            continue
        if not pick:
            moves[index] = _Move(destination=topic)
        elif not replay:
            moves[index] = _Move()
        else:
            origin = (letter.original_topic, letter.original_partition, letter.original_offset)
            if letter.original_offset >= 0 and origin in first_replay:
                moves[index] = _Move(same_as=first_replay[origin])
            else:
                first_replay[origin] = index
                moves[index] = _Move(destination=letter.original_topic, replayed=True)
    return moves


def _commit_settled(
    consumer: Consumer,
    topic: str,
    letters: Sequence[DeadLetter],
    moves: Mapping[int, _Move],
    acknowledged: Sequence[bool],
) -> None:
    """Commit, per partition, past the longest run of settled letters."""
    next_offsets: dict[int, int] = {}
    stuck: set[int] = set()
    for index, letter in enumerate(letters):
        move = moves.get(index)
        if move is None or letter.partition in stuck:
            continue
        settling = index if move.same_as is None else move.same_as
        if not acknowledged[settling]:
            stuck.add(letter.partition)
            continue
        next_offsets[letter.partition] = letter.offset + 1
    if next_offsets:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()],
            asynchronous=False,
        )


def _dlq_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )


def _pending(consumer: Consumer, topic: str, limit: int | None) -> list[Message]:
    metadata = consumer.list_topics(topic, timeout=_ADMIN_TIMEOUT)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise KafkaException(f"dead-letter topic {topic} is not available")
    partitions = [TopicPartition(topic, p) for p in sorted(described.partitions)]
    ends: dict[int, int] = {}
    assignment: list[TopicPartition] = []
    for committed in consumer.committed(partitions, timeout=_ADMIN_TIMEOUT):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, committed.partition), timeout=_ADMIN_TIMEOUT
        )
        start = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
        if max(committed.offset, low) < high:
            assignment.append(TopicPartition(topic, committed.partition, start))
            ends[committed.partition] = high
    consumer.assign(assignment)
    messages: list[Message] = []
    while ends and (limit is None or len(messages) < limit):
        message = consumer.poll(_ADMIN_TIMEOUT)
        if message is None:
            raise KafkaException(f"timed out reading {topic}")
        partition, offset = _int(message.partition()), _int(message.offset())
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(error)
        if error is None and offset < ends.get(partition, -1):
            messages.append(message)
        if partition in ends and (error is not None or offset + 1 >= ends[partition]):
            del ends[partition]
    return messages


def _dead_letter(message: Message) -> DeadLetter:
    headers = header_map(message.headers())
    return DeadLetter(
        partition=_int(message.partition()),
        offset=_int(message.offset()),
        key=_as_bytes(message.key()),
        value=_as_bytes(message.value()),
        headers=headers,
        original_topic=headers.get(DLQ_ORIGINAL_TOPIC, ""),
        original_partition=int(headers.get(DLQ_ORIGINAL_PARTITION, "-1")),
        original_offset=int(headers.get(DLQ_ORIGINAL_OFFSET, "-1")),
        consumer_group=headers.get(DLQ_CONSUMER_GROUP, ""),
        error=headers.get(DLQ_ERROR, ""),
        attempts=int(headers.get(DLQ_ATTEMPTS, "0")),
        failed_at=headers.get(DLQ_FAILED_AT, ""),
        event_id=headers.get(CE_ID),
        event_type=headers.get(CE_TYPE),
    )


def _int(value: int | None) -> int:
    if value is None:
        raise ValueError("message has no partition or offset")
    return value


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
