"""Edge bench: one cheap call four ways side by side, the rate-limit check alone, and Envoy's
reference rate-limit service (envoyproxy/ratelimit) beside ours on the same Redis.

    python bench/edge.py [--concurrency 16] [--duration 8] [--quick]

Needs the dev stack (`make up`): the API process and Redis. Everything else it measures it
starts itself, on free loopback ports, and stops at the end:

- a rate-limit service of its own (`python -m ratelimit`, this checkout) whose overrides give
  the enterprise tier very high limits instead of none, so each check of the bench user runs
  the real two counters (route and overall, as for any tier) and never refuses;
- two Envoys rendered from envoy/envoy.yaml.tmpl exactly as `ordermesh up` renders the
  stack's (devstack.edge.render_text): "edge", pointing at that rate-limit service, and
  "edge without rate limit", the same config with the two ratelimit filters removed. The
  stack's own Envoy always calls its rate-limit service, and its anonymous limit (200/min per
  address) would refuse a bench after a second;
- envoyproxy/ratelimit (`service_cmd`, fixed window), built once with `go install` at a
  pinned version into ~/.cache/ordermesh/go-bin (none of its code is in this repository),
  configured with a YAML file in a temporary runtime directory and pointed at the stack's Redis.

Phases, one after the other at the same --concurrency (workers = connections), each with an
untimed warm-up: InventoryService/GetProduct of a demo product (public; a cached catalog read)
as (a) gRPC to the API directly, (b) gRPC through the Envoy without rate limit, (c) REST
(GET /api/v1/products/prod-001) through it, (c+jwt) REST with an enterprise user's bearer
token through it (jwt_authn verifies it and sets the claim headers), and (d) the same through
the Envoy with rate limiting: (d) - (c+jwt) is the rate-limit call, (c+jwt) - (c) the token.
gRPC is driven by ghz, REST by hey (github.com/rakyll/hey, HTTP/1.1 keep-alive). Then
ShouldRateLimit straight to each rate-limit service with ghz, at concurrency 1 (the check's
own latency) and at --concurrency (its throughput): ours with the descriptor Envoy sends in
(d), the reference with two descriptors (route per user, user), the same two counters.

Meanwhile, accuracy: for a 100/minute limit (ours: the read route's limit per client address,
from ratelimit/limits.yaml; the reference: a descriptor configured so), a client bursts 100
calls just before a minute boundary and 100 just after, then probes every 100 ms around the
moment the first burst leaves a sliding window. The figure is the most calls admitted in any
60 s span. --quick runs everything briefly, and the accuracy probe with 20 per second.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # gRPC reads this when it is imported. The accuracy probe keeps channels open while ghz
    # and hey are started, and gRPC's fork handlers would log a line for each start; the
    # children exec at once and need none.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop
import yaml
from google.protobuf import descriptor_pb2, duration_pb2, wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc
from ordermesh.vendor.envoy_rls.v3 import rls_pb2, rls_pb2_grpc
from psycopg import AsyncConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from bench.read_path import (
    DESCRIPTOR_SET,
    Ghz,
    GhzReport,
    ghz_executable,
    machine_busy_jiffies,
    process_cpu_seconds,
)
from devstack import edge, envoy, postgres, procs
from devstack.gotools import GoTool, GoToolError
from devstack.gotools import executable as go_executable
from devstack.paths import CACHE_DIR, REPO_ROOT
from devstack.ports import HOST, Ports
from devstack.stack import app_env

HEY_MODULE = "github.com/rakyll/hey"
HEY_VERSION = "v0.1.5"
# envoyproxy/ratelimit tags no releases: this is its main branch of 2026-01-22.
REFERENCE_MODULE = "github.com/envoyproxy/ratelimit/src/service_cmd"
REFERENCE_VERSION = "v1.4.1-0.20260122083618-3fb702589d36"
REFERENCE_BIN_DIR = CACHE_DIR / "go-bin" / f"envoy-ratelimit-{REFERENCE_VERSION}"
HEY = GoTool("hey", HEY_MODULE, HEY_VERSION)
REFERENCE = GoTool("service_cmd", REFERENCE_MODULE, REFERENCE_VERSION)
TOOLS_BIN_DIR = CACHE_DIR / "bin"

PRODUCT_ID = "prod-001"
GRPC_CALL = "ordermesh.inventory.v1.InventoryService/GetProduct"
REST_PATH = f"/api/v1/products/{PRODUCT_ID}"
CHECK_CALL = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
OURS_DOMAIN = "ordermesh"
REFERENCE_DOMAIN = "ordermesh-bench"
# Limits no bench reaches: the check runs in full and admits every call.
HIGH_LIMIT = 1_000_000_000
HIGH_SCALE = 1_000_000
PASSWORD = "bench edge password"

# Goals of issue 12.
GOAL_THROUGHPUT_SHARE = 0.5
GOAL_CHECK_P99_MS = 1.0
GOAL_ACCURACY = 1.05

OK = rls_pb2.RateLimitResponse.OK


class BenchError(RuntimeError):
    """The stack is not in a state the bench can measure."""


def verdict(ok: bool) -> str:
    return "HIT" if ok else "MISS"


# ---------------------------------------------------------------- accuracy, pure


@dataclass(frozen=True)
class AccuracyPlan:
    limit: int
    window: float

    def schedule(self, boundary: float) -> list[tuple[float, int]]:
        """When to send how many calls around the fixed-window ``boundary`` (a multiple of the
        window in Unix time, where a fixed window resets): ``limit`` calls 5% of a window
        before it and ``limit`` just after, then one call every 1/600 of a window (at least
        10 ms) from shortly before the first burst leaves a sliding window until the next
        boundary. A fixed window admits both bursts; an exact sliding window admits neither
        the second burst nor any probe before the first burst's calls leave it."""
        first = boundary - 0.05 * self.window
        sends = [(first, self.limit), (boundary + self.window / 60, self.limit)]
        every = max(self.window / 600, 0.01)
        probe = first + 0.975 * self.window
        while probe < boundary + self.window:
            sends.append((probe, 1))
            probe += every
        return sends

    def next_boundary(self, now: float, lead: float) -> float:
        """The first boundary whose schedule starts at least ``lead`` seconds from ``now``."""
        boundary = math.ceil((now + lead + 0.05 * self.window) / self.window) * self.window
        return float(boundary)


