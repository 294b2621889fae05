"""The whole local stack: what runs, in which order, and how each part is checked.

`up` is idempotent: a component already running is left alone. `down` stops, in reverse
order, exactly the processes whose pid files `up` wrote.

Extra replicas of a worker (``ORDERMESH_WORKER_REPLICAS="inventory_manager=2"`` or
``ordermesh up --replicas inventory_manager=2``) run as processes of their own named
``worker-<worker>-<n>`` (n = 2, 3, ...), next to the ``relay`` and ``workers`` processes
that host the first replica of each worker. A count given for a worker is reconciled:
extra replicas above it are stopped. ``down`` and ``status`` find replicas through their
pid files.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack import (
    edge,
    envoy,
    kafka,
    postgres,
    procs,
    prometheus,
    redis,
    secrets,
    tls,
    zipkin,
)
from devstack.paths import LOG_DIR, PID_DIR, REPO_ROOT, RUN_DIR, ensure_run_dirs, log_path
from devstack.ports import HOST, Ports
from services.platform.contexts import CONTEXT_NAMES
from services.platform.db import DATABASE_COMPONENTS
from services.platform.messaging.registry import WORKERS

ENVOY_CONFIG = RUN_DIR / "envoy" / "envoy.yaml"
# Worker processes write what they are waiting for here (messaging.state); `status` reads it.
STATE_DIR = RUN_DIR / "state"
LOCAL_WEBHOOK_NETWORK = "127.0.77.0/24"
WEBHOOK_HOSTS_FILE = RUN_DIR / "webhook-hosts"
REPLICAS_ENV = "ORDERMESH_WORKER_REPLICAS"
MAX_REPLICAS = 8
_REPLICA_NAME = re.compile(r"worker-(?P<worker>[a-z][a-z0-9_]*)-(?P<index>[1-9][0-9]*)")


@dataclass(frozen=True)
class AppProcess:
    """An ordermesh Python process hosting one or more components."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    port: Callable[[Ports], int] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


APP_PROCESSES = (
    # First: the auth service asks it about login attempts, Envoy about every call.
    AppProcess("ratelimit", "ratelimit", port=lambda ports: ports.ratelimit),
    AppProcess("api", "services", port=lambda ports: ports.grpc),
    AppProcess("relay", "workers", ("--components", "relay")),
    AppProcess("workers", "workers", ("--components", "consumers,retention")),
    # Its own process: it calls out to users' endpoints, and can be stopped or scaled alone.
    AppProcess("webhook-sender", "workers", ("--components", "webhook_sender")),
    AppProcess("gateway", "gateway", port=lambda ports: ports.gateway),
)


class ReplicaSpecError(ValueError):
    """A replica request is malformed or names an unknown worker."""


