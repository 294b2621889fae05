"""The operator's view and tools against the real Kafka and Postgres: `ordermesh status`
shows consumer lag and outbox backlog, `ordermesh dlq` lists, replays and discards dead
letters. Dead letters are written to the real dead-letter topic with unique event ids that
point back to a throwaway topic, so no worker ever sees them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from devstack import cli, stack
from devstack.paths import REPO_ROOT
from services.platform.messaging import inspect
from services.platform.messaging import registry as topics
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import cloudevent_headers
from services.platform.messaging.dead_letters import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
)
from services.platform.messaging.outbox import outbox_ddl
from services.platform.messaging.registry import TopicSpec
from services.platform.settings import Settings

pytestmark = pytest.mark.integration

ALL_PENDING = "100000"


@pytest.fixture(scope="module")
def bootstrap(settings: Settings) -> str:
    ensure_topics(settings.kafka_bootstrap)
    return settings.kafka_bootstrap


@pytest.fixture
def scratch_topic(bootstrap: str) -> Iterator[str]:
    """A throwaway topic with 3 partitions, deleted afterwards."""
    name = f"test.operator.{uuid.uuid4().hex[:12]}"
    ensure_topics(bootstrap, [TopicSpec(name, partitions=3)])
    yield name
    delete_topics(bootstrap, [name])


@pytest.fixture
def producer(bootstrap: str) -> Iterator[Producer]:
    opened = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    yield opened
    opened.flush(10)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_status_shows_lag_of_every_registered_group_and_backlog_of_every_outbox(
    migrated: None, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = inspect.registered_groups()
    schemas = inspect.registered_outbox_schemas()
    assert topics.ORDER_VALIDATOR_GROUP in groups
    assert "orders" in schemas

    code, out, _ = run_cli(capsys, "status")

    assert code == 0
    for group in groups:
        assert re.search(rf"^{re.escape(group)}\s+\d+\s+\d+\s+\S", out, re.MULTILINE), out
    for schema in schemas:
        assert re.search(rf"^{re.escape(schema)}\s+\d+\s+\S", out, re.MULTILINE), out
    assert re.search(r"^api\s+(running|stopped)", out, re.MULTILINE), out


def test_lag_counts_from_the_low_watermark_until_the_group_commits(
    bootstrap: str, scratch_topic: str, producer: Producer
) -> None:
    group = f"test.operator.lag.{uuid.uuid4().hex[:8]}"
    for partition, count in ((0, 3), (1, 2)):
        for index in range(count):
            producer.produce(scratch_topic, f"m{index}".encode(), partition=partition)
    assert producer.flush(10) == 0

    [fresh] = inspect.consumer_lag(bootstrap, {group: [scratch_topic]})
    assert (fresh.group, fresh.lag, fresh.members) == (group, 5, 0)
    assert fresh.by_topic == {scratch_topic: 5}

    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(scratch_topic, 0, 2)], asynchronous=False)
    finally:
        committer.close()
    [after] = inspect.consumer_lag(bootstrap, {group: [scratch_topic]})
    assert after.lag == 1 + 2


def test_backlog_counts_unpublished_rows_and_ages_the_oldest(
    settings: Settings, migrated: None
) -> None:
    schema = f"opcli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(outbox_ddl(schema))
        try:
            for age, published in ((timedelta(seconds=90), False), (timedelta(hours=2), True)):
                conn.execute(
                    f"INSERT INTO {schema}.outbox (event_id, topic, message_key, event_type,"
                    " payload, occurred_at, published_at)"
                    " VALUES (%s, 't', 'k', 'e', '\\x00', now() - %s, %s)",
                    (uuid.uuid4(), age, datetime.now(UTC) if published else None),
                )
            [backlog, missing] = inspect.outbox_backlog(
                settings.database_url, [schema, f"{schema}_missing"]
            )
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert backlog.unpublished == 1
    assert backlog.oldest_age is not None
    assert timedelta(seconds=90) <= backlog.oldest_age < timedelta(minutes=10)
    assert not missing.table_exists
    report = inspect.PipelineReport(
        outboxes=[backlog, missing], outbox_schemas=(schema, f"{schema}_missing")
    )
    lines = inspect.report_lines(report)
    assert any(re.fullmatch(rf"{schema}\s+1\s+0\s+1m3\ds", line) for line in lines), lines


def test_an_unreachable_broker_and_database_are_reported_not_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    started = time.monotonic()
    report = inspect.pipeline_report(
        f"127.0.0.1:{closed_port}",
        f"postgresql://nobody:nothing@127.0.0.1:{closed_port}/nowhere",
        groups={"some.group": ("some.topic",)},
        outbox_schemas=("orders",),
        timeout=2.0,
    )
    assert time.monotonic() - started < 15
    assert report.kafka_error is not None and "unreachable" in report.kafka_error
    assert report.postgres_error is not None and "unreachable" in report.postgres_error
    text = "\n".join(inspect.report_lines(report))
    assert "unknown: kafka unreachable" in text
    assert "unknown: postgres unreachable" in text


def _dead_letter(
    producer: Producer,
    *,
    key: bytes,
    event_id: uuid.UUID,
    original_topic: str,
    original_offset: int,
    group: str,
    marker: str,
) -> None:
    """Write a dead letter as a consumer would."""
    headers = cloudevent_headers(
        event_id=event_id,
        event_name="OrderCreated",
        source="/ordermesh/tests",
        time=datetime.now(UTC),
    )
    headers.update(
        {
            DLQ_ERROR: f"RuntimeError('{marker}')",
            DLQ_ORIGINAL_TOPIC: original_topic,
            DLQ_ORIGINAL_PARTITION: "0",
            DLQ_ORIGINAL_OFFSET: str(original_offset),
            DLQ_CONSUMER_GROUP: group,
            DLQ_ATTEMPTS: "5",
            DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    producer.produce(topics.DEAD_LETTER, marker.encode(), key=key, headers=list(headers.items()))
    assert producer.flush(10) == 0


def _records(bootstrap: str, topic: str) -> list[Message]:
    """Every record of ``topic`` (all partitions, read to their high watermark)."""
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.partition.eof": True}
    )
    try:
        metadata = reader.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        reader.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + 20
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                records.append(message)
            else:
                at_end.add(message.partition() or 0)
        assert len(at_end) == len(partitions), f"could not read {topic} to its end"
        return records
    finally:
        reader.close()


def _letter_line(out: str, event_id: uuid.UUID) -> list[str]:
    return [line for line in out.splitlines() if f"id={event_id}" in line]


def test_dlq_list_replay_and_discard_round_trip(
    bootstrap: str,
    scratch_topic: str,
    producer: Producer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    parked, failed = uuid.uuid4(), uuid.uuid4()
    parked_key, failed_key = (f"order-{uuid.uuid4()}".encode() for _ in range(2))
    _dead_letter(
        producer,
        key=parked_key,
        event_id=parked,
        original_topic=scratch_topic,
        original_offset=3,
        group="test.operator.a",
        marker=marker,
    )
    for group in ("test.operator.a", "test.operator.b"):
        _dead_letter(
            producer,
            key=failed_key,
            event_id=failed,
            original_topic=scratch_topic,
            original_offset=7,
            group=group,
            marker=marker,
        )

    code, out, _ = run_cli(capsys, "dlq", "list", "--limit", ALL_PENDING)
    assert code == 0
    lines = _letter_line(out, failed)
    assert len(lines) == 2, out
    assert f"{scratch_topic}[0]@7" in lines[0]
    assert "OrderCreated" in lines[0]
    assert "group=test.operator.a" in lines[0] and "group=test.operator.b" in lines[1]
    assert "attempts=5" in lines[0]
    assert f"error=RuntimeError('{marker}')" in lines[0]
    assert f"key={failed_key.decode()}" in lines[0]
    assert len(_letter_line(out, parked)) == 1

    code, out, _ = run_cli(capsys, "dlq", "replay", "--event-id", str(failed))
    assert (code, out.strip()) == (0, "replayed 1 dead letter(s) to their original topics")

    replayed = _records(bootstrap, scratch_topic)
    assert [m.key() for m in replayed] == [failed_key], "two groups' letter replays once"
    headers = dict(replayed[0].headers() or [])
    assert headers["ce_id"] == str(failed).encode()
    assert not [name for name in headers if name.startswith("dlq_")]
    assert replayed[0].value() == marker.encode()

    code, out, _ = run_cli(capsys, "dlq", "list", "--limit", ALL_PENDING)
    assert _letter_line(out, failed) == [], "replayed letters are no longer pending"
    [still_parked] = _letter_line(out, parked)
    assert f"key={parked_key.decode()}" in still_parked

    code, _, err = run_cli(capsys, "dlq", "replay", "--event-id", str(failed))
    assert code == 1
    assert f"no pending dead letter for event id {failed}" in err

    code, out, _ = run_cli(capsys, "dlq", "discard", "--event-id", str(parked))
    assert (code, out.strip()) == (0, "discarded 1 dead letter(s)")
    code, out, _ = run_cli(capsys, "dlq", "list", "--limit", ALL_PENDING)
    assert _letter_line(out, parked) == []
    assert [m.key() for m in _records(bootstrap, scratch_topic)] == [failed_key]


def test_dlq_and_replica_arguments_are_checked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dlq", "replay"])
    assert exit_info.value.code == 2
    assert "one of the arguments --all --event-id is required" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        cli.main(["dlq", "list", "--limit", "0"])
    assert "'0' is not a positive whole number" in capsys.readouterr().err

    for bad, problem in (
        ("order_validator", "expected worker=count"),
        ("nobody=2", "unknown worker 'nobody'"),
        ("order_validator=0", "the count must be a whole number from 1 to"),
        ("order_validator=two", "the count must be a whole number from 1 to"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["up", "--replicas", bad])
        assert exit_info.value.code == 2
        assert f"--replicas {bad!r}: {problem}" in capsys.readouterr().err

    monkeypatch.setenv("ORDERMESH_WORKER_REPLICAS", "fulfillment=2,order_validator=x")
    with pytest.raises(SystemExit):
        cli.main(["up"])
    err = capsys.readouterr().err
    assert "ORDERMESH_WORKER_REPLICAS 'order_validator=x'" in err


def test_replica_requests_merge_environment_and_flags() -> None:
    environ = {"ORDERMESH_WORKER_REPLICAS": " fulfillment=2, order_validator=3 ,"}
    assert stack.requested_replicas(["order_validator=2", "relay=2"], environ) == {
        "fulfillment": 2,
        "order_validator": 2,
        "relay": 2,
    }
    assert stack.requested_replicas([], {}) == {}


REPLICA_DRIVER = """
from devstack import procs, stack
from devstack.ports import Ports