def most_in_any_span(times: Sequence[float], span: float) -> int:
    """The most ``times`` in any half-open interval ``[t, t + span)``."""
    ordered = sorted(times)
    most = 0
    start = 0
    for end, time_ in enumerate(ordered):
        while ordered[start] <= time_ - span:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass(frozen=True)
class Attempt:
    sent: float
    answered: float
    admitted: bool
    error: str | None = None

    @property
    def at(self) -> float:
        """When the service decided, as well as the client can tell: the middle of the call."""
        return (self.sent + self.answered) / 2


@dataclass(frozen=True)
class Accuracy:
    name: str
    plan: AccuracyPlan
    attempts: tuple[Attempt, ...]

    @property
    def admitted(self) -> int:
        return sum(a.admitted for a in self.attempts)

    @property
    def most(self) -> int:
        return most_in_any_span([a.at for a in self.attempts if a.admitted], self.plan.window)

    def line(self) -> str:
        errors = Counter(a.error for a in self.attempts if a.error)
        slowest = max((a.answered - a.sent for a in self.attempts), default=0.0) * 1000
        note = f"  errors: {dict(errors)}" if errors else ""
        return (
            f"admitted {self.admitted} of {len(self.attempts)};"
            f" most in any {self.plan.window:g} s span: {self.most}"
            f" = {self.most / self.plan.limit:.2f}x the limit (slowest call {slowest:.1f} ms){note}"
        )


# ---------------------------------------------------------------- tools


def go_installed(tool: GoTool, directory: Path, *, from_path: bool = True) -> str:
    try:
        return go_executable(tool, directory, from_path=from_path)
    except GoToolError as error:
        raise BenchError(str(error)) from error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def rls_protoset(directory: Path) -> Path:
    """The rate-limit API (ordermesh's wire-compatible copy) and its imports, for ghz."""
    files = (duration_pb2.DESCRIPTOR, wrappers_pb2.DESCRIPTOR, rls_pb2.DESCRIPTOR)
    protoset = descriptor_pb2.FileDescriptorSet(
        file=[descriptor_pb2.FileDescriptorProto.FromString(f.serialized_pb) for f in files]
    )
    path = directory / "rls.protoset"
    path.write_bytes(protoset.SerializeToString())
    return path


# ---------------------------------------------------------------- processes the bench starts