def requested_replicas(
    flags: Sequence[str], environ: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Worker → total replica count from ``ORDERMESH_WORKER_REPLICAS``, then ``--replicas``
    values (each ``worker=count[,worker=count...]``; a flag overrides the environment)."""

    env = os.environ if environ is None else environ
    sources = [(REPLICAS_ENV, env.get(REPLICAS_ENV, ""))] + [("--replicas", f) for f in flags]
    counts: dict[str, int] = {}
    for source, text in sources:
        for item in filter(None, (part.strip() for part in text.split(","))):
            worker, sep, count = (piece.strip() for piece in item.partition("="))
            problem = None
            if not sep or not worker:
                problem = "expected worker=count"
            elif worker not in WORKERS:
                problem = f"unknown worker {worker!r}; known: {', '.join(WORKERS)}"
            elif not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
                problem = f"the count must be a whole number from 1 to {MAX_REPLICAS}"
            if problem is not None:
                raise ReplicaSpecError(f"{source} {item!r}: {problem}")
            counts[worker] = int(count)
    return counts


def replica_name(worker: str, index: int) -> str:
    return f"worker-{worker}-{index}"


def _replica_process(worker: str, index: int) -> AppProcess:
    return AppProcess(replica_name(worker, index), "workers", ("--components", worker))


METRICS_PORT_ENV = "ORDERMESH_METRICS_PORT"
# "off" starts the processes without a metrics port: no /metrics, nothing for Prometheus to
# scrape (bench/pipeline.py's observe phase measures what serving them costs this way).
METRICS_SWITCH_ENV = "ORDERMESH_METRICS"
_REPLICA_METRICS_OFFSET = 20


def metrics_port(name: str, ports: Ports) -> int:
    """The loopback port process ``name`` serves ``/metrics`` on: the app processes in
    their order from ``ports.metrics_base`` (ORDERMESH_METRICS_BASE_PORT), then a block of
    ``MAX_REPLICAS`` per worker for its extra replicas."""
    names = [process.name for process in APP_PROCESSES]
    if name in names:
        return ports.metrics_base + names.index(name)
    match = _REPLICA_NAME.fullmatch(name)
    if match is None or match["worker"] not in WORKERS:
        raise KeyError(f"no ordermesh process named {name!r}")
    block = WORKERS.index(match["worker"]) * MAX_REPLICAS
    return ports.metrics_base + _REPLICA_METRICS_OFFSET + block + int(match["index"]) - 1


def metrics_served(environ: Mapping[str, str]) -> bool:
    """False when ``ORDERMESH_METRICS`` is ``off``; unset, empty or ``on`` serve metrics."""
    switch = environ.get(METRICS_SWITCH_ENV, "").strip().lower()
    if switch not in ("", "on", "off"):
        raise ValueError(
            f"{METRICS_SWITCH_ENV}={environ[METRICS_SWITCH_ENV]!r}: expected on or off"
        )
    return switch != "off"


def process_env(name: str, ports: Ports, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for app process ``name``: with its metrics port, or with none at all when
    metrics are switched off (:func:`metrics_served`)."""
    if metrics_served(env):
        return {**env, METRICS_PORT_ENV: str(metrics_port(name, ports))}
    return {key: value for key, value in env.items() if key != METRICS_PORT_ENV}


def metrics_targets(ports: Ports) -> list[tuple[str, str]]:
    """(process name, host:port) of every process that serves metrics: the app processes
    and the worker replicas that have a pid file. (Envoy serves its own on the admin port,
    at /stats/prometheus.)"""
    names = [process.name for process in APP_PROCESSES] + replica_names()
    return [(name, f"{HOST}:{metrics_port(name, ports)}") for name in names]


def replica_names(directory: Path = PID_DIR, suffix: str = ".pid") -> list[str]:
    """Names of the extra worker replicas with a file in ``directory``, in a stable order."""
    found = []
    for path in directory.glob(f"worker-*{suffix}"):
        match = _REPLICA_NAME.fullmatch(path.name.removesuffix(suffix))
        if match is not None:
            found.append((match["worker"], int(match["index"]), match.group(0)))
    return [name for _, _, name in sorted(found)]


def app_env(ports: Ports) -> dict[str, str]:
    """The environment of every ordermesh process of the local stack: each component connects
    as its own database role, and the secrets come from files in the run dir."""
    env = dict(os.environ)
    env.setdefault("ORDERMESH_ENV", "development")
    env.update(
        {
            f"ORDERMESH_{component.upper()}_DATABASE_URL": postgres.dsn(component)
            for component in DATABASE_COMPONENTS
        }
    )
    env.update(
        {
            "ORDERMESH_KEY_ENCRYPTION_SECRET_FILE": str(secrets.key_encryption_secret_file()),
            "ORDERMESH_DATABASE_URL": postgres.dsn(),
            "ORDERMESH_REDIS_URL": redis.url(),
            "ORDERMESH_KAFKA_BOOTSTRAP": kafka.bootstrap(),
            "ORDERMESH_GRPC_HOST": HOST,
            "ORDERMESH_GRPC_PORT": str(ports.grpc),
            "ORDERMESH_GATEWAY_PORT": str(ports.gateway),
            "ORDERMESH_RATELIMIT_PORT": str(ports.ratelimit),
            "RATELIMIT_SERVICE_ADDR": f"{HOST}:{ports.ratelimit}",
            "ORDERMESH_STATE_DIR": str(STATE_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Webhook receivers for local development (and the e2e tests) listen on 127.0.77.x: the
    # only private targets the local stack accepts. The hosts file maps names for them.
    env.setdefault("ORDERMESH_WEBHOOK_ALLOWED_NETWORKS", LOCAL_WEBHOOK_NETWORK)
    env.setdefault("ORDERMESH_WEBHOOK_HOSTS_FILE", str(WEBHOOK_HOSTS_FILE))
    # Every process sends its spans to the stack's Zipkin (an empty value: no spans).
    env.setdefault("ORDERMESH_ZIPKIN_URL", zipkin.spans_url(ports.zipkin))
    return env


def _say(message: str) -> None:
    print(f"ordermesh: {message}", flush=True)


def _timed(what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    _say(f"{what} ready ({time.monotonic() - started:.1f}s)")


def _python_step(what: str, *args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise procs.NotReadyError(f"{what} failed (exit {result.returncode})")


def up(ports: Ports, replicas: Mapping[str, int] | None = None) -> None:
    """Start everything; ``replicas`` maps a worker to its total replica count."""
    metrics_served(os.environ)  # a malformed switch stops `up` before anything starts
    ensure_run_dirs()
    # Zipkin takes 10-20 s to come up: it starts first and is waited for once the other
    # servers are up, before the processes that send it spans.
    zipkin_started = time.monotonic()
    zipkin.launch()
    for server in (postgres, redis, kafka):
        started = time.monotonic()
        server.ensure_installed()
        server.start()
        _say(f"{server.NAME} ready ({time.monotonic() - started:.1f}s)")
    env = app_env(ports)
    _python_step("database migrations", "-m", "services", "--migrate", env=env)
    _python_step("demo catalog", "-m", "services.inventory.seed", env=env)
    _python_step("kafka topics", "-m", "workers", "--create-topics", env=env)
    _say("migrations applied, catalog seeded, topics created")
    waited = time.monotonic()
    zipkin.wait_ready()
    _say(
        f"zipkin ready ({time.monotonic() - zipkin_started:.1f}s after its start,"
        f" {time.monotonic() - waited:.1f}s waited)"
    )
    for process in APP_PROCESSES:
        _start_app(process, ports, env)
    _scale_workers(replicas or {}, ports, env)
    render_envoy_config(ports, env)
    _timed("envoy", lambda: envoy.start(ENVOY_CONFIG, admin_port=ports.envoy_admin))
    render_prometheus_config(ports)
    _timed("prometheus", prometheus.start)
    _wait_healthy(ports)
    _print_urls(ports)


def render_envoy_config(ports: Ports, env: Mapping[str, str]) -> Path:
    """Envoy's config for the local stack, tracing to where the processes of ``env`` send
    their spans (none when its ``ORDERMESH_ZIPKIN_URL`` is empty)."""
    ENVOY_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    certificates = tls.ensure()
    edge.render(
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        clusters={name: (HOST, ports.grpc) for name in CONTEXT_NAMES},
        descriptor=edge.ENVOY_DESCRIPTOR,
        out=ENVOY_CONFIG,
        gateway=(HOST, ports.gateway),
        ratelimit=(HOST, ports.ratelimit),
        access_log=log_path("envoy-access"),
        tls_listener=edge.TlsListener.from_files(ports.envoy_tls, certificates),
        tracing=edge.Tracing.from_env(env),
    )
    return ENVOY_CONFIG


def render_prometheus_config(ports: Ports, out: Path = prometheus.CONFIG) -> Path:
    """Prometheus's config for what runs now: every process of :func:`metrics_targets`
    (worker replicas included) and Envoy."""
    return prometheus.render(
        metrics_targets(ports), envoy_admin=f"{HOST}:{ports.envoy_admin}", out=out
    )


def start_app(name: str, ports: Ports | None = None) -> None:
    """Start one of the ordermesh processes (api, relay, workers, gateway) the way ``up``
    does, if it is not running; an operator's (and the fault tests') way to bring one back."""
    ports = ports or Ports.from_env()
    [process] = [p for p in APP_PROCESSES if p.name == name]
    _start_app(process, ports, app_env(ports))


def restart_apps(ports: Ports | None = None) -> list[str]:
    """Stop every ordermesh process (worker replicas included) and start them again the way
    ``up`` does, with the environment of now (:func:`app_env`), restart Envoy with its config
    rendered from that environment, then wait for GET /health through Envoy: how a changed
    setting (``ORDERMESH_METRICS``, ``ORDERMESH_ZIPKIN_URL``,
    ...) reaches a running stack. Returns the names started, in start order."""
    ports = ports or Ports.from_env()
    replicas = [_REPLICA_NAME.fullmatch(name) for name in replica_names()]
    processes = [
        *APP_PROCESSES,
        *(_replica_process(match["worker"], int(match["index"])) for match in replicas if match),
    ]
    for process in reversed(processes):
        procs.stop(process.name)
    env = app_env(ports)
    for process in processes:
        _start_app(process, ports, env)
    # Envoy too, so that its tracing follows ORDERMESH_ZIPKIN_URL like the processes'.
    render_envoy_config(ports, env)
    envoy.stop()
    envoy.start(ENVOY_CONFIG, admin_port=ports.envoy_admin)
    _wait_healthy(ports)
    return [process.name for process in processes]


def _start_app(process: AppProcess, ports: Ports, env: dict[str, str]) -> None:
    if procs.is_running(process.name):
        _say(f"{process.name} already running")
        return
    env = process_env(process.name, ports, env)
    procs.start_daemon(process.name, process.argv(), env=env, cwd=REPO_ROOT)
    if process.port is not None:
        port = process.port(ports)
        procs.wait_until(
            lambda: procs.port_in_use(port),
            60,
            f"{process.name} on port {port}",
            name=process.name,
        )
    else:
        time.sleep(0.5)
        if not procs.is_running(process.name):
            raise procs.NotReadyError(
                f"{process.name} exited while starting; see {log_path(process.name)}"
            )
    _say(f"{process.name} started")


def _scale_workers(replicas: Mapping[str, int], ports: Ports, env: dict[str, str]) -> None:
    for name in replica_names():
        match = _REPLICA_NAME.fullmatch(name)
        if match is None or match["worker"] not in replicas:
            continue
        if int(match["index"]) > replicas[match["worker"]]:
            procs.stop(name)
            _say(f"{name} stopped")
    for worker, count in replicas.items():
        for index in range(2, count + 1):
            _start_app(_replica_process(worker, index), ports, env)


def health_status(ports: Ports) -> int | None:
    return _status_code(f"http://{HOST}:{ports.envoy}/health")


def tls_health_status(ports: Ports) -> int | None:
    """GET /health on the TLS listener, trusting only the development CA."""
    ca = tls.CertificateFiles.at(tls.DEFAULT_DIRECTORY).ca_certificate
    if not ca.is_file():
        return None
    context = ssl.create_default_context(cafile=ca)
    return _status_code(f"https://localhost:{ports.envoy_tls}/health", context)


def _status_code(url: str, context: ssl.SSLContext | None = None) -> int | None:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def _wait_healthy(ports: Ports) -> None:
    procs.wait_until(lambda: health_status(ports) == 200, 60, "GET /health through Envoy")


def _print_urls(ports: Ports) -> None:
    base = f"http://localhost:{ports.envoy}"
    ca = _shown(tls.CertificateFiles.at(tls.DEFAULT_DIRECTORY).ca_certificate)
    print(
        f"""
ordermesh is up.
  REST + gRPC + grpc-web  {base}   (one door: Envoy)
  the same over TLS 1.3   https://localhost:{ports.envoy_tls}   (CA: {ca})
  live order page         {base}/
  WebSocket               ws://localhost:{ports.envoy}/ws/orders/{{user_id}}
  health                  {base}/health
  API docs (OpenAPI)      {base}/docs
  gRPC                    grpcurl -plaintext localhost:{ports.envoy} list
  gRPC over TLS           grpcurl -cacert {ca} localhost:{ports.envoy_tls} list
  Envoy admin             http://127.0.0.1:{ports.envoy_admin}
  Prometheus (alerts)     {prometheus.url(ports.prometheus)}/alerts
  Zipkin (traces)         {zipkin.ui_url(ports.zipkin)}   (in memory)
  metrics                 .venv/bin/ordermesh status (each process's /metrics URL)
  logs                    .venv/bin/ordermesh logs [name] [-f]
  stop                    make down
""",
        flush=True,
    )


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (as the README writes it)."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def down() -> None:
    stopped = []
    prometheus.stop()
    stopped.append(prometheus.NAME)
    envoy.stop()
    stopped.append(envoy.NAME)
    for name in reversed(replica_names()):
        if procs.stop(name):
            stopped.append(name)
    for process in reversed(APP_PROCESSES):
        procs.stop(process.name)
        stopped.append(process.name)
    kafka.stop()
    redis.stop()
    postgres.stop()
    zipkin.stop()
    _say("stopped " + ", ".join([*stopped, kafka.NAME, redis.NAME, postgres.NAME, zipkin.NAME]))


COMPONENT_NAMES = (
    postgres.NAME,
    redis.NAME,
    kafka.NAME,
    *(process.name for process in APP_PROCESSES),
    envoy.NAME,
    prometheus.NAME,
    zipkin.NAME,
)


def _with_replicas(names: Sequence[str], replicas: Sequence[str]) -> list[str]:
    """``names`` with the replica names right after the ``workers`` process."""
    at = names.index("workers") + 1 if "workers" in names else len(names)
    return [*names[:at], *replicas, *names[at:]]


def log_names() -> list[str]:
    """Every name ``ordermesh logs`` knows: the components and any replica with a log."""
    return _with_replicas(COMPONENT_NAMES, replica_names(LOG_DIR, ".log"))


def status(ports: Ports) -> list[tuple[str, str]]:
    rows = []
    for name in _with_replicas(COMPONENT_NAMES, replica_names()):
        running = procs.is_running(name)
        pid = procs.read_pid(name) if running else None
        state = f"running (pid {pid})" if running else "stopped"
        if name == prometheus.NAME and running:
            state += f"  {prometheus.url(ports.prometheus)}"
        if name == zipkin.NAME:
            health = zipkin.health(ports.zipkin) if running else None
            state = zipkin.status_line(pid, ports.zipkin, health)
        rows.append((name, state))
    code = health_status(ports)
    rows.append(("GET /health", "no answer" if code is None else str(code)))
    tls_code = tls_health_status(ports)
    rows.append(("GET /health (TLS)", "no answer" if tls_code is None else str(tls_code)))
    rows.append(("gateway /healthz", gateway_health(ports)))
    return rows


def metrics_lines(ports: Ports) -> list[str]:
    """Where each process serves its Prometheus metrics (loopback only)."""
    targets = metrics_targets(ports)
    width = max(len(name) for name, _ in targets)
    lines = ["metrics (Prometheus text, loopback):"]
    for name, address in targets:
        state = "" if procs.is_running(name) else "  (stopped)"
        lines.append(f"  {name:<{width}}  http://{address}/metrics{state}")
    admin = f"http://{HOST}:{ports.envoy_admin}/stats/prometheus"
    lines.append(f"  {envoy.NAME:<{width}}  {admin}")
    return lines


def rate_limit_lines() -> list[str]:
    """The rate-limit service's decisions, counted in Redis by route, tier and outcome."""
    import redis as redis_client

    from ratelimit.window import DECISIONS_KEY

    try:
        client = redis_client.Redis.from_url(redis.url(), socket_timeout=2, decode_responses=True)
        counted: dict[str, str] = client.hgetall(DECISIONS_KEY)  # type: ignore[assignment]
    except (redis_client.RedisError, OSError) as error:
        return [f"rate limits: no answer from redis ({error})"]
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for raw_field, raw_count in counted.items():
        route, tier, outcome = raw_field.rsplit("|", 2)
        rows.setdefault((route, tier), {})[outcome] = int(raw_count)
    if not rows:
        return ["rate limits: no decisions yet"]
    lines = ["rate limits (decisions; route, tier: allowed / limited):"]
    for (route, tier), outcomes in sorted(rows.items()):
        allowed, limited = outcomes.get("allowed", 0), outcomes.get("limited", 0)
        lines.append(f"  {route:<22} {tier:<11} {allowed:>9} / {limited}")
    return lines


def webhook_lines() -> list[str]:
    """Webhook delivery at a glance: what waits to be sent (and how late the most overdue
    is), what is parked for replay, and the endpoints disabled after repeated failures."""
    import psycopg

    try:
        with psycopg.connect(postgres.dsn(), connect_timeout=2, autocommit=True) as conn:
            counts = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'pending'),"
                " count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= now()),"
                " extract(epoch FROM now() - min(next_attempt_at)"
                "   FILTER (WHERE state = 'pending' AND next_attempt_at <= now())),"
                " count(*) FILTER (WHERE state = 'parked'),"
                " count(*) FILTER (WHERE state = 'failed'"
                "   AND finished_at > now() - interval '1 hour')"
                " FROM webhook.deliveries"
            ).fetchone()
            disabled = conn.execute(
                "SELECT webhook_id, url, disabled_reason FROM webhook.webhooks"
                " WHERE NOT active ORDER BY disabled_at DESC LIMIT 5"
            ).fetchall()
            disabled_count = conn.execute(
                "SELECT count(*) FROM webhook.webhooks WHERE NOT active"
            ).fetchone()
    except psycopg.Error as error:
        return [f"webhooks: no answer from postgres ({str(error).strip()})"]
    assert counts is not None and disabled_count is not None
    pending, due, overdue, parked, failed = counts
    late = "" if overdue is None else f", the most overdue {float(overdue):.1f}s late"
    lines = [
        f"webhook deliveries: {pending} pending ({due} due now{late}), {parked} parked,"
        f" {failed} failed in the last hour; {disabled_count[0]} endpoint(s) disabled"
    ]
    lines.extend(f"  disabled {hook} {url}: {reason}" for hook, url, reason in disabled)
    if parked:
        lines.append(
            "  parked deliveries wait for their owner: POST /api/v1/webhooks/{id}/deliveries/replay"
        )
    return lines


def gateway_health(ports: Ports) -> str:
    """The bridge's counters from its own /healthz, on one line."""
    url = f"http://{HOST}:{ports.gateway}/healthz"
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            url, timeout=2
        ) as response:
            counters = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (OSError, ValueError):
        return "no answer"
    return (
        f"{counters.get('status')}: {counters.get('sockets')} sockets,"
        f" {counters.get('watched_users')} users watched,"
        f" {counters.get('subscriptions_streaming')} subscriptions streaming,"
        f" redis {'up' if counters.get('redis_available') else 'DOWN (per-process limit)'}"
    )


def pipeline_lines() -> list[str]:
    """Consumer-group lag, outbox backlog and what workers wait for, for ``status`` (see
    :mod:`services.platform.messaging.inspect`)."""
    from services.platform.messaging import inspect
    from services.platform.messaging.state import read_states

    report = inspect.pipeline_report(
        kafka.bootstrap() if procs.is_running(kafka.NAME) else None,
        postgres.dsn() if procs.is_running(postgres.NAME) else None,
    )
    return inspect.report_lines(report) + inspect.waiting_lines(read_states(STATE_DIR))


def log_file(name: str) -> Path:
    return log_path(name)
