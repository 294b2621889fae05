"""A single-node Apache Kafka broker (KRaft combined mode) in ``.run/kafka``.

The jars are resolved once from Maven Central with ``devstack/kafka/pom.xml``
into ``CACHE_DIR/kafka-<version>/libs`` and run on the machine's Java 17.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import uuid
from pathlib import Path

from devstack import maven, procs
from devstack.paths import CACHE_DIR, RUN_DIR, ensure_run_dirs, log_path
from devstack.ports import HOST, current

NAME = "kafka"
VERSION = "4.1.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
HOME = CACHE_DIR / f"kafka-{VERSION}"
LIBS_DIR = HOME / "libs"
KAFKA_ROOT = RUN_DIR / "kafka"
DATA_DIR = KAFKA_ROOT / "data"
CONFIG = KAFKA_ROOT / "server.properties"
CLUSTER_ID_FILE = KAFKA_ROOT / "cluster.id"
LOG4J_SERVER = KAFKA_ROOT / "log4j2.properties"
LOG4J_TOOLS = KAFKA_ROOT / "tools-log4j2.properties"

_MARKER = HOME / "libs.complete"
_REQUIRED_JARS = (
    f"kafka_2.13-{VERSION}.jar",
    f"kafka-server-{VERSION}.jar",
    f"kafka-raft-{VERSION}.jar",
    f"kafka-metadata-{VERSION}.jar",
    f"kafka-storage-{VERSION}.jar",
    f"kafka-tools-{VERSION}.jar",
    f"kafka-clients-{VERSION}.jar",
)
_SERVER_JVM = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",
)
_TOOL_JVM = (
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
_METADATA_API_KEY = 3
_METADATA_VERSION = 4


def ensure_installed() -> Path:
    """Resolve the broker's jars into the cache unless already complete; return libs dir."""
    maven.java()
    return maven.resolve(
        "Kafka",
        pom=POM,
        version=VERSION,
        properties={"kafka.version": VERSION},
        target=LIBS_DIR,
        marker=_MARKER,
        required=_REQUIRED_JARS,
        install_log=log_path("kafka-install"),
    )


def _classpath() -> str:
    return str(LIBS_DIR / "*")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _log4j(target: str, root_level: str) -> str:
    return "\n".join(
        [
            "status = error",
            "appender.out.type = Console",
            "appender.out.name = OUT",
            f"appender.out.target = {target}",
            "appender.out.layout.type = PatternLayout",
            "appender.out.layout.pattern = [%d] %p %m (%c)%n",
            f"rootLogger.level = {root_level}",
            "rootLogger.appenderRef.out.ref = OUT",
            "logger.started.name = kafka.server.KafkaRaftServer",
            "logger.started.level = INFO",
            "",
        ]
    )


def _server_properties(port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(DATA_DIR),
        "num.partitions": "3",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "3",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _cluster_id() -> str:
    try:
        existing = CLUSTER_ID_FILE.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            break
    CLUSTER_ID_FILE.write_text(candidate + "\n")
    return candidate


def _format_storage() -> None:
    if (DATA_DIR / "meta.properties").exists():
        return
    result = tool(
        STORAGE_TOOL,
        "format",
        "-t",
        _cluster_id(),
        "-c",
        str(CONFIG),
        "--standalone",
        timeout=120.0,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}".rstrip()
        )


def tool(
    main_class: str,
    *args: str,
    input: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run a Kafka command-line class (e.g. ``TOPIC_COMMAND``) on the cached jars."""
    ensure_installed()
    KAFKA_ROOT.mkdir(parents=True, exist_ok=True)
    _write_if_changed(LOG4J_TOOLS, _log4j("SYSTEM_ERR", "WARN"))
    argv = [
        str(maven.java()),
        *_TOOL_JVM,
        f"-Dlog4j2.configurationFile={LOG4J_TOOLS}",
        "-cp",
        _classpath(),
        main_class,
        *args,
    ]
    return subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )


def _encode_str(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks += chunk
    return bytes(chunks)


def broker_count(port: int | None = None, timeout: float = 2.0) -> int:
    """Number of live brokers in a Metadata (v4) response from the broker at ``port``."""
    port = current().kafka if port is None else port
    correlation_id = 7
    header = struct.pack(">hhi", _METADATA_API_KEY, _METADATA_VERSION, correlation_id)
    body = struct.pack(">ib", 0, 0)
    request = header + _encode_str("ordermesh-devstack") + body
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    got_id, _throttle, brokers = struct.unpack_from(">iii", response, 0)
    if got_id != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got_id}")
    return int(brokers)


def is_ready(port: int | None = None) -> bool:
    try:
        return broker_count(port) > 0
    except (OSError, struct.error):
        return False


def start(timeout: float = 120.0) -> None:
    """Resolve jars, format storage once and start the broker; a running one is left alone."""
    ensure_installed()
    ports = current()
    if not procs.is_running(NAME):
        procs.check_port_free(NAME, ports.kafka, "ORDERMESH_KAFKA_PORT")
        procs.check_port_free(NAME, ports.kafka_controller, "ORDERMESH_KAFKA_CONTROLLER_PORT")
        ensure_run_dirs()
        KAFKA_ROOT.mkdir(parents=True, exist_ok=True)
        _write_if_changed(CONFIG, _server_properties(ports.kafka, ports.kafka_controller))
        level = os.environ.get("ORDERMESH_KAFKA_LOG_LEVEL", "WARN")
        _write_if_changed(LOG4J_SERVER, _log4j("SYSTEM_OUT", level))
        _format_storage()
        argv = [
            str(maven.java()),
            *_SERVER_JVM,
            f"-Dlog4j2.configurationFile={LOG4J_SERVER}",
            f"-Dkafka.logs.dir={KAFKA_ROOT / 'logs'}",
            "-cp",
            _classpath(),
            MAIN_CLASS,
            str(CONFIG),
        ]
        procs.start_daemon(NAME, argv, cwd=KAFKA_ROOT)
    procs.wait_until(
        lambda: is_ready(ports.kafka),
        timeout,
        f"kafka broker on {HOST}:{ports.kafka}",
        name=NAME,
        interval=0.25,
    )


def stop(timeout: float = 30.0) -> bool:
    """Controlled shutdown with SIGTERM, SIGKILL after ``timeout``."""
    return procs.stop(NAME, timeout)


def bootstrap() -> str:
    return f"{HOST}:{current().kafka}"