@dataclass
class Child:
    """A process this bench started; its output goes to ``log``."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        directory: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log = directory / f"{re.sub(r'[^A-Za-z0-9.-]+', '-', name)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def failed(self, why: str) -> BenchError:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return BenchError(f"{self.name}: {why}\n{tail}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def wait_for(
    child: Child, ready: Callable[[], Awaitable[bool]], what: str, within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if child.process.returncode is not None:
            raise child.failed(f"exited {child.process.returncode} before {what}")
        with contextlib.suppress(grpc.RpcError, OSError):
            if await ready():
                return
        await asyncio.sleep(0.2)
    raise child.failed(f"no {what} within {within:g} s")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a GET, without any proxy."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with _NO_PROXY.open(request, timeout=5) as response:
            return int(response.status), _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), _lower(error.headers.items()), error.read()


def _lower(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {key.lower(): value for key, value in items}


async def start_our_rls(directory: Path, overrides: Mapping[str, Any]) -> tuple[Child, int]:
    port = free_port()
    env = app_env(Ports.from_env())
    env.update(
        {
            "ORDERMESH_RATELIMIT_HOST": HOST,
            "ORDERMESH_RATELIMIT_PORT": str(port),
            "ORDERMESH_RATELIMIT_OVERRIDES": json.dumps(overrides),
            "ORDERMESH_LOG_LEVEL": "WARNING",
        }
    )
    child = await Child.start(
        "rate-limit service (ours)",
        [sys.executable, "-m", "ratelimit"],
        directory=directory,
        env=env,
        cwd=REPO_ROOT,
    )

    async def serving() -> bool:
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    await wait_for(child, serving, "gRPC health SERVING")
    return child, port


async def start_reference_rls(
    executable: str, directory: Path, plan: AccuracyPlan, redis_port: int
) -> tuple[Child, int]:
    """envoyproxy/ratelimit with the accuracy limit and two high limits for the load."""
    unit = {1.0: "second", 60.0: "minute"}[plan.window]
    config = {
        "domain": REFERENCE_DOMAIN,
        "descriptors": [
            {"key": "accuracy", "rate_limit": {"unit": unit, "requests_per_unit": plan.limit}},
            {
                "key": "route_user",
                "rate_limit": {"unit": "minute", "requests_per_unit": HIGH_LIMIT},
            },
            {"key": "user", "rate_limit": {"unit": "minute", "requests_per_unit": HIGH_LIMIT}},
        ],
    }
    runtime = directory / "reference-runtime"
    (runtime / "ratelimit" / "config").mkdir(parents=True)
    (runtime / "ratelimit" / "config" / "bench.yaml").write_text(yaml.safe_dump(config))
    grpc_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUNTIME_ROOT": str(runtime),
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "RUNTIME_WATCH_ROOT": "false",
        "RUNTIME_IGNOREDOTFILES": "true",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": f"{HOST}:{redis_port}",
        "CACHE_KEY_PREFIX": "ordermesh-bench-reference:",
        "USE_STATSD": "false",
        "LOG_LEVEL": "warn",
        "HOST": HOST,
        "PORT": str(free_port()),
        "GRPC_HOST": HOST,
        "GRPC_PORT": str(grpc_port),
        "DEBUG_HOST": HOST,
        "DEBUG_PORT": str(free_port()),
    }
    child = await Child.start(
        "envoyproxy/ratelimit", [executable], directory=directory, env=env, cwd=directory
    )
    request = reference_load_request("readiness")

    async def answers() -> bool:
        async with grpc.aio.insecure_channel(f"{HOST}:{grpc_port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            reply = await stub.ShouldRateLimit(request, timeout=1)
            return bool(reply.overall_code == OK)

    await wait_for(child, answers, "ShouldRateLimit answer OK")
    return child, grpc_port


@dataclass(frozen=True)
class Edge:
    name: str
    child: Child
    port: int
    admin_port: int

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def ratelimit_calls(self) -> Counter[str]:
        """Envoy's ratelimit filter counters (ok, over_limit, error, failure_mode_allowed)
        summed over clusters."""
        _, _, body = http_get(f"http://{HOST}:{self.admin_port}/stats?filter=ratelimit", {})
        counts: Counter[str] = Counter()
        for line in body.decode().splitlines():
            name, _, value = line.partition(": ")
            parts = name.split(".")
            # cluster.<service>.ratelimit.<outcome>, not the ratelimit cluster's own stats.
            if len(parts) == 4 and parts[0] == "cluster" and parts[2] == "ratelimit":
                counts[parts[3]] += int(value)
        return counts


def without_ratelimit(config_text: str) -> str:
    """The rendered edge config with its ratelimit filters removed (routes keep their
    descriptors, which nothing then reads)."""
    config = yaml.safe_load(config_text)
    removed = 0
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                before = len(manager.get("http_filters", ()))
                manager["http_filters"] = [
                    f
                    for f in manager.get("http_filters", ())
                    if not str(f.get("typed_config", {}).get("@type", "")).endswith(
                        "ratelimit.v3.RateLimit"
                    )
                ]
                removed += before - len(manager["http_filters"])
    if removed == 0:
        raise BenchError("the rendered edge config has no ratelimit filter to remove")
    return str(yaml.safe_dump(config, sort_keys=False, width=100))


async def start_edge(
    name: str,
    *,
    directory: Path,
    grpc_port: int,
    rls_port: int,
    rate_limited: bool,
    bearer: Mapping[str, str],
) -> Edge:
    """An Envoy with the edge config; ready once the bench user's REST call answers 200
    (JWKS fetched), and through the rate-limited one with X-RateLimit-* headers (the
    rate-limit service answered rather than failed open)."""
    port, admin = free_port(), free_port()
    slug = name.replace(" ", "-")
    text = edge.render_text(
        listen_port=port,
        admin_port=admin,
        clusters=edge.local_clusters(HOST, grpc_port),
        descriptor=edge.ENVOY_DESCRIPTOR,
        ratelimit=(HOST, rls_port),
        access_log=directory / f"{slug}-access.log",
    )
    config = directory / f"{slug}.yaml"
    config.write_text(text if rate_limited else without_ratelimit(text))
    child = await Child.start(
        name,
        [
            str(envoy.binary()),
            "--config-path",
            str(config),
            "--log-level",
            "warn",
            "--concurrency",
            "1",
            "--base-id",
            str(port),
            "--disable-hot-restart",
        ],
        directory=directory,
    )
    started = Edge(name, child, port, admin)

    async def ready() -> bool:
        if not await asyncio.to_thread(envoy.is_ready, admin):
            return False
        status, headers, _ = await asyncio.to_thread(http_get, started.url(REST_PATH), bearer)
        return status == 200 and (not rate_limited or "x-ratelimit-limit" in headers)

    await wait_for(child, ready, "an answer to the bench user's REST call")
    return started


# ---------------------------------------------------------------- load


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


# The percentiles ghz reports in its latencyDistribution, taken from hey's CSV alike.
DISTRIBUTION = (10, 25, 50, 75, 90, 95, 99)


@dataclass(frozen=True)
class Load:
    requests: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: Mapping[str, int] = field(default_factory=dict)
    # Latency percentiles (percent → ms) for --plot: ghz's own, or hey's from its CSV.
    distribution: Mapping[int, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_ghz(cls, report: GhzReport) -> Load:
        return cls(
            requests=report.count,
            failed=report.failed,
            seconds=report.seconds,
            p50_ms=report.percentiles_ms.get(50, math.nan),
            p99_ms=report.percentiles_ms.get(99, math.nan),
            failures={k: v for k, v in report.statuses.items() if k != "OK"},
            distribution=report.percentiles_ms,
        )

    @classmethod
    def from_hey_csv(cls, text: str, seconds: float) -> Load:
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        for row in csv.DictReader(io.StringIO(text)):
            latencies.append(float(row["response-time"]) * 1000)
            if row["status-code"] != "200":
                failures[row["status-code"]] += 1
        latencies.sort()
        return cls(
            requests=len(latencies),
            failed=sum(failures.values()),
            seconds=seconds,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            failures=dict(failures),
            distribution={q: percentile(latencies, q / 100) for q in DISTRIBUTION},
        )


@dataclass(frozen=True)
class Hey:
    executable: str
    concurrency: int

    async def run(self, url: str, seconds: float, headers: Mapping[str, str]) -> tuple[Load, float]:
        """One hey run; its figures and the CPU seconds hey used."""
        argv = [self.executable, "-z", f"{seconds}s", "-c", str(self.concurrency), "-o", "csv"]
        for key, value in headers.items():
            argv += ["-H", f"{key}: {value}"]
        process = await asyncio.create_subprocess_exec(
            *argv, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        before = _children_cpu_seconds()
        out, err = await process.communicate()
        used = _children_cpu_seconds() - before
        if process.returncode != 0:
            raise BenchError(f"hey {url} exited {process.returncode}: {err.decode()[-2000:]}")
        return Load.from_hey_csv(out.decode(), seconds), used


def _children_cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


Driver = Callable[[float], Awaitable[tuple[Load, float]]]


@dataclass(frozen=True)
class Phase:
    label: str
    load: Load
    cpu: Mapping[str, float]
    client_cpu: float
    machine_busy: float

    def cpu_ms(self, name: str) -> float:
        return self.cpu.get(name, 0.0) * 1000 / max(self.load.requests, 1)

    def line(self) -> str:
        load = self.load
        parts = "  ".join(f"{name} {self.cpu_ms(name):.3f}" for name in self.cpu)
        client = self.client_cpu * 1000 / max(load.requests, 1)
        failed = f"  {load.failed} failed {dict(load.failures)}" if load.failed else ""
        return (
            f"{load.rps:7.0f} req/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms"
            f"  CPU ms/req: {parts}  client {client:.3f}"
            f"  machine {self.machine_busy:4.0%}  n={load.requests}{failed}"
        )


async def measure(
    label: str,
    drive: Driver,
    *,
    warmup: float,
    seconds: float,
    pids: Mapping[str, int],
) -> Phase:
    if warmup > 0:
        await drive(warmup)
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    busy_before = machine_busy_jiffies()
    load, client_cpu = await drive(seconds)
    cpu = {name: process_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    busy_after = machine_busy_jiffies()
    busy = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1)
    phase = Phase(label, load, cpu, client_cpu, busy)
    print(f"  {label:<40} {phase.line()}", flush=True)
    return phase


def ghz_driver(ghz: Ghz, call: str, data: Mapping[str, Any], directory: Path) -> Driver:
    async def drive(seconds: float) -> tuple[Load, float]:
        report, used = await ghz.run(call, seconds, data=[data], metadata={}, directory=directory)
        return Load.from_ghz(report), used

    return drive


def hey_driver(hey: Hey, url: str, headers: Mapping[str, str]) -> Driver:
    async def drive(seconds: float) -> tuple[Load, float]:
        return await hey.run(url, seconds, headers)

    return drive


# ---------------------------------------------------------------- requests and the bench user


def our_descriptor(user_id: str) -> dict[str, Any]:
    """What Envoy sends our service for (d): GetProduct over REST by an enterprise user."""
    entries = {
        "method": f"/{GRPC_CALL}",
        "remote_address": HOST,
        "user": user_id,
        "tier": "enterprise",
        "rest_path": REST_PATH,
    }
    return {
        "domain": OURS_DOMAIN,
        "descriptors": [{"entries": [{"key": k, "value": v} for k, v in entries.items()]}],
    }


def reference_load_request(user_id: str) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(
        domain=REFERENCE_DOMAIN,
        descriptors=[
            rls_pb2.RateLimitDescriptor(
                entries=[
                    rls_pb2.RateLimitDescriptor.Entry(key="route_user", value=f"read:{user_id}")
                ]
            ),
            rls_pb2.RateLimitDescriptor(
                entries=[rls_pb2.RateLimitDescriptor.Entry(key="user", value=user_id)]
            ),
        ],
    )


def reference_descriptor(user_id: str) -> dict[str, Any]:
    return {
        "domain": REFERENCE_DOMAIN,
        "descriptors": [
            {"entries": [{"key": "route_user", "value": f"read:{user_id}"}]},
            {"entries": [{"key": "user", "value": user_id}]},
        ],
    }


async def enterprise_user(target: str) -> tuple[str, str]:
    """A new enterprise user's id and access token (the tier set in the database before the
    login, as `ordermesh users set-tier` would)."""
    email = f"bench-edge-{uuid.uuid4().hex[:12]}@example.com"
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 10)
        except TimeoutError:
            raise BenchError(f"no gRPC server answers on {target}") from None
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        registered = await auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Edge Bench")
        )
        async with await AsyncConnection.connect(
            postgres.dsn(), autocommit=True, application_name="ordermesh-bench"
        ) as conn:
            await conn.execute(
                "UPDATE auth.users SET tier = 'enterprise' WHERE email = %s", (email,)
            )
        login = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    return str(registered.user.user_id), str(login.access_token)


# ---------------------------------------------------------------- accuracy, against services


async def probe_accuracy(
    name: str, target: str, plan: AccuracyPlan, boundary: float, request: rls_pb2.RateLimitRequest
) -> Accuracy:
    attempts: list[Attempt] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        await channel.channel_ready()

        async def one() -> Attempt:
            sent = time.time()
            try:
                reply = await stub.ShouldRateLimit(request, timeout=5)
            except grpc.aio.AioRpcError as error:
                return Attempt(sent, time.time(), False, error.code().name)
            return Attempt(sent, time.time(), reply.overall_code == OK)

        for when, count in plan.schedule(boundary):
            await asyncio.sleep(max(0.0, when - time.time()))
            attempts += await asyncio.gather(*(one() for _ in range(count)))
    return Accuracy(name, plan, tuple(attempts))


async def accuracy_run(
    plan: AccuracyPlan, boundary: float, ours: str, reference: str
) -> tuple[Accuracy, Accuracy]:
    """Both services probed at the same moments, each with a key no one else uses: ours as
    an anonymous caller from a fresh documentation address (2001:db8::/32), the reference with
    a fresh value of its accuracy descriptor."""
    key = uuid.uuid4().hex
    address = f"2001:db8:{key[0:4]}:{key[4:8]}:{key[8:12]}:{key[12:16]}:{key[16:20]}:{key[20:24]}"
    our_request = rls_pb2.RateLimitRequest(
        domain=OURS_DOMAIN,
        descriptors=[
            rls_pb2.RateLimitDescriptor(
                entries=[
                    rls_pb2.RateLimitDescriptor.Entry(key="method", value=f"/{GRPC_CALL}"),
                    rls_pb2.RateLimitDescriptor.Entry(key="remote_address", value=address),
                ]
            )
        ],
    )
    reference_request = rls_pb2.RateLimitRequest(
        domain=REFERENCE_DOMAIN,
        descriptors=[
            rls_pb2.RateLimitDescriptor(
                entries=[rls_pb2.RateLimitDescriptor.Entry(key="accuracy", value=key)]
            )
        ],
    )
    return await asyncio.gather(
        probe_accuracy("ours", ours, plan, boundary, our_request),
        probe_accuracy("envoyproxy/ratelimit", reference, plan, boundary, reference_request),
    )


# ---------------------------------------------------------------- report


def print_ratios(phases: Mapping[str, Phase], calls: Counter[str]) -> None:
    a, d = phases["a"].load, phases["d"].load
    print(
        "  (d)'s Envoy asked the rate-limit service: "
        + ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
    )
    print("\n  throughput against (a):", end="")
    for key, phase in phases.items():
        if key != "a":
            print(f"  ({key}) {phase.load.rps / max(a.rps, 1e-9):.2f}x", end="")
    c, cj = phases["c"].load, phases["c+jwt"].load
    print(
        f"\n  (d) against (c): {d.rps / max(c.rps, 1e-9):.2f}x the req/s,"
        f" p50 {d.p50_ms - c.p50_ms:+.2f} ms, p99 {d.p99_ms - c.p99_ms:+.2f} ms;"
        f" of which the token (c+jwt - c): p50 {cj.p50_ms - c.p50_ms:+.2f} ms,"
        f" p99 {cj.p99_ms - c.p99_ms:+.2f} ms;"
        f" the rate-limit call (d - c+jwt): p50 {d.p50_ms - cj.p50_ms:+.2f} ms,"
        f" p99 {d.p99_ms - cj.p99_ms:+.2f} ms"
    )
    share = d.rps / max(a.rps, 1e-9)
    # Every call of (d) checked, none failed open: else (d) measures less than it says.
    answered = (
        calls["ok"] >= d.requests and not calls["error"] and not calls["failure_mode_allowed"]
    )
    print(
        f"\n(d) keeps at least {GOAL_THROUGHPUT_SHARE:.0%} of (a)'s throughput:"
        f" {verdict(share >= GOAL_THROUGHPUT_SHARE and d.failed == 0 and answered)}"
        f"  ({d.rps:.0f} of {a.rps:.0f} req/s = {share:.2f}x)"
    )


def print_checks(checks: Mapping[str, Phase]) -> None:
    ours_one = checks["ours, 1"].load
    ours, reference = checks["ours, n"].load, checks["reference, n"].load
    print(
        f"\n  ours against the reference at concurrency n:"
        f" {ours.rps / max(reference.rps, 1e-9):.2f}x the checks/s,"
        f" {ours.p99_ms / max(reference.p99_ms, 1e-9):.2f}x the p99"
    )
    print(
        f"\nthe rate-limit check (ours, alone, concurrency 1)"
        f" under {GOAL_CHECK_P99_MS:g} ms at p99:"
        f" {verdict(ours_one.p99_ms < GOAL_CHECK_P99_MS and ours_one.failed == 0)}"
        f"  (p50 {ours_one.p50_ms:.2f} ms, p99 {ours_one.p99_ms:.2f} ms)"
    )


def print_accuracy(results: Sequence[Accuracy]) -> None:
    plan = results[0].plan
    print(
        f"\n== accuracy: {plan.limit} per {plan.window:g} s; bursts of {plan.limit} before and"
        " after a window boundary, then probes as the first burst leaves a sliding window"
    )
    for result in results:
        print(f"  {result.name:<22} {result.line()}")
    ours = next(r for r in results if r.name == "ours")
    print(
        f"\nour most admitted in any window-long span within {GOAL_ACCURACY:g}x the limit:"
        f" {verdict(ours.most <= GOAL_ACCURACY * plan.limit and ours.admitted > 0)}"
        f"  ({ours.most} for {plan.limit}; a fixed window admits up to {2 * plan.limit})"
    )


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Services:
    """What the bench measures, beside the stack's API and Redis."""

    ours: Child
    ours_port: int
    reference: Child
    reference_port: int
    plain: Edge
    limited: Edge


