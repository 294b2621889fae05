"""Order pipeline bench: REST orders driven to SHIPPED, beside the raw Kafka round trip.

    python bench/pipeline.py [--orders N] [--concurrency C] [--phases ...]

Talks to the running dev stack only (start it with `make up`): orders enter through Envoy
on 127.0.0.1, Postgres and Kafka are read directly.

Phases (choose with --phases), in this order:

- throughput: closed loop. C connections create orders as fast as the edge answers, with at
  most --backlog orders created but not yet SHIPPED, so creation cannot run away from the
  pipeline and the figure is a sustained one.
- half: open loop at half the throughput just measured (or --rate without that phase).
  Orders are sent on a fixed schedule (at most C requests in flight; a send that waits over
  10 ms for a free connection is counted late).
- low: open loop at --low-rate orders/s (20).
- kafka: the raw round trip of the same Avro events (single-object encoding + CloudEvents
  headers) in this process with the relay's producer settings: flat out, for the raw CPU
  per event, then chains of six hops at --low-rate chains/s, each hop decoded and answered
  with the next event as a worker would, for the raw six-hop latency.
- observe (not run unless named): what observing costs. The throughput phase's closed loop,
  --observe-rounds times with observability ON (each process serves /metrics, scraped by the
  stack's Prometheus, and sends its spans to ORDERMESH_ZIPKIN_URL with
  ORDERMESH_TRACE_SAMPLE_RATIO=1.0, or --observe-sample-ratio; the goal is judged at 1.0)
  and as often OFF (ORDERMESH_METRICS=off: no metrics port; ORDERMESH_ZIPKIN_URL empty: no
  spans), in turns on, off, off, on, on, off ... so that a drift of the machine weighs on
  both alike. Before every round the stack's app processes and Envoy are restarted with that
  environment (devstack.stack.restart_apps: Envoy traces in ON only; the other servers keep
  running) and warmed up with --warmup orders. The counters themselves are kept in both
  modes (the processes have no switch for that); OFF takes away serving and scraping them
  and every span. It prints each round's orders/s and stack CPU per order, then each mode's
  median and mean, off/on and the throughput cost 1 - on/off, judged only when the ON rounds
  did trace (a URL in the stack's environment, and Zipkin answering with services that sent
  spans). The stack is restarted as this process's environment has it at the end, also on
  failure or Ctrl-C.

"Readable" means: visible in orders.orders to a bulk poll over the pending set (every 50 ms
in the throughput phase, every 5 ms in the latency phases), timestamped on this process's
clock when the poll that first sees it starts. CPU comes from /proc: each stack process
(pid files in .run/pids), Postgres summed over its backends and grouped by
application_name (the bench's own backends count as the bench's), and /proc/stat.

Every goal of the pipeline issue is printed at the end as HIT or MISS, measured in this
one run against its own raw Kafka phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from devstack import kafka, postgres, procs
from devstack.paths import pid_path
from devstack.ports import HOST, Ports
from devstack.stack import (
    APP_PROCESSES,
    METRICS_SWITCH_ENV,
    app_env,
    metrics_port,
    restart_apps,
)
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import (
    SCHEMA_DIR,
    EventCodec,
    cloudevent_headers,
    header_map,
    kafka_headers,
)
from services.platform.messaging.producer import producer_config_with_defaults
from services.platform.messaging.registry import TopicSpec

GOAL_ORDERS_PER_SECOND = 400.0
GOAL_CPU_RATIO = 3.0
GOAL_LOW_RATE = 20.0
GOAL_LOW_P50_RATIO = 2.0
GOAL_LOW_P99_SECONDS = 0.150
GOAL_HALF_P99_SECONDS = 0.5
GOAL_OBSERVE_COST = 0.10
CHAIN_HOPS = 6

WATCH_INTERVAL = 0.05
LATENCY_WATCH_INTERVAL = 0.005
BENCH_APPLICATION = "ordermesh-bench"
TERMINAL = ("SHIPPED", "DELIVERED", "FAILED", "CANCELLED")
SHIPPED = ("SHIPPED", "DELIVERED")
ZIPKIN_URL_ENV = "ORDERMESH_ZIPKIN_URL"
SAMPLE_RATIO_ENV = "ORDERMESH_TRACE_SAMPLE_RATIO"
OBSERVE_ON, OBSERVE_OFF = "on", "off"
# What each mode sets in this process's environment before the app processes restart
# (app_env copies it; an empty URL is not replaced by a default).
OBSERVE_ENVIRONMENT = {
    OBSERVE_ON: {METRICS_SWITCH_ENV: "on", SAMPLE_RATIO_ENV: "1.0"},
    OBSERVE_OFF: {METRICS_SWITCH_ENV: "off", ZIPKIN_URL_ENV: ""},
}


def observe_environment(mode: str, sample_ratio: float = 1.0) -> dict[str, str]:
    """The settings of a round of ``mode``, ON sampling ``sample_ratio`` of the traces."""
    environment = dict(OBSERVE_ENVIRONMENT[mode])
    if mode == OBSERVE_ON:
        environment[SAMPLE_RATIO_ENV] = repr(sample_ratio)
    return environment


SERVICE_SCHEMAS = ("orders", "payment", "inventory", "fulfillment")
STATUS_HOPS = ("PENDING", "VALIDATED", "PAID", "FULFILLED", "SHIPPED")

PRODUCT_PREFIX = "bench-pipeline-"
PRODUCT_COUNT = 16
PRODUCT_STOCK = 1_000_000_000
PRODUCT_PRICE_MINOR = 1000
PASSWORD = "bench pipeline password"
SHIPPING_ADDRESS = {
    "street": "1 Main St",
    "city": "Springfield",
    "state": "IL",
    "zip": "62701",
    "country": "US",
}


def order_bodies(products: Sequence[str], *, second_line: int) -> list[bytes]:
    """One CreateOrder body per product: that product, and the one ``second_line`` further
    on, paid with the test token that is always approved."""
    return [
        json.dumps(
            {
                "items": [
                    {"product_id": products[i], "quantity": 1},
                    {"product_id": products[(i + second_line) % len(products)], "quantity": 2},
                ],
                "shipping_address": SHIPPING_ADDRESS,
                "payment_method": "tok_visa",
            }
        ).encode()
        for i in range(len(products))
    ]


KAFKA_PARTITIONS = 3
EVENTS_PER_ORDER_GUESS = 6
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The stack is not in a state the bench can measure."""


# ---------------------------------------------------------------- figures


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def latency_line(seconds: Iterable[float]) -> str:
    ordered = sorted(seconds)
    if not ordered:
        return "no samples"
    p50, p95, p99 = (percentile(ordered, q) * 1000 for q in (50, 95, 99))
    return (
        f"p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f}  max {ordered[-1] * 1000:7.1f} ms"
        f"  (n={len(ordered)})"
    )


def verdict(ok: bool) -> str:
    return "HIT " if ok else "MISS"


def observe_schedule(rounds: int) -> list[str]:
    """``rounds`` ON and ``rounds`` OFF rounds in pairs that swap their order each time (on,
    off, off, on, on, off, ...): a drift of the machine over the run weighs on both modes."""
    pairs = [(OBSERVE_ON, OBSERVE_OFF), (OBSERVE_OFF, OBSERVE_ON)]
    return [mode for index in range(rounds) for mode in pairs[index % 2]]


