"""A Zipkin server for the local stack's traces: the self-contained ``exec`` jar of
``io.zipkin:zipkin-server`` from Maven Central, resolved once with ``devstack/zipkin/pom.xml``
into ``CACHE_DIR/zipkin-<version>/jar`` and run on the machine's Java 17, listening on
127.0.0.1 only. Spans are kept in memory (at most ``MAX_SPANS``, oldest traces dropped
first): a restart forgets them.

It takes 10-20 s to report UP, so ``ordermesh up`` launches it first (:func:`launch`) and
waits for it (:func:`wait_ready`) once the other servers are up.

Binding to loopback: Zipkin 3 serves through Armeria's Spring Boot starter, whose listeners
are the list ``armeria.ports`` (``port``, ``ip``, ``protocols``); ``QUERY_PORT`` only sets
the port of its default entry, which binds every address. Spring Boot replaces a list as a
whole when a later property source sets any element of it, so all three fields of
``armeria.ports[0]`` are given on the command line; ``ss -ltn`` then shows
``[::ffff:127.0.0.1]:<port>`` (a dual-stack socket bound to 127.0.0.1 alone), and a
connection to 127.0.0.2 is refused.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from devstack import maven, procs
from devstack.paths import CACHE_DIR, RUN_DIR, ensure_run_dirs, log_path
from devstack.ports import HOST, current

NAME = "zipkin"
VERSION = "3.5.1"
POM = Path(__file__).resolve().parent / "zipkin" / "pom.xml"
HOME = CACHE_DIR / f"zipkin-{VERSION}"
JAR_DIR = HOME / "jar"
JAR = JAR_DIR / f"zipkin-server-{VERSION}-exec.jar"
ZIPKIN_ROOT = RUN_DIR / "zipkin"
# About 2.3 KB of live heap each (tags included; measured after bench/pipeline.py filled the
# store at 2,000 spans/s): 100,000 spans are 230 MB of the 768 MB heap, leaving room for the
# young generation. 200,000 spans in 256 MB ran out of memory under that bench.
MAX_SPANS = 100_000
SPANS_PATH = "/api/v2/spans"
UI_PATH = "/zipkin/"

_MARKER = HOME / "jar.complete"
_JVM = (
    "-Xms64m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    # Full tiered compilation: the store takes thousands of spans a second under load, on the
    # cores the pipeline uses (its start-up is hidden behind the other servers').
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ensure_installed() -> Path:
    """Resolve the server's jar into the cache unless already there; return its path."""
    maven.java()
    maven.resolve(
        "Zipkin",
        pom=POM,
        version=VERSION,
        properties={"zipkin.version": VERSION},
        target=JAR_DIR,
        marker=_MARKER,
        required=[JAR.name],
        install_log=log_path("zipkin-install"),
    )
    return JAR


def command(port: int, *, java: Path, jar: Path = JAR) -> list[str]:
    """The server's command line: a small heap, listening on ``HOST:port`` only, and quiet
    (warnings, plus Armeria's one line saying where it serves)."""
    return [
        str(java),
        *_JVM,
        "-jar",
        str(jar),
        f"--armeria.ports[0].port={port}",
        f"--armeria.ports[0].ip={HOST}",
        "--armeria.ports[0].protocols[0]=http",
        "--spring.main.banner-mode=off",
        "--logging.level.root=WARN",
        "--logging.level.com.linecorp.armeria.server.Server=INFO",
        # Warns once at start that a meter filter came late: not ours to fix.
        "--logging.level.io.micrometer=ERROR",
    ]


def server_env(environ: Mapping[str, str], max_spans: int = MAX_SPANS) -> dict[str, str]:
    """``environ`` with in-memory storage of at most ``max_spans`` spans, whatever the
    caller's shell says about Zipkin's storage or collectors."""
    env = {key: value for key, value in environ.items() if not _zipkin_setting(key)}
    env.update(STORAGE_TYPE="mem", MEM_MAX_SPANS=str(max_spans))
    return env


def _zipkin_setting(name: str) -> bool:
    """Environment variables Zipkin reads that would point it at other storage, collectors
    or ports (a developer's shell may have them for another Zipkin)."""
    prefixes = ("STORAGE_", "MEM_", "COLLECTOR_", "QUERY_", "SELF_TRACING_", "ARMERIA_")
    return name.startswith(prefixes)


def url(port: int | None = None) -> str:
    return f"http://{HOST}:{current().zipkin if port is None else port}"


def spans_url(port: int | None = None) -> str:
    """Where spans are sent: Zipkin's JSON v2 collector endpoint."""
    return url(port) + SPANS_PATH


def ui_url(port: int | None = None) -> str:
    return url(port) + UI_PATH


def health(port: int | None = None, timeout: float = 1.0) -> str | None:
    """The status ``GET /health`` reports (``UP``), or None if nothing answers."""
    try:
        with _NO_PROXY.open(f"{url(port)}/health", timeout=timeout) as response:
            reply = json.loads(response.read())
    except (OSError, ValueError):
        return None
    status = reply.get("status") if isinstance(reply, dict) else None
    return str(status) if status is not None else None


def is_ready(port: int | None = None) -> bool:
    return health(port) == "UP"


def launch() -> None:
    """Start the server without waiting for it; a running one is left alone."""
    jar = ensure_installed()
    port = current().zipkin
    if procs.is_running(NAME):
        return
    procs.check_port_free(NAME, port, "ORDERMESH_ZIPKIN_PORT")
    ensure_run_dirs()
    ZIPKIN_ROOT.mkdir(parents=True, exist_ok=True)
    argv = command(port, java=maven.java(), jar=jar)
    procs.start_daemon(NAME, argv, env=server_env(os.environ), cwd=ZIPKIN_ROOT)


def wait_ready(timeout: float = 90.0) -> None:
    """Wait until ``GET /health`` reports UP (fails at once if the server exited)."""
    port = current().zipkin
    procs.wait_until(
        lambda: is_ready(port), timeout, f"zipkin on {url(port)}", name=NAME, interval=0.25
    )


def start(timeout: float = 90.0) -> None:
    """Start the server (unless running) and wait until it is UP."""
    launch()
    wait_ready(timeout)


def stop(timeout: float = 20.0) -> bool:
    """SIGTERM (Armeria shuts down gracefully in a few seconds), SIGKILL after ``timeout``."""
    return procs.stop(NAME, timeout)


def status_line(pid: int | None, port: int, state: str | None) -> str:
    """What ``ordermesh status`` says about Zipkin: its pid (None: not running), what its
    /health reported (None: no answer) and where its UI is."""
    if pid is None:
        return "stopped"
    health_text = "starting (no answer on /health)" if state is None else state.lower()
    return f"running (pid {pid})  {health_text}  {ui_url(port)}"