async def start_services(
    stack: contextlib.AsyncExitStack[bool | None],
    *,
    directory: Path,
    ports: Ports,
    plan: AccuracyPlan,
    bearer: Mapping[str, str],
    reference_bin: str,
) -> Services:
    # The response's counts are uint32: route_scale x 100/minute stays below 2**32.
    overrides: dict[str, Any] = {
        "tiers": {"enterprise": {"overall": f"{HIGH_LIMIT}/minute", "route_scale": HIGH_SCALE}}
    }
    if plan.window == 1.0:
        overrides["routes"] = {"read": {"limit": f"{plan.limit}/second"}}
    ours, ours_port = await start_our_rls(directory, overrides)
    stack.push_async_callback(ours.stop)
    reference, reference_port = await start_reference_rls(
        reference_bin, directory, plan, ports.redis
    )
    stack.push_async_callback(reference.stop)
    edges = []
    for name, rate_limited in (("edge without rate limit", False), ("edge", True)):
        started = await start_edge(
            name,
            directory=directory,
            grpc_port=ports.grpc,
            rls_port=ours_port,
            rate_limited=rate_limited,
            bearer=bearer,
        )
        stack.push_async_callback(started.child.stop)
        edges.append(started)
    return Services(ours, ours_port, reference, reference_port, *edges)