@dataclass(frozen=True)
class ObserveRound:
    mode: str
    orders_per_second: float
    stack_cpu_per_order: float
    shipped: int
    metrics_served: int
    # CPU seconds per order by stack process (Zipkin's own included).
    process_cpu_per_order: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ObserveCost:
    """Each mode's median and mean orders/s (and median stack CPU seconds per order) over
    its rounds; the cost is the share of throughput lost with observability ON."""

    on: list[float]
    off: list[float]
    cpu_on: float
    cpu_off: float

    @staticmethod
    def of(rounds: Sequence[ObserveRound]) -> ObserveCost:
        def figures(mode: str) -> tuple[list[float], float]:
            chosen = [r for r in rounds if r.mode == mode]
            cpu = [r.stack_cpu_per_order for r in chosen]
            return [r.orders_per_second for r in chosen], _median(cpu)

        (on, cpu_on), (off, cpu_off) = figures(OBSERVE_ON), figures(OBSERVE_OFF)
        return ObserveCost(on, off, cpu_on, cpu_off)

    @property
    def median_on(self) -> float:
        return _median(self.on)

    @property
    def median_off(self) -> float:
        return _median(self.off)

    @property
    def ratio(self) -> float:
        """off/on of the medians: 1.1 means OFF ran 10% faster."""
        return _divided(self.median_off, self.median_on)

    @property
    def cost(self) -> float:
        """1 - on/off of the medians (of the means in :attr:`mean_cost`)."""
        return 1 - _divided(self.median_on, self.median_off)

    @property
    def mean_cost(self) -> float:
        means = [statistics.fmean(v) if v else math.nan for v in (self.on, self.off)]
        return 1 - _divided(*means)

    @property
    def met(self) -> bool:
        return self.cost <= GOAL_OBSERVE_COST


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _divided(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


# ---------------------------------------------------------------- CPU from /proc


def _stat_fields(path: Path) -> list[str] | None:
    try:
        raw = path.read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _cpu_seconds(fields: Sequence[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _thread_group(pid: int, tid: int, comm: str) -> str:
    if tid == pid:
        return "main thread (event loop: Python)"
    if comm.startswith("rdk:"):
        return "librdkafka threads"
    if comm in ("event_engine", "grpc_global_tim", "lifeguard") or comm.startswith("grpc"):
        return "gRPC core threads"
    return "to_thread pool (Kafka poll/flush)"


def is_python(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("python")
    except OSError:
        return False


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    machine: tuple[int, int]
    processes: dict[str, tuple[int, float]]
    threads: dict[str, dict[int, tuple[str, float]]]
    postgres_backends: dict[int, tuple[str, float]]


@dataclass(frozen=True)
class CpuUsage:
    seconds: float
    machine_busy: float
    processes: dict[str, float]
    threads: dict[str, dict[str, float]]
    postgres_groups: dict[str, float]
    restarted: frozenset[str]


class CpuSampler:
    """Samples the stack's processes; Postgres backends are labelled by application_name."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn

    @staticmethod
    def stack_pids() -> dict[str, int]:
        pids: dict[str, int] = {}
        for entry in sorted(pid_path("x").parent.glob("*.pid")):
            pid = procs.read_pid(entry.stem)
            if pid is not None:
                pids[entry.stem] = pid
        return pids

    async def _backend_labels(self) -> dict[int, str]:
        cursor = self._conn.cursor(row_factory=tuple_row)
        await cursor.execute(
            "SELECT pid, coalesce(nullif(application_name, ''), backend_type, 'other')"
            " FROM pg_stat_activity"
        )
        return {int(pid): str(label) for pid, label in await cursor.fetchall()}

    async def snapshot(self) -> CpuSnapshot:
        labels = await self._backend_labels()
        pids = self.stack_pids()
        processes: dict[str, tuple[int, float]] = {}
        threads: dict[str, dict[int, tuple[str, float]]] = {}
        for name, pid in pids.items():
            fields = _stat_fields(Path(f"/proc/{pid}/stat"))
            if fields is None:
                continue
            processes[name] = (pid, _cpu_seconds(fields))
            if is_python(pid):
                threads[name] = _threads(pid)
        threads["bench"] = _threads(os.getpid())
        processes["bench"] = (os.getpid(), sum(os.times()[:2]))
        backends: dict[int, tuple[str, float]] = {}
        postmaster = pids.get(postgres.NAME)
        if postmaster is not None:
            for pid, seconds in _children_cpu(postmaster).items():
                backends[pid] = (labels.get(pid, "background (no session)"), seconds)
        return CpuSnapshot(time.perf_counter(), _machine_jiffies(), processes, threads, backends)

    @staticmethod
    def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        busy = (after.machine[0] - before.machine[0]) / CLOCK_TICKS
        processes: dict[str, float] = {}
        restarted: set[str] = set()
        for name, (pid, seconds) in after.processes.items():
            earlier_pid, earlier_seconds = before.processes.get(name, (pid, 0.0))
            if earlier_pid != pid:
                restarted.add(name)
            processes[name] = seconds - (earlier_seconds if earlier_pid == pid else 0.0)
        threads: dict[str, dict[str, float]] = {}
        for name, now in after.threads.items():
            earlier_threads = before.threads.get(name, {})
            groups: dict[str, float] = defaultdict(float)
            for tid, (group, seconds) in now.items():
                groups[group] += seconds - earlier_threads.get(tid, (group, 0.0))[1]
            threads[name] = dict(groups)
        postgres_groups: dict[str, float] = defaultdict(float)
        for pid, (label, seconds) in after.postgres_backends.items():
            postgres_groups[label] += seconds - before.postgres_backends.get(pid, (label, 0.0))[1]
        bench_backends = postgres_groups.pop(BENCH_APPLICATION, 0.0)
        if postgres.NAME in processes:
            processes[postgres.NAME] += sum(postgres_groups.values())
        if "bench" in processes:
            processes["bench"] += bench_backends
        return CpuUsage(
            after.at - before.at,
            busy,
            processes,
            threads,
            dict(postgres_groups),
            frozenset(restarted),
        )


def _children_cpu(parent: int) -> dict[int, float]:
    """CPU seconds of each live child of ``parent``."""
    children: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry / "stat") if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == parent:
            children[int(entry.name)] = _cpu_seconds(fields)
    return children


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    found: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = _stat_fields(task / "stat")
            try:
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            if fields is not None:
                tid = int(task.name)
                found[tid] = (_thread_group(pid, tid, comm), _cpu_seconds(fields))
    return found


def print_cpu(usage: CpuUsage, orders: int) -> None:
    cores = os.cpu_count() or 1
    capacity = usage.seconds * cores
    print(
        f"  CPU over {usage.seconds:.1f} s on {cores} cores: machine busy "
        f"{usage.machine_busy / capacity:5.1%} ({usage.machine_busy:.1f} of {capacity:.1f}"
        " core-s)"
    )
    print(f"    {'process':<40} {'core-s':>7} {'cores':>6} {'of busy':>8} {'ms/order':>9}")
    per_order = max(orders, 1)
    ordered = sorted(usage.processes.items(), key=lambda item: -item[1])
    for name, seconds in ordered:
        label = "bench (this load generator)" if name == "bench" else name
        print(
            f"    {label:<40} {seconds:7.2f} {seconds / usage.seconds:6.2f}"
            f" {seconds / max(usage.machine_busy, 1e-9):8.1%}"
            f" {seconds * 1000 / per_order:9.2f}"
        )
        details = usage.postgres_groups if name == postgres.NAME else usage.threads.get(name, {})
        for part, part_seconds in sorted(details.items(), key=lambda item: -item[1]):
            if part_seconds >= 0.005 * usage.seconds:
                print(
                    f"      {part:<38} {part_seconds:7.2f} {part_seconds / usage.seconds:6.2f}"
                    f" {'':8} {part_seconds * 1000 / per_order:9.2f}"
                )
    listed = sum(usage.processes.values())
    if usage.restarted:
        restarted = ", ".join(sorted(usage.restarted))
        print(f"    RESTARTED during the window, figures disturbed: {restarted}")
    print(
        f"    {'(rest of the machine)':<40} {max(0.0, usage.machine_busy - listed):7.2f}"
        f" {max(0.0, usage.machine_busy - listed) / usage.seconds:6.2f}"
    )


# ---------------------------------------------------------------- optional py-spy profile


class Profiler:
    """py-spy sampling of the stack's Python processes (only with --profile-workers)."""

    def __init__(self, executable: str, pids: Mapping[str, int], directory: Path) -> None:
        self._executable = executable
        self._pids = pids
        self._directory = directory
        self._running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self) -> None:
        for name, pid in self._pids.items():
            self._running[name] = await asyncio.create_subprocess_exec(
                self._executable,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--gil",
                "--function",
                "--nonblocking",
                "--format",
                "raw",
                "--duration",
                "600",
                "--output",
                str(self._directory / f"{name}.txt"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

    async def stop(self) -> dict[str, Counter[tuple[tuple[str, str], ...]]]:
        stacks: dict[str, Counter[tuple[tuple[str, str], ...]]] = {}
        for name, process in self._running.items():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
            stacks[name] = _read_collapsed(self._directory / f"{name}.txt")
        return stacks


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_ENTRY_POINTS = ("services/__main__.py", "workers/__main__.py")
EVENT_LOOP = "event loop itself (native code below it: uvloop, grpc.aio Cython)"


def _read_collapsed(path: Path) -> Counter[tuple[tuple[str, str], ...]]:
    """py-spy's raw format: ``function (file:line);...;function (file:line) count``."""
    stacks: Counter[tuple[tuple[str, str], ...]] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks[tuple(_frame_parts(f) for f in frames.split(";"))] += int(count)
    return stacks


def _frame_parts(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def _library(file: str) -> str:
    top = file.split("/", 1)[0].removesuffix(".py")
    if top in ("services", "workers"):
        return f"ordermesh {top}/"
    if top in sys.stdlib_module_names or top.startswith("<frozen"):
        return f"stdlib {top}"
    return top or "native"


def _stage(frames: Sequence[tuple[str, str]]) -> str:
    """The outermost service frame below the platform plumbing (the handler or RPC), else
    the innermost plumbing frame (services/platform, workers/), else the innermost library."""
    for function, file in frames:
        if file.startswith("services/") and not file.startswith(
            ("services/platform/", *_ENTRY_POINTS)
        ):
            return f"{file.removesuffix('.py')}:{function}"
    for function, file in reversed(frames):
        if file.startswith(("services/", "workers/")) and file not in _ENTRY_POINTS:
            return f"{file.removesuffix('.py')}:{function}"
    for _, file in reversed(frames):
        if not file.startswith(("asyncio/", "uvloop/", "<frozen", *_ENTRY_POINTS)):
            return f"no ordermesh frame (a task of its own), in {_library(file)}"
    return EVENT_LOOP


def print_profile(
    stacks: Mapping[str, Counter[tuple[tuple[str, str], ...]]], top: int = 10
) -> None:
    for name, samples in stacks.items():
        total = sum(samples.values())
        print(f"\n  py-spy --gil, {name}: {total} samples of the thread holding the GIL")
        if not total:
            continue
        views: dict[str, Callable[[tuple[tuple[str, str], ...]], str]] = {
            "by stage (handler or RPC, else plumbing)": _stage,
            "by package of the running function": lambda frames: _library(frames[-1][1]),
        }
        for title, key in views.items():
            grouped: Counter[str] = Counter()
            for frames, count in samples.items():
                grouped[key(frames)] += count
            print(f"    {title}:")
            for label, count in grouped.most_common(top):
                print(f"      {count / total:6.1%}  {label}")


# ---------------------------------------------------------------- the pipeline


@dataclass
class Watcher:
    """Bulk poll of orders.orders for the pending orders that reached a terminal status."""

    conn: AsyncConnection[Any]
    interval: float = WATCH_INTERVAL
    pending: dict[str, float] = field(default_factory=dict)
    done: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    queries: int = 0
    query_seconds: float = 0.0
    last_change: float = field(default_factory=time.perf_counter)

    def reset(self) -> None:
        self.pending.clear()
        self.done.clear()
        self.queries = 0
        self.query_seconds = 0.0
        self.last_change = time.perf_counter()

    def add(self, order_id: str, created_at: float) -> None:
        self.pending[order_id] = created_at
        self.last_change = time.perf_counter()

    async def poll(self) -> None:
        if not self.pending:
            return
        started = time.perf_counter()
        cursor = self.conn.cursor(row_factory=tuple_row)
        await cursor.execute(
            "SELECT order_id::text, status FROM orders.orders"
            " WHERE order_id = ANY(string_to_array(%s, ',')::uuid[]) AND status = ANY(%s)",
            (",".join(self.pending), list(TERMINAL)),
        )
        rows = await cursor.fetchall()
        self.queries += 1
        self.query_seconds += time.perf_counter() - started
        for order_id, status in rows:
            created_at = self.pending.pop(order_id, None)
            if created_at is not None:
                self.done[order_id] = (status, created_at, started)
        if rows:
            self.last_change = time.perf_counter()

    async def run(self, stop: asyncio.Event) -> None:
        next_poll = time.perf_counter()
        while not stop.is_set():
            await self.poll()
            next_poll = max(next_poll + self.interval, time.perf_counter())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_poll - time.perf_counter())

    def stalled(self, limit: float) -> bool:
        return bool(self.pending) and time.perf_counter() - self.last_change > limit


@dataclass
class Run:
    name: str
    sent: int = 0
    late: int = 0
    create_seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    first_send: float = math.inf
    last_response: float = 0.0
    stalled: bool = False
    order_ids: list[str] = field(default_factory=list)


class Pipeline:
    """Creates orders over ``clients``, each one keep-alive HTTP/1.1 connection.

    One client per connection rather than one pool of many: httpcore's pool checks every
    idle connection of the pool for expiry on each request, a cost that grows with the pool.
    """

    def __init__(
        self,
        clients: Sequence[httpx.AsyncClient],
        token: str,
        watcher: Watcher,
        products: Sequence[str],
        stall_timeout: float,
    ) -> None:
        self._clients = clients
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._watcher = watcher
        self._stall_timeout = stall_timeout
        self._bodies = order_bodies(products, second_line=5)

    async def create(self, client: httpx.AsyncClient, run: Run, index: int) -> None:
        headers = {**self._headers, "Idempotency-Key": str(uuid.uuid4())}
        started = time.perf_counter()
        run.first_send = min(run.first_send, started)
        run.sent += 1
        try:
            response = await client.post(
                "/api/v1/orders", content=self._bodies[index % len(self._bodies)], headers=headers
            )
        except httpx.HTTPError as exc:
            run.errors[type(exc).__name__] += 1
            run.first_error = run.first_error or repr(exc)
            return
        answered = time.perf_counter()
        if response.status_code != 200:
            run.errors[f"HTTP {response.status_code}"] += 1
            run.first_error = run.first_error or response.text[:300]
            return
        order_id = str(response.json()["order_id"])
        run.create_seconds.append(answered - started)
        run.last_response = max(run.last_response, answered)
        run.order_ids.append(order_id)
        self._watcher.add(order_id, answered)

    async def closed_loop(self, run: Run, orders: int, backlog: int) -> None:
        indices = iter(range(orders))

        async def connection(client: httpx.AsyncClient) -> None:
            for index in indices:
                while backlog and len(self._watcher.pending) >= backlog:
                    if self._watcher.stalled(self._stall_timeout):
                        run.stalled = True
                        return
                    await asyncio.sleep(0.002)
                await self.create(client, run, index)

        await asyncio.gather(*(connection(c) for c in self._clients[:orders]))

    async def open_loop(self, run: Run, orders: int, rate: float) -> None:
        idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            idle.put_nowait(client)

        async def send(client: httpx.AsyncClient, index: int) -> None:
            try:
                await self.create(client, run, index)
            finally:
                idle.put_nowait(client)

        start = time.perf_counter() + 0.01
        async with asyncio.TaskGroup() as group:
            for index in range(orders):
                due = start + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                client = await idle.get()
                if time.perf_counter() - due > 0.01:
                    run.late += 1
                group.create_task(send(client, index))

    async def drain(self, run: Run) -> None:
        while self._watcher.pending:
            if self._watcher.stalled(self._stall_timeout):
                run.stalled = True
                return
            await asyncio.sleep(self._watcher.interval / 2)


@dataclass
class Outcome:
    run: Run
    shipped: list[tuple[float, float]]
    ended: Counter[str]
    stuck: Counter[str]
    reasons: Counter[str]

    @property
    def created(self) -> int:
        return len(self.run.create_seconds)

    @property
    def last_shipped(self) -> float:
        return max((seen for _, seen in self.shipped), default=math.nan)

    @property
    def orders_per_second(self) -> float:
        if not self.shipped:
            return 0.0
        return len(self.shipped) / (self.last_shipped - self.run.first_send)

    @property
    def steady_orders_per_second(self) -> float:
        """SHIPPED rate between the 10th and the 90th percentile of SHIPPED times."""
        seen = sorted(s for _, s in self.shipped)
        if len(seen) < 20:
            return math.nan
        low, high = len(seen) // 10, len(seen) * 9 // 10
        return (high - low) / max(seen[high] - seen[low], 1e-9)

    @property
    def create_rate(self) -> float:
        if not self.created:
            return 0.0
        return self.created / (self.run.last_response - self.run.first_send)

    @property
    def latencies(self) -> list[float]:
        return [seen - created for created, seen in self.shipped]


async def outcome_of(run: Run, watcher: Watcher, conn: AsyncConnection[Any]) -> Outcome:
    shipped = [(c, s) for status, c, s in watcher.done.values() if status in SHIPPED]
    ended = Counter(status for status, _, _ in watcher.done.values() if status not in SHIPPED)
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT status, status_reason FROM orders.orders WHERE order_id = ANY(%s::uuid[])"
        " AND status <> ALL(%s)",
        (run.order_ids, list(SHIPPED)),
    )
    stuck: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for status, reason in await cursor.fetchall():
        if status in TERMINAL:
            reasons[f"{status}: {reason}"] += 1
        else:
            stuck[status] += 1
    return Outcome(run, shipped, ended, stuck, reasons)


def print_outcome(outcome: Outcome) -> None:
    run = outcome.run
    print(
        f"  creates   {outcome.created} answered 200 of {run.sent} sent, "
        f"{outcome.create_rate:7.1f} requests/s; create call {latency_line(run.create_seconds)}"
    )
    if run.errors:
        print(f"  errors    {dict(run.errors)}; first: {run.first_error}")
    if run.late:
        print(f"  late      {run.late} sends waited > 10 ms for one of the request slots")
    print(
        f"  SHIPPED   {len(outcome.shipped)} orders, {outcome.orders_per_second:7.1f} orders/s"
        " from first create to last SHIPPED"
        f" (steady middle 80%: {outcome.steady_orders_per_second:7.1f} orders/s)"
    )
    print(f"  create→SHIPPED {latency_line(outcome.latencies)}")
    ended = sum(outcome.ended.values()) + sum(outcome.reasons.values())
    print(
        f"  FAILED/CANCELLED {ended} (should be 0)"
        + (f": {dict(outcome.reasons.most_common(3))}" if outcome.reasons else "")
    )
    if outcome.stuck or run.stalled:
        print(
            f"  NOT FINISHED {dict(outcome.stuck)}"
            + (" (no progress within --stall-timeout)" if run.stalled else "")
        )


# ---------------------------------------------------------------- server-side trace


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


async def _existing_tables(conn: AsyncConnection[Any], table: str) -> list[str]:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = %s AND table_schema = ANY(%s) ORDER BY table_schema",
        (table, list(SERVICE_SCHEMAS)),
    )
    return [str(row[0]) for row in await cursor.fetchall()]


async def print_trace(conn: AsyncConnection[Any], order_ids: Sequence[str]) -> float:
    """Where the time goes, from the stack's own timestamps; returns events per order."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT o.order_id::text, o.created_at, h.status, h.occurred_at"
        " FROM orders.orders o JOIN orders.status_history h USING (order_id)"
        " WHERE o.order_id = ANY(%s::uuid[])",
        (list(order_ids),),
    )
    history: dict[str, dict[str, datetime]] = defaultdict(dict)
    for order_id, created_at, status, occurred_at in await cursor.fetchall():
        history[order_id].setdefault("PENDING", created_at)
        history[order_id][status] = occurred_at
    print("  server clock, status_history.occurred_at (stamped by the writer before commit):")
    for earlier, later in itertools.pairwise(STATUS_HOPS):
        hops = [_seconds(h.get(later), h.get(earlier)) for h in history.values()]
        print(f"    {earlier:>9} → {later:<9} {latency_line(g for g in hops if g is not None)}")

    keys = list(order_ids)
    events: dict[str, tuple[str, datetime, datetime | None]] = {}
    for schema in await _existing_tables(conn, "outbox"):
        await cursor.execute(
            f"SELECT event_id::text, event_type, occurred_at, published_at FROM {schema}.outbox"
            " WHERE message_key = ANY(%s)",
            (keys,),
        )
        for event_id, event_type, occurred_at, published_at in await cursor.fetchall():
            events[event_id] = (str(event_type).rpartition(".")[2], occurred_at, published_at)
    by_type: dict[str, list[float]] = defaultdict(list)
    for name, occurred_at, published_at in events.values():
        gap = _seconds(published_at, occurred_at)
        if gap is not None:
            by_type[name].append(gap)
    print("  relay: outbox occurred_at → published_at (after the broker's ack):")
    for name in sorted(by_type, key=lambda n: -len(by_type[n])):
        print(f"    {name:<20} {latency_line(by_type[name])}")

    deliveries: dict[tuple[str, str], list[float]] = defaultdict(list)
    for schema in await _existing_tables(conn, "inbox"):
        await cursor.execute(
            f"SELECT consumer_group, event_id::text, processed_at FROM {schema}.inbox"
            " WHERE event_id = ANY(%s::uuid[])",
            (list(events),),
        )
        for group, event_id, processed_at in await cursor.fetchall():
            name, _, published_at = events[event_id]
            gap = _seconds(processed_at, published_at)
            if gap is not None:
                deliveries[(name, str(group).rpartition(".")[2])].append(gap)
    print("  delivery: published_at → consumer's inbox row (its transaction's start):")
    for (name, group), gaps in sorted(deliveries.items(), key=lambda item: -len(item[1])):
        print(f"    {name + ' → ' + group:<48} {latency_line(gaps)}")
    return len(events) / max(len(order_ids), 1)


async def database_commits(conn: AsyncConnection[Any]) -> int:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- raw Kafka round trip


@dataclass(frozen=True)
class KafkaResult:
    events: int
    seconds: float
    latencies: list[float]
    cpu: CpuUsage

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def order_created(order_id: str, products: Sequence[str]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "user_id": "bench-user",
        "items": [
            {"product_id": products[0], "quantity": 1, "unit_price_minor": PRODUCT_PRICE_MINOR},
            {"product_id": products[1], "quantity": 2, "unit_price_minor": PRODUCT_PRICE_MINOR},
        ],
        "total_minor": 3 * PRODUCT_PRICE_MINOR,
        "currency": "USD",
        "payment_method": "tok_visa",
        "shipping_address": SHIPPING_ADDRESS,
        "created_at": datetime.now(UTC),
        "version": 1,
    }


def encoded_order_created(
    codec: EventCodec, products: Sequence[str], order_id: str | None = None
) -> tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]:
    """Key, single-object Avro value and CloudEvents headers, as the outbox would store them."""
    order_id = order_id or str(uuid.uuid4())
    payload = codec.encode("OrderCreated", order_created(order_id, products))
    headers = cloudevent_headers(
        event_id=uuid.uuid4(),
        event_name="OrderCreated",
        source="/ordermesh/bench",
        time=datetime.now(UTC),
        subject=order_id,
    )
    return order_id.encode(), payload, [*kafka_headers(headers)]


def produce_all(
    producer: Producer,
    topic: str,
    encode: Callable[[], tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]],
    events: int,
    *,
    rate: float | None,
    sent: dict[bytes, float],
) -> None:
    """Encode and produce ``events`` at ``rate``/s (or flat out), noting each send time."""
    started = time.perf_counter()
    for index in range(events):
        if rate is not None:
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        key, payload, headers = encode()
        sent[key] = time.perf_counter()
        while True:
            try:
                producer.produce(topic, payload, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(30)


def kafka_round_trip(
    *,
    bootstrap: str,
    codec: EventCodec,
    topic: str,
    events: int,
    rate: float | None,
    products: Sequence[str],
) -> tuple[int, float, list[float]]:
    """Produce ``events`` OrderCreated (at ``rate``/s, or flat out) and consume them back.

    The consumer polls like the messaging package's EventConsumer: block for one message,
    then take what else is already fetched. One untimed message first settles metadata and fetching.
    """
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    ready, received = threading.Event(), threading.Event()
    finished_at = [0.0]
    deadline = time.perf_counter() + 60 + events / 1000
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(KAFKA_PARTITIONS)])

    def consume() -> None:
        while len(latencies) < events and time.perf_counter() < deadline:
            first = consumer.poll(0.1)
            if first is None:
                continue
            for message in [first, *consumer.consume(499, 0)]:
                if message.error() is not None:
                    continue
                envelope = codec.envelope_from(header_map(message.headers()), message.value())
                now = time.perf_counter()
                started = sent.get(message.key() or b"")
                if started is not None and envelope.record["order_id"]:
                    latencies.append(now - started)
                ready.set()
        finished_at[0] = time.perf_counter()
        received.set()

    reader = threading.Thread(target=consume, name="bench-consumer")
    reader.start()
    producer = Producer(producer_config_with_defaults({"bootstrap.servers": bootstrap}))
    try:
        key, payload, headers = encoded_order_created(codec, products)
        producer.produce(topic, payload, key=key, headers=headers)
        producer.flush(30)
        ready.wait(30)
        started = time.perf_counter()
        produce_all(
            producer,
            topic,
            functools.partial(encoded_order_created, codec, products),
            events,
            rate=rate,
            sent=sent,
        )
        received.wait(max(0.0, deadline - time.perf_counter()))
    finally:
        reader.join()
        consumer.close()
    return len(latencies), finished_at[0] - started, latencies


def kafka_chain(
    *,
    bootstrap: str,
    codec: EventCodec,
    topic: str,
    chains: int,
    rate: float,
    products: Sequence[str],
) -> list[float]:
    """``chains`` chains of CHAIN_HOPS events, started at ``rate``/s; returns each chain's
    time from its first produce to the decode of its last event.

    A consumer thread plays every worker at once: it decodes each event it polls (as
    EventConsumer does) and answers it with the chain's next event, encoded afresh and
    produced with the relay's producer settings, so each hop costs what a hop of the
    pipeline costs in Kafka and the codec, and nothing else. One untimed chain goes first.
    """
    started: dict[bytes, float] = {}
    latencies: list[float] = []
    finished, stop = threading.Event(), threading.Event()
    producer = Producer(producer_config_with_defaults({"bootstrap.servers": bootstrap}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.chain",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(KAFKA_PARTITIONS)])

    def send(key: bytes, hop: int) -> None:
        _, payload, headers = encoded_order_created(codec, products, key.decode())
        producer.produce(topic, payload, key=key, headers=[*headers, ("bench_hop", str(hop))])
        producer.poll(0)

    def answer() -> None:
        while not stop.is_set():
            first = consumer.poll(0.1)
            if first is None:
                continue
            for message in [first, *consumer.consume(499, 0)]:
                if message.error() is not None:
                    continue
                attributes = header_map(message.headers())
                codec.envelope_from(attributes, message.value())
                key = message.key() or b""
                hop = int(attributes.get("bench_hop", "1"))
                if hop < CHAIN_HOPS:
                    send(key, hop + 1)
                    continue
                began = started.pop(key, None)
                if began is not None:
                    latencies.append(time.perf_counter() - began)
                    if len(latencies) > chains:
                        finished.set()

    worker = threading.Thread(target=answer, name="bench-chain")
    worker.start()
    try:
        start = time.perf_counter()
        for index in range(chains + 1):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = str(uuid.uuid4()).encode()
            started[key] = time.perf_counter()
            send(key, 1)
        finished.wait(30 + chains / rate)
    finally:
        stop.set()
        worker.join()
        producer.flush(10)
        consumer.close()
    return latencies[1:]


async def run_kafka(
    *,
    bootstrap: str,
    codec: EventCodec,
    sampler: CpuSampler,
    suffix: str,
    events: int,
    chain_rate: float,
    chains: int,
    products: Sequence[str],
) -> tuple[KafkaResult, list[float]]:
    """The flat-out round trip (rate and CPU per event) and the six-hop chains (latency)."""
    flat_topic, chain_topic = (f"bench.pipeline.{suffix}.{mode}" for mode in ("flat", "chain"))
    await asyncio.to_thread(
        ensure_topics,
        bootstrap,
        [TopicSpec(t, KAFKA_PARTITIONS) for t in (flat_topic, chain_topic)],
    )
    try:
        before = await sampler.snapshot()
        done, seconds, latencies = await asyncio.to_thread(
            functools.partial(
                kafka_round_trip,
                bootstrap=bootstrap,
                codec=codec,
                topic=flat_topic,
                events=events,
                rate=None,
                products=products,
            )
        )
        flat = KafkaResult(
            done, seconds, latencies, CpuSampler.usage(before, await sampler.snapshot())
        )
        chained = await asyncio.to_thread(
            functools.partial(
                kafka_chain,
                bootstrap=bootstrap,
                codec=codec,
                topic=chain_topic,
                chains=chains,
                rate=chain_rate,
                products=products,
            )
        )
    finally:
        await asyncio.to_thread(delete_topics, bootstrap, [flat_topic, chain_topic])
    return flat, chained


# ---------------------------------------------------------------- what observing costs


def set_environment(values: Mapping[str, str | None]) -> None:
    """Set each variable of this process's environment (None: remove it)."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def restart_stack_apps(configuration: str) -> None:
    """Restart the stack's app processes with this process's environment and wait until
    Envoy answers /health; devstack's own lines are summed up in one."""
    print(f"\nrestarting the stack's app processes: {configuration} ...", flush=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        names = await asyncio.to_thread(restart_apps)
    seconds = time.perf_counter() - started
    print(f"  {len(names)} processes restarted in {seconds:.1f} s", flush=True)


def metrics_ports_open(ports: Ports) -> int:
    """How many of the app processes serve on their metrics port."""
    return sum(procs.port_in_use(metrics_port(p.name, ports)) for p in APP_PROCESSES)


def round_line(number: int, result: ObserveRound) -> str:
    return (
        f"round {number} {result.mode.upper():<3} {result.orders_per_second:7.1f} orders/s,"
        f" stack CPU {result.stack_cpu_per_order * 1000:6.2f} ms/order,"
        f" {result.shipped} SHIPPED; /metrics served by {result.metrics_served}"
        f" of {len(APP_PROCESSES)} processes"
    )


@dataclass(frozen=True)
class Tracing:
    """What the ON rounds traced to: the URL their processes got, and the services Zipkin
    has spans from (None when it does not answer)."""

    url: str
    services: list[str] | None
    sample_ratio: float = 1.0

    @property
    def problem(self) -> str | None:
        """Why the ON rounds did not measure tracing, or None when they did."""
        if not self.url:
            return f"tracing is not configured (no {ZIPKIN_URL_ENV} in the stack's environment)"
        if self.services is None:
            return f"Zipkin does not answer at {self.url}"
        if not self.services:
            return f"Zipkin at {self.url} has spans from no service"
        return None


def zipkin_url() -> str:
    """The ORDERMESH_ZIPKIN_URL an ON round's processes get."""
    return app_env(Ports.from_env()).get(ZIPKIN_URL_ENV, "").strip()


async def zipkin_services(url: str) -> list[str] | None:
    """The services Zipkin has spans from, asked at the API beside ``url`` (.../spans)."""
    try:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            response = await client.get(urllib.parse.urljoin(url, "services"))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return [str(name) for name in response.json()]


def print_observe(rounds: Sequence[ObserveRound], tracing: Tracing) -> None:
    cost = ObserveCost.of(rounds)
    print(f"\n== observability cost: {len(rounds)} closed-loop rounds, ON and OFF in turns")
    for number, result in enumerate(rounds, 1):
        print(f"  {round_line(number, result)}")
    traced = (
        f"spans to {tracing.url} at {tracing.sample_ratio:.0%} sampling"
        if tracing.url
        else "no tracing"
    )
    for mode, values, cpu, what in (
        (OBSERVE_ON, cost.on, cost.cpu_on, f"/metrics served and scraped, {traced}"),
        (OBSERVE_OFF, cost.off, cost.cpu_off, "no /metrics, no spans"),
    ):
        mean = statistics.fmean(values) if values else math.nan
        print(
            f"  {mode.upper():<3} ({what}): median {_median(values):.1f}, mean {mean:.1f}"
            f" orders/s over {len(values)} rounds; stack CPU median {cpu * 1000:.2f} ms/order"
        )
    print(
        f"  off/on {cost.ratio:.3f}; throughput cost = 1 - on/off = {cost.cost:.1%}"
        f" (of the means: {cost.mean_cost:.1%}); stack CPU per order on/off"
        f" {_divided(cost.cpu_on, cost.cpu_off):.3f}"
    )
    print_observe_cpu(rounds)
    if tracing.services:
        print(f"  Zipkin has spans from: {', '.join(sorted(tracing.services))}")
    if tracing.problem is not None:
        print(f"  NOTE: {tracing.problem}, so these figures do not measure tracing")
    unswitched = [
        number
        for number, result in enumerate(rounds, 1)
        if result.metrics_served != (len(APP_PROCESSES) if result.mode == OBSERVE_ON else 0)
    ]
    if unswitched:
        print(f"  NOTE: /metrics did not follow the mode in rounds {unswitched}")


def observe_cpu_by_process(
    rounds: Sequence[ObserveRound],
) -> list[tuple[str, float, float]]:
    """(process, median ms/order ON, median ms/order OFF), the biggest difference first."""
    names = sorted({name for r in rounds for name in r.process_cpu_per_order})

    def median_ms(name: str, mode: str) -> float:
        values = [r.process_cpu_per_order.get(name, 0.0) for r in rounds if r.mode == mode]
        return _median(values) * 1000 if values else math.nan

    table = [(name, median_ms(name, OBSERVE_ON), median_ms(name, OBSERVE_OFF)) for name in names]
    return sorted(table, key=lambda row: -(row[1] - row[2]))


def print_observe_cpu(rounds: Sequence[ObserveRound]) -> None:
    table = observe_cpu_by_process(rounds)
    if not table:
        return
    print(f"    {'where the CPU goes (median ms/order)':<40} {'ON':>7} {'OFF':>7} {'ON-OFF':>7}")
    for name, on, off in table:
        print(f"    {name:<40} {on:7.2f} {off:7.2f} {on - off:+7.2f}")
    # The trace store shares these cores here; where it runs on a host of its own, this is
    # what the stack itself spends.
    stack_on = sum(on for name, on, _ in table if name != "zipkin")
    stack_off = sum(off for name, _, off in table if name != "zipkin")
    print(
        f"    without the trace store (zipkin): {stack_on:.2f} against {stack_off:.2f} ms/order,"
        f" on/off {_divided(stack_on, stack_off):.3f}"
    )


def print_observe_goal(rounds: Sequence[ObserveRound], tracing: Tracing) -> None:
    cost = ObserveCost.of(rounds)
    goal = (
        f"≤ {GOAL_OBSERVE_COST:.0%} lower throughput with metrics and tracing on at 100% sampling"
    )
    if tracing.problem is not None:
        print(f"  n/a   {goal}: not judged, {tracing.problem}; ON vs OFF: {cost.cost:.1%}")
    elif tracing.sample_ratio != 1.0:
        print(
            f"  n/a   {goal}: not judged, this run sampled {tracing.sample_ratio:.0%};"
            f" ON vs OFF: {cost.cost:.1%}"
        )
    elif not cost.on or not cost.off:
        print(f"  n/a   {goal}: not judged, a mode has no round")
    else:
        print(
            f"  {verdict(cost.met)}  {goal}: {cost.cost:.1%} (medians {cost.median_on:.1f} on,"
            f" {cost.median_off:.1f} off orders/s)"
        )


# ---------------------------------------------------------------- orchestration


async def prepare_products(
    conn: AsyncConnection[Any], prefix: str = PRODUCT_PREFIX, count: int = PRODUCT_COUNT
) -> list[str]:
    """``count`` bench products named ``<prefix>NN`` with a huge stock (upserted, active)."""
    products = [f"{prefix}{i:02d}" for i in range(count)]
    await conn.execute(
        "INSERT INTO inventory.products"
        " (product_id, name, description, unit_price_minor, currency, stock, active)"
        " SELECT id, 'Bench item ' || id, 'pipeline bench load, not for sale', %s, 'USD', %s,"
        " true FROM unnest(%s::text[]) AS id"
        " ON CONFLICT (product_id) DO UPDATE SET stock = excluded.stock, active = true,"
        " unit_price_minor = excluded.unit_price_minor, updated_at = now()",
        (PRODUCT_PRICE_MINOR, PRODUCT_STOCK, products),
    )
    return products


async def retire_products(conn: AsyncConnection[Any], products: Sequence[str]) -> None:
    """Hide the bench products from the public catalog again."""
    await conn.execute(
        "UPDATE inventory.products SET active = false, updated_at = now()"
        " WHERE product_id = ANY(%s)",
        (list(products),),
    )


async def bench_user(client: httpx.AsyncClient, conn: AsyncConnection[Any] | None = None) -> str:
    """A new account's token; with `conn`, in the enterprise tier (no rate limit: a free
    user may create 20 orders a minute), set before the login so the token carries it."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "Pipeline Bench", "phone": ""},
    )
    if registered.status_code != 200:
        raise BenchError(f"register → {registered.status_code}: {registered.text[:300]}")
    if conn is not None:
        await conn.execute("UPDATE auth.users SET tier = 'enterprise' WHERE email = %s", (email,))
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    if login.status_code != 200:
        raise BenchError(f"login → {login.status_code}: {login.text[:300]}")
    return str(login.json()["access_token"])


@dataclass
class PhaseResult:
    outcome: Outcome
    cpu: CpuUsage
    commits: int
    events_per_order: float


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        pipeline: Pipeline,
        watcher: Watcher,
        sampler: CpuSampler,
        conn: AsyncConnection[Any],
    ) -> None:
        self.args = args
        self.pipeline = pipeline
        self.watcher = watcher
        self.sampler = sampler
        self.conn = conn

    async def phase(
        self,
        title: str,
        drive: Callable[[Run], Awaitable[None]],
        profiler: Profiler | None = None,
        *,
        watch_interval: float = WATCH_INTERVAL,
    ) -> PhaseResult:
        commits_before = await database_commits(self.conn)
        outcome, cpu, stacks = await self.measure(title, drive, profiler, watch_interval)
        orders = max(len(outcome.shipped), 1)
        print_cpu(cpu, orders)
        events_per_order = await print_trace(self.conn, outcome.run.order_ids)
        await asyncio.sleep(1.0)  # backends report their statistics at most once a second
        polls = self.watcher.queries
        commits = await database_commits(self.conn) - commits_before - polls
        stack_cpu = stack_seconds(cpu)
        print(
            f"  cost per SHIPPED order: {events_per_order:.1f} events (outbox rows),"
            f" ≈{commits / orders:.1f} Postgres commits (pg_stat_database less the watcher's"
            f" {polls} polls), {stack_cpu * 1000 / orders:.1f} ms CPU in the stack's processes"
        )
        poll_ms = self.watcher.query_seconds * 1000 / max(polls, 1)
        print(f"  watcher: {polls} bulk polls, {poll_ms:.1f} ms each on average (client side)")
        if stacks:
            print_profile(stacks)
        return PhaseResult(outcome, cpu, commits, events_per_order)

    async def measure(
        self,
        title: str,
        drive: Callable[[Run], Awaitable[None]],
        profiler: Profiler | None = None,
        watch_interval: float = WATCH_INTERVAL,
    ) -> tuple[Outcome, CpuUsage, dict[str, Counter[tuple[tuple[str, str], ...]]]]:
        """Run ``drive`` until its orders are done; print and return the outcome, with the
        CPU used meanwhile and the profiler's stacks."""
        print(f"\n== {title}", flush=True)
        self.watcher.reset()
        self.watcher.interval = watch_interval
        run = Run(title)
        stop = asyncio.Event()
        before = await self.sampler.snapshot()
        if profiler is not None:
            await profiler.start()
        watching = asyncio.create_task(self.watcher.run(stop))
        try:
            await drive(run)
            await self.pipeline.drain(run)
        finally:
            stop.set()
            await watching
        cpu = CpuSampler.usage(before, await self.sampler.snapshot())
        stacks = await profiler.stop() if profiler is not None else {}
        outcome = await outcome_of(run, self.watcher, self.conn)
        print_outcome(outcome)
        return outcome, cpu, stacks

    async def observe(self) -> list[ObserveRound]:
        """The observe phase: closed-loop rounds with observability ON and OFF in turns, the
        app processes restarted into each mode; the stack's own configuration after."""
        args, ports = self.args, Ports.from_env()
        schedule = observe_schedule(args.observe_rounds)
        keys = {key for overrides in OBSERVE_ENVIRONMENT.values() for key in overrides}
        original = {key: os.environ.get(key) for key in keys}
        rounds: list[ObserveRound] = []
        try:
            for number, mode in enumerate(schedule, 1):
                set_environment(
                    {**original, **observe_environment(mode, args.observe_sample_ratio)}
                )
                await restart_stack_apps(f"observability {mode.upper()}")
                await self.warm_up()
                outcome, cpu, _ = await self.measure(
                    f"observe round {number}/{len(schedule)}: metrics and tracing"
                    f" {mode.upper()}, closed loop, {args.orders} orders, {args.concurrency}"
                    f" connections, backlog ≤ {args.backlog or 'unbounded'}",
                    lambda r: self.pipeline.closed_loop(r, args.orders, args.backlog),
                )
                shipped = len(outcome.shipped)
                result = ObserveRound(
                    mode,
                    outcome.orders_per_second,
                    stack_seconds(cpu) / max(shipped, 1),
                    shipped,
                    metrics_ports_open(ports),
                    {
                        name: seconds / max(shipped, 1)
                        for name, seconds in cpu.processes.items()
                        if name != "bench"
                    },
                )
                print(f"  {round_line(number, result)}", flush=True)
                rounds.append(result)
        finally:
            set_environment(original)
            await restart_stack_apps("the stack's own configuration (this shell's environment)")
        return rounds

    async def warm_up(self) -> None:
        count = self.args.warmup
        if not count:
            return
        print(f"warm-up: {count} orders, untimed ...", flush=True)
        self.watcher.reset()
        run = Run("warm-up")
        stop = asyncio.Event()
        watching = asyncio.create_task(self.watcher.run(stop))
        try:
            await self.pipeline.closed_loop(run, count, 0)
            await self.pipeline.drain(run)
        finally:
            stop.set()
            await watching
        outcome = await outcome_of(run, self.watcher, self.conn)
        if not outcome.shipped or run.errors:
            print_outcome(outcome)
            raise BenchError(
                "warm-up orders did not reach SHIPPED: is every worker of the pipeline running?"
            )

    async def run_phases(
        self, phases: set[str], profiler: Profiler | None, products: Sequence[str]
    ) -> None:
        args, pipeline = self.args, self.pipeline
        measured = Measured()
        if "throughput" in phases:
            measured.throughput = await self.phase(
                f"throughput: closed loop, {args.orders} orders, {args.concurrency}"
                f" connections, backlog ≤ {args.backlog or 'unbounded'} orders not yet SHIPPED",
                lambda r: pipeline.closed_loop(r, args.orders, args.backlog),
                profiler,
            )
        if "half" in phases:
            if measured.throughput is not None:
                measured.half_rate = measured.throughput.outcome.orders_per_second / 2
            else:
                measured.half_rate = args.rate
            rate = measured.half_rate
            orders = max(50, int(rate * args.seconds))
            measured.half = await self.phase(
                f"latency at half the maximum: open loop at {rate:.0f} orders/s, {orders}"
                f" orders, ≤ {args.concurrency} requests in flight",
                lambda r: pipeline.open_loop(r, orders, rate),
                watch_interval=LATENCY_WATCH_INTERVAL,
            )
        if "low" in phases:
            orders = max(20, int(args.low_rate * args.seconds))
            measured.low = await self.phase(
                f"latency at low load: open loop at {args.low_rate:.0f} orders/s, {orders} orders",
                lambda r: pipeline.open_loop(r, orders, args.low_rate),
                watch_interval=LATENCY_WATCH_INTERVAL,
            )
        if "kafka" in phases:
            measured.flat, measured.chains = await run_kafka(
                bootstrap=kafka.bootstrap(),
                codec=EventCodec.from_directory(SCHEMA_DIR),
                sampler=self.sampler,
                suffix=uuid.uuid4().hex[:10],
                events=args.kafka_events,
                chain_rate=args.low_rate,
                chains=max(20, int(args.low_rate * args.seconds)),
                products=products,
            )
            print_kafka(measured)
        if "observe" in phases:
            ratio = args.observe_sample_ratio
            measured.tracing = Tracing(zipkin_url(), None, ratio)
            measured.observe = await self.observe()
            if measured.tracing.url:
                measured.tracing = Tracing(
                    measured.tracing.url, await zipkin_services(measured.tracing.url), ratio
                )
            print_observe(measured.observe, measured.tracing)
        print_goals(measured, args.low_rate)
        if args.plot is not None:
            plot(args.plot, measured)


@dataclass
class Measured:
    throughput: PhaseResult | None = None
    half_rate: float = math.nan
    half: PhaseResult | None = None
    low: PhaseResult | None = None
    flat: KafkaResult | None = None
    chains: list[float] = field(default_factory=list)
    observe: list[ObserveRound] = field(default_factory=list)
    tracing: Tracing = Tracing("", None)

    @property
    def events_per_order(self) -> float:
        for result in (self.throughput, self.half, self.low):
            if result is not None and result.events_per_order:
                return result.events_per_order
        return float(EVENTS_PER_ORDER_GUESS)

    @property
    def raw_cpu_per_event(self) -> float:
        """CPU seconds per event of the flat-out raw round trip: this process and the broker."""
        if self.flat is None:
            return math.nan
        cpu = self.flat.cpu.processes
        return (cpu.get("bench", 0.0) + cpu.get(kafka.NAME, 0.0)) / max(self.flat.events, 1)


def stack_seconds(cpu: CpuUsage) -> float:
    """CPU seconds of the stack's processes (all but this bench)."""
    return sum(s for name, s in cpu.processes.items() if name != "bench")


def stack_cpu_per_order(result: PhaseResult) -> float:
    return stack_seconds(result.cpu) / max(len(result.outcome.shipped), 1)


def print_kafka(measured: Measured) -> None:
    flat = measured.flat
    if flat is None:
        return
    print("\n== raw Kafka, same Avro events (encode → produce → consume → decode, this process)")
    print(
        f"  flat out: {flat.events} events in {flat.seconds:.2f} s, {flat.rate:8.0f} events/s;"
        f" {measured.raw_cpu_per_event * 1e6:.0f} µs CPU/event (bench + broker);"
        f" round trip {latency_line(flat.latencies)}"
    )
    print(f"  {CHAIN_HOPS}-hop chains: {latency_line(measured.chains)}")
    events = measured.events_per_order
    raw_order = measured.raw_cpu_per_event * events
    for result in (measured.throughput, measured.half, measured.low):
        if result is None:
            continue
        outcome = result.outcome
        rate = outcome.orders_per_second
        cpu = stack_cpu_per_order(result)
        print(
            f"  {outcome.run.name.split(':')[0]}: {rate:.1f} orders/s x {events:.1f} events"
            f" = {rate * events:.0f} events/s, {rate * events / max(flat.rate, 1e-9):.1%} of"
            f" the raw rate; stack CPU {cpu * 1000:.2f} ms/order ="
            f" {cpu / max(raw_order, 1e-12):.1f}x the raw {raw_order * 1000:.2f} ms"
        )


def print_goals(measured: Measured, low_rate: float) -> None:
    print("\n== goals (this run, against its own raw Kafka phase)")
    throughput, half, low = measured.throughput, measured.half, measured.low
    if throughput is not None and measured.flat is not None:
        cpu = stack_cpu_per_order(throughput)
        raw = measured.raw_cpu_per_event * measured.events_per_order
        ratio = cpu / max(raw, 1e-12)
        print(
            f"  {verdict(ratio <= GOAL_CPU_RATIO)}  stack CPU per SHIPPED order"
            f" ≤ {GOAL_CPU_RATIO:.0f}x the raw round trip of its"
            f" {measured.events_per_order:.1f} events: {cpu * 1000:.2f} ms vs"
            f" {raw * 1000:.2f} ms = {ratio:.1f}x"
        )
    if throughput is not None:
        sustained = throughput.outcome.orders_per_second
        print(
            f"  {verdict(sustained >= GOAL_ORDERS_PER_SECOND)}  sustained throughput"
            f" ≥ {GOAL_ORDERS_PER_SECOND:.0f} orders/s: {sustained:.1f} orders/s"
        )
    if low is not None:
        ordered = sorted(low.outcome.latencies)
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        chain = percentile(sorted(measured.chains), 50)
        kept_pace = low.outcome.orders_per_second >= 0.9 * low_rate
        if measured.chains:
            print(
                f"  {verdict(kept_pace and p50 <= GOAL_LOW_P50_RATIO * chain)}"
                f"  create→SHIPPED p50 at {low_rate:.0f} orders/s ≤ {GOAL_LOW_P50_RATIO:.0f}x"
                f" the raw {CHAIN_HOPS}-hop chain: {p50 * 1000:.1f} ms vs {chain * 1000:.1f} ms"
                f" = {p50 / max(chain, 1e-9):.2f}x"
            )
        print(
            f"  {verdict(kept_pace and p99 < GOAL_LOW_P99_SECONDS)}  create→SHIPPED p99 at"
            f" {low_rate:.0f} orders/s < {GOAL_LOW_P99_SECONDS * 1000:.0f} ms:"
            f" {p99 * 1000:.1f} ms"
        )
    if half is not None:
        p99 = percentile(sorted(half.outcome.latencies), 99)
        achieved = half.outcome.orders_per_second
        kept_up = achieved >= 0.9 * measured.half_rate
        print(
            f"  {verdict(kept_up and p99 < GOAL_HALF_P99_SECONDS)}  create→SHIPPED p99"
            f" < {GOAL_HALF_P99_SECONDS * 1000:.0f} ms at half the maximum"
            f" ({measured.half_rate:.0f} orders/s offered, {achieved:.1f} achieved):"
            f" {p99 * 1000:.0f} ms"
        )
    if measured.observe:
        print_observe_goal(measured.observe, measured.tracing)


def plot(directory: Path, measured: Measured) -> None:
    """--plot: create→SHIPPED and create-call latency CDFs of the pipeline phases (with the
    raw Kafka round trip and six-hop chains when measured), per phase the creates answered
    and the orders SHIPPED per second over time, and the observe phase's rounds."""
    phases = {
        name: result
        for name, result in (
            ("throughput", measured.throughput),
            ("half", measured.half),
            ("low", measured.low),
        )
        if result is not None
    }
    shipped = {
        f"{name}: create→SHIPPED": [s * 1000 for s in result.outcome.latencies]
        for name, result in phases.items()
    }
    if measured.flat is not None:
        shipped["raw Kafka: round trip, flat out"] = [s * 1000 for s in measured.flat.latencies]
    if measured.chains:
        shipped[f"raw Kafka: {CHAIN_HOPS}-hop chain"] = [s * 1000 for s in measured.chains]
    written = [
        plots.latency_cdf(
            directory,
            "create-shipped-latency-cdf",
            "pipeline: create response → SHIPPED seen (client clock)",
            shipped,
        ),
        plots.latency_cdf(
            directory,
            "create-call-latency-cdf",
            "pipeline: POST /api/v1/orders through Envoy, request → 200 response",
            {
                name: [s * 1000 for s in result.outcome.run.create_seconds]
                for name, result in phases.items()
            },
        ),
    ]
    for name, result in phases.items():
        outcome = result.outcome
        written.append(
            plots.throughput(
                directory,
                f"{name}-orders-per-second",
                f"pipeline, {outcome.run.name.split(':')[0]}: orders over time",
                {
                    "create answered (orders that shipped)": [
                        created for created, _ in outcome.shipped
                    ],
                    "SHIPPED (first seen)": [seen for _, seen in outcome.shipped],
                },
                unit="orders",
                start=outcome.run.first_send,
            )
        )
    if measured.observe:
        written.extend(plot_observe(directory, measured.observe))
    plots.print_written(written)


def plot_observe(directory: Path, rounds: Sequence[ObserveRound]) -> list[Path | None]:
    """The observe phase: a bar per round, in the order run, then each mode's median, for
    the orders/s and for the stack's CPU per order."""
    cost = ObserveCost.of(rounds)

    def bars(
        figure: Callable[[ObserveRound], float], medians: tuple[float, float]
    ) -> dict[str, float]:
        return {
            **{f"round {n}: {r.mode.upper()}": figure(r) for n, r in enumerate(rounds, 1)},
            "median ON": medians[0],
            "median OFF": medians[1],
        }

    return [
        plots.bars(
            directory,
            "observe-orders-per-second",
            f"pipeline, observe: closed-loop throughput, observability ON vs OFF"
            f" (cost {cost.cost:.1%})",
            bars(lambda r: r.orders_per_second, (cost.median_on, cost.median_off)),
            xlabel="orders/s, first create → last SHIPPED",
        ),
        plots.bars(
            directory,
            "observe-cpu-per-order",
            "pipeline, observe: the stack's CPU per SHIPPED order, ON vs OFF",
            bars(lambda r: r.stack_cpu_per_order * 1000, (cost.cpu_on * 1000, cost.cpu_off * 1000)),
            xlabel="ms CPU per order (the stack's processes)",
        ),
    ]


async def run(args: argparse.Namespace) -> None:
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - {"throughput", "half", "low", "kafka", "observe"}
    if unknown:
        raise BenchError(f"unknown phases: {', '.join(sorted(unknown))}")
    base_url = f"http://{HOST}:{Ports.from_env().envoy}"
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False)
            )
            for _ in range(args.concurrency)
        ]
        health = await clients[0].get("/health")
        if health.status_code != 200:
            raise BenchError(f"the stack is not up: GET /health → {health.status_code}")
        conn, watcher_conn = [
            await stack.enter_async_context(
                await AsyncConnection.connect(
                    postgres.dsn(), autocommit=True, application_name=BENCH_APPLICATION
                )
            )
            for _ in range(2)
        ]
        products = await prepare_products(conn)
        stack.push_async_callback(retire_products, conn, products)
        watcher = Watcher(watcher_conn)
        pipeline = Pipeline(
            clients, await bench_user(clients[0], conn), watcher, products, args.stall_timeout
        )
        sampler = CpuSampler(conn)
        pids = sampler.stack_pids()
        print(
            "ordermesh pipeline bench: "
            + ", ".join(f"{name}={pid}" for name, pid in pids.items())
            + f"; {os.cpu_count()} cores; {args.orders} orders per phase,"
            f" {args.concurrency} HTTP/1.1 keep-alive connections"
        )
        print(
            "latency = create response → SHIPPED first seen by a bulk poll of orders.orders"
            f" every {WATCH_INTERVAL * 1000:.0f} ms in the throughput phase and"
            f" {LATENCY_WATCH_INTERVAL * 1000:.0f} ms in the latency phases (client clock;"
            " adds up to one interval)"
        )
        bench = Bench(args, pipeline, watcher, sampler, conn)
        await bench.warm_up()
        await bench.run_phases(phases, await make_profiler(args, pids), products)


async def make_profiler(args: argparse.Namespace, pids: Mapping[str, int]) -> Profiler | None:
    if not args.profile_workers:
        return None
    executable = shutil.which("py-spy")
    if executable is None:
        print("--profile-workers needs py-spy on PATH (pip install py-spy); not profiling")
        return None
    targets = {name: pid for name, pid in pids.items() if is_python(pid)}
    return Profiler(executable, targets, Path(tempfile.mkdtemp(prefix="bench-pyspy-")))


def main() -> None:
    if importlib.util.find_spec("sniffio") is None:
        # httpcore tries `import sniffio` on every request; without the package each failed
        # import searches sys.path again (a sixth of this process's CPU). A None entry in
        # sys.modules makes that import fail at once.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per pipeline phase")
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="open-loop orders/s of the half phase when the throughput phase is not run",
    )
    parser.add_argument("--low-rate", type=float, default=GOAL_LOW_RATE, help="low phase, orders/s")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="length of each open-loop phase"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="HTTP connections / requests in flight"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=600,
        help="closed loop: most orders created and not yet SHIPPED (0: unbounded)",
    )
    parser.add_argument(
        "--phases",
        default="throughput,half,low,kafka",
        help="any of throughput, half, low, kafka, observe (restarts the app processes)",
    )
    parser.add_argument(
        "--observe-rounds",
        type=int,
        default=3,
        help="observe phase: closed-loop rounds of --orders orders in each mode, ON and OFF",
    )
    parser.add_argument(
        "--observe-sample-ratio",
        type=float,
        default=1.0,
        help="observe phase: ORDERMESH_TRACE_SAMPLE_RATIO of the ON rounds (the goal is"
        " judged at 1.0 only)",
    )
    parser.add_argument("--warmup", type=int, default=100, help="untimed orders first")
    parser.add_argument("--kafka-events", type=int, default=20_000)
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="give up on a phase when no order finishes for this many seconds",
    )
    parser.add_argument(
        "--profile-workers",
        action="store_true",
        help="sample api, relay and workers with py-spy during the throughput phase",
    )
    plots.add_plot_argument(parser, "pipeline")
    args = parser.parse_args()
    if min(args.orders, args.concurrency, args.rate, args.low_rate, args.seconds) <= 0:
        parser.error("--orders, --concurrency, --rate, --low-rate and --seconds must be positive")
    if args.observe_rounds <= 0:
        parser.error("--observe-rounds must be positive")
    if not 0.0 <= args.observe_sample_ratio <= 1.0:
        parser.error("--observe-sample-ratio must be between 0 and 1")
    try:
        uvloop.run(run(args))
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")


if __name__ == "__main__":
    main()