name = stack.replica_name("order_validator", 2)
procs.start_daemon(name, ["sleep", "120"])
print(dict(stack.status(Ports.from_env()))[name].startswith("running"))
print(name in stack.log_names())
stack.down()
print(procs.is_running(name))
"""


def test_down_stops_the_replicas_status_lists(tmp_path: Path) -> None:
    """In a child interpreter with its own run dir, so the running stack is untouched."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    env = {
        **os.environ,
        "ORDERMESH_RUN_DIR": str(tmp_path / "run"),
        "ORDERMESH_ENVOY_PORT": str(closed_port),
    }
    result = subprocess.run(
        [sys.executable, "-c", REPLICA_DRIVER],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    running, has_log, stopped, still_running = result.stdout.splitlines()
    assert (running, has_log, still_running) == ("True", "True", "False"), result.stdout
    assert "worker-order_validator-2" in stopped


def test_replica_names_come_from_pid_files(tmp_path: Path) -> None:
    for name in ("worker-fulfillment-2", "worker-fulfillment-10", "worker-relay-2", "workers"):
        (tmp_path / f"{name}.pid").write_text("1\n")
    (tmp_path / "worker-Bad-2.pid").write_text("1\n")
    assert stack.replica_names(tmp_path) == [
        "worker-fulfillment-2",
        "worker-fulfillment-10",
        "worker-relay-2",
    ]