Phases = dict[str, tuple[str, Driver, dict[str, int]]]


def call_phases(
    services: Services,
    *,
    ghz_bin: str,
    hey: Hey,
    api_target: str,
    pids: Mapping[str, int],
    bearer: Mapping[str, str],
    directory: Path,
) -> Phases:
    n = hey.concurrency
    request = {"product_id": PRODUCT_ID}
    plain, limited = services.plain, services.limited
    direct = Ghz(ghz_bin, DESCRIPTOR_SET, api_target, n)
    via_edge = Ghz(ghz_bin, DESCRIPTOR_SET, f"{HOST}:{plain.port}", n)
    api = {"api": pids["api"]}
    through_plain = {**api, "envoy": plain.child.pid}
    return {
        "a": ("(a) gRPC, direct", ghz_driver(direct, GRPC_CALL, request, directory), api),
        "b": (
            "(b) gRPC via Envoy, no rate limit",
            ghz_driver(via_edge, GRPC_CALL, request, directory),
            through_plain,
        ),
        "c": (
            "(c) REST via Envoy, no rate limit",
            hey_driver(hey, plain.url(REST_PATH), {}),
            through_plain,
        ),
        "c+jwt": (
            "(c+jwt) REST + JWT, no rate limit",
            hey_driver(hey, plain.url(REST_PATH), bearer),
            through_plain,
        ),
        "d": (
            "(d) REST + JWT + rate limit",
            hey_driver(hey, limited.url(REST_PATH), bearer),
            {**api, "envoy": limited.child.pid, "rls": services.ours.pid, "redis": pids["redis"]},
        ),
    }


