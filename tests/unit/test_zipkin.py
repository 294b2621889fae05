"""The local stack's Zipkin as devstack builds it: the command line (loopback only, a small
heap), the environment (in-memory storage, bounded), where the jar lives, what ``status``
says, and that every app process is told where to send spans. A real server starts in
tests/integration/test_zipkin.py."""

from pathlib import Path

import pytest

from devstack import edge, postgres, procs, secrets, stack, zipkin
from devstack.paths import CACHE_DIR
from devstack.ports import Ports

PORTS = Ports(zipkin=16411)
JAVA = Path("/usr/bin/java")


def _options(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--"))


def test_the_server_listens_on_loopback_only_on_its_port_over_http() -> None:
    options = _options(zipkin.command(16411, java=JAVA))

    assert options["armeria.ports[0].port"] == "16411"
    assert options["armeria.ports[0].ip"] == "127.0.0.1"
    assert options["armeria.ports[0].protocols[0]"] == "http"
    # Every field of the list's one entry is given: a partial entry would replace the whole
    # list (Spring Boot's rule) and lose the others.
    assert not [key for key in options if key.startswith("armeria.ports[1]")]


def test_the_jvm_runs_the_cached_exec_jar_with_a_small_heap() -> None:
    argv = zipkin.command(16411, java=JAVA)

    assert argv[0] == str(JAVA)
    assert "-Xmx768m" in argv
    assert argv[argv.index("-jar") + 1] == str(zipkin.JAR)
    assert zipkin.JAR == CACHE_DIR / "zipkin-3.5.1" / "jar" / "zipkin-server-3.5.1-exec.jar"
    assert zipkin.JAR.is_relative_to(CACHE_DIR)


def test_the_log_says_little() -> None:
    options = _options(zipkin.command(16411, java=JAVA))

    assert options["logging.level.root"] == "WARN"
    assert options["spring.main.banner-mode"] == "off"


def test_storage_is_in_memory_and_bounded_whatever_the_shell_says() -> None:
    shell = {
        "PATH": "/usr/bin",
        "STORAGE_TYPE": "elasticsearch",
        "ES_HOSTS": "http://127.0.0.1:9200",
        "QUERY_PORT": "9411",
        "COLLECTOR_KAFKA_ENABLED": "true",
    }

    env = zipkin.server_env(shell)

    assert env["STORAGE_TYPE"] == "mem"
    assert env["MEM_MAX_SPANS"] == str(zipkin.MAX_SPANS)
    assert "QUERY_PORT" not in env
    assert "COLLECTOR_KAFKA_ENABLED" not in env
    assert env["PATH"] == "/usr/bin"


def test_urls_are_on_loopback() -> None:
    assert zipkin.spans_url(16411) == "http://127.0.0.1:16411/api/v2/spans"
    assert zipkin.ui_url(16411) == "http://127.0.0.1:16411/zipkin/"


@pytest.mark.parametrize(
    ("pid", "health", "line"),
    [
        (None, None, "stopped"),
        (42, "UP", "running (pid 42)  up  http://127.0.0.1:16411/zipkin/"),
        (42, "DOWN", "running (pid 42)  down  http://127.0.0.1:16411/zipkin/"),
        (
            42,
            None,
            "running (pid 42)  starting (no answer on /health)  http://127.0.0.1:16411/zipkin/",
        ),
    ],
)
def test_the_status_line(pid: int | None, health: str | None, line: str) -> None:
    assert zipkin.status_line(pid, 16411, health) == line


def test_status_lists_zipkin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "health_status", lambda ports: None)
    monkeypatch.setattr(stack, "tls_health_status", lambda ports: None)
    monkeypatch.setattr(stack, "gateway_health", lambda ports: "no answer")
    monkeypatch.setattr(zipkin, "health", lambda port: None)
    monkeypatch.setattr(procs, "read_pid", lambda name: None)
    monkeypatch.setattr(procs, "is_running", lambda name: False)

    rows = dict(stack.status(PORTS))

    assert rows["zipkin"] == "stopped"
    assert "zipkin" in stack.log_names()


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``app_env`` without writing the run dir's secrets."""
    monkeypatch.setattr(postgres, "dsn", lambda component=None: "postgresql://unit")
    monkeypatch.setattr(secrets, "key_encryption_secret_file", lambda: tmp_path / "key")


def test_every_app_process_sends_spans_to_the_stacks_zipkin(
    monkeypatch: pytest.MonkeyPatch, no_secrets: None
) -> None:
    monkeypatch.delenv("ORDERMESH_ZIPKIN_URL", raising=False)

    env = stack.app_env(PORTS)

    assert env["ORDERMESH_ZIPKIN_URL"] == "http://127.0.0.1:16411/api/v2/spans"


def test_a_zipkin_url_of_the_callers_environment_wins(
    monkeypatch: pytest.MonkeyPatch, no_secrets: None
) -> None:
    monkeypatch.setenv("ORDERMESH_ZIPKIN_URL", "")

    assert stack.app_env(PORTS)["ORDERMESH_ZIPKIN_URL"] == ""


def test_envoy_traces_to_where_the_processes_send_their_spans(
    monkeypatch: pytest.MonkeyPatch, no_secrets: None
) -> None:
    monkeypatch.delenv("ORDERMESH_ZIPKIN_URL", raising=False)
    monkeypatch.setenv("ORDERMESH_TRACE_SAMPLE_RATIO", "0.5")

    tracing = edge.Tracing.from_env(stack.app_env(PORTS))

    assert tracing == edge.Tracing("http://127.0.0.1:16411/api/v2/spans", 0.5)
    assert tracing.collector == ("127.0.0.1", 16411)