def check_phases(
    services: Services, *, ghz_bin: str, n: int, user_id: str, redis_pid: int, directory: Path
) -> Phases:
    protoset = rls_protoset(directory)
    phases: Phases = {}
    for concurrency, suffix in ((1, "1"), (n, "n")):
        for key, label, port, child, data in (
            ("ours", "ours", services.ours_port, services.ours, our_descriptor(user_id)),
            (
                "reference",
                "envoyproxy/ratelimit",
                services.reference_port,
                services.reference,
                reference_descriptor(user_id),
            ),
        ):
            ghz = Ghz(ghz_bin, protoset, f"{HOST}:{port}", concurrency)
            phases[f"{key}, {suffix}"] = (
                f"{label}, concurrency {concurrency}",
                ghz_driver(ghz, CHECK_CALL, data, directory),
                {"rls": child.pid, "redis": redis_pid},
            )
    return phases


async def measure_all(phases: Phases, *, warmup: float, seconds: float) -> dict[str, Phase]:
    return {
        key: await measure(label, drive, warmup=warmup, seconds=seconds, pids=pids)
        for key, (label, drive, pids) in phases.items()
    }


async def run(args: argparse.Namespace) -> None:
    ports = Ports.from_env()
    pids = {"api": procs.read_pid("api"), "redis": procs.read_pid("redis")}
    running = {name: pid for name, pid in pids.items() if pid is not None}
    if len(running) != len(pids):
        raise BenchError("the API and Redis must be running (start the stack with `make up`)")
    plan = AccuracyPlan(20, 1.0) if args.quick else AccuracyPlan(100, 60.0)
    ghz_bin = ghz_executable()
    hey = Hey(
        go_installed(HEY, TOOLS_BIN_DIR),
        args.concurrency,
    )
    reference_bin = go_installed(REFERENCE, REFERENCE_BIN_DIR, from_path=False)
    api_target = f"{HOST}:{ports.grpc}"
    user_id, token = await enterprise_user(api_target)
    bearer = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-edge-")))
        services = await start_services(
            stack,
            directory=directory,
            ports=ports,
            plan=plan,
            bearer=bearer,
            reference_bin=reference_bin,
        )
        boundary = plan.next_boundary(time.time(), lead=1.0)
        accuracy = asyncio.create_task(
            accuracy_run(
                plan, boundary, f"{HOST}:{services.ours_port}", f"{HOST}:{services.reference_port}"
            )
        )
        print_header(args, boundary + plan.window)

        print("\n== the same call four ways")
        before = await asyncio.to_thread(services.limited.ratelimit_calls)
        phases = await measure_all(
            call_phases(
                services,
                ghz_bin=ghz_bin,
                hey=hey,
                api_target=api_target,
                pids=running,
                bearer=bearer,
                directory=directory,
            ),
            warmup=args.warmup,
            seconds=args.duration,
        )
        calls = await asyncio.to_thread(services.limited.ratelimit_calls)
        print_ratios(phases, calls - before)

        print("\n== the rate-limit check alone: ShouldRateLimit, direct, ghz")
        checks = await measure_all(
            check_phases(
                services,
                ghz_bin=ghz_bin,
                n=args.concurrency,
                user_id=user_id,
                redis_pid=running["redis"],
                directory=directory,
            ),
            warmup=min(args.warmup, 1.0),
            seconds=args.check_seconds,
        )
        print_checks(checks)

        if not accuracy.done():
            left = boundary + plan.window - time.time()
            print(f"\n(waiting {max(left, 0):.0f} s for the accuracy probe to finish)", flush=True)
        accuracies = await accuracy
        print_accuracy(accuracies)
        if args.plot is not None:
            plot(args.plot, phases, checks, accuracies)


def plot(
    directory: Path,
    phases: Mapping[str, Phase],
    checks: Mapping[str, Phase],
    accuracies: Sequence[Accuracy],
) -> None:
    """--plot: the latency percentiles of each phase (ghz's, or hey's from its CSV), the
    requests/s of each, and the accuracy probe's admitted calls per second."""
    start = min((a.sent for r in accuracies for a in r.attempts), default=0.0)
    plots.print_written(
        [
            plots.latency_distribution(
                directory,
                "calls-latency-distribution",
                "edge: GetProduct four ways, latency percentiles",
                {phase.label: phase.load.distribution for phase in phases.values()},
            ),
            plots.latency_distribution(
                directory,
                "check-latency-distribution",
                "edge: ShouldRateLimit alone (ghz), latency percentiles",
                {phase.label: phase.load.distribution for phase in checks.values()},
            ),
            plots.bars(
                directory,
                "requests-per-second",
                "edge: requests/s of each phase",
                {phase.label: phase.load.rps for phase in (*phases.values(), *checks.values())},
                xlabel="requests per second",
            ),
            plots.throughput(
                directory,
                "accuracy-admitted-per-second",
                f"edge accuracy probe: calls admitted per second"
                f" (limit {accuracies[0].plan.limit} per {accuracies[0].plan.window:g} s)",
                {r.name: [a.at for a in r.attempts if a.admitted] for r in accuracies},
                unit="admitted calls",
                start=start,
            )
            if accuracies
            else None,
        ]
    )


def print_header(args: argparse.Namespace, accuracy_ends: float) -> None:
    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"ordermesh edge bench: {os.cpu_count()} cores, load {load_average};"
        f" {GRPC_CALL.split('/')[1]} {PRODUCT_ID} at concurrency {args.concurrency}"
        f" (workers = connections), {args.warmup:g} s warm-up + {args.duration:g} s each;"
        f" ghz (gRPC), hey {HEY_VERSION} (REST, HTTP/1.1); envoyproxy/ratelimit"
        f" {REFERENCE_VERSION}. The accuracy probe runs alongside until"
        f" {time.strftime('%H:%M:%S', time.localtime(accuracy_ends))}."
        "\nCPU ms per request from /proc: api = the API process, envoy = the Envoy used,"
        " rls = the rate-limit service, redis; client = ghz or hey."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="workers = connections")
    parser.add_argument("--duration", type=float, default=8.0, help="timed seconds per phase")
    parser.add_argument("--check-seconds", type=float, default=5.0, help="per check phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s phases, accuracy with 20 per second (about 30 s)",
    )
    plots.add_plot_argument(parser, "edge")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.check_seconds, args.warmup = 2.0, 1.0, 0.5
    if args.concurrency < 1 or args.duration <= 0 or args.check_seconds <= 0:
        parser.error("--concurrency, --duration and --check-seconds must be positive")
    started = time.perf_counter()
    try:
        uvloop.run(run(args))
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
