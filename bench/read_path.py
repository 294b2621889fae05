"""Read path bench: GetOrder beside a trivial call on the same gRPC server, driven by ghz.

    python bench/read_path.py [--duration 10] [--concurrency 32] [--orders 64] [--runs 3]

Talks to the running dev stack's gRPC port directly (not Envoy; start the stack with
`make up`). It signs in a bench user over gRPC, creates --orders orders of its own (two lines
of two bench products with a huge stock, which it upserts and afterwards hides from the
catalog again), then runs ghz (github.com/bojand/ghz) with --concurrency workers over as many
connections for --duration seconds per phase:

- trivial: grpc.health.v1.Health/Check. It is served by the same grpc.aio server and passes
  the same server interceptor hook, but no ordermesh wrapping (bounds, token, access log) and
  no database: the floor a request costs in this server (HTTP/2, the Python dispatch), so
  GetOrder/trivial says how much of a read is ordermesh's own work.
- GetOrder: the bench user's token and its orders in turn, through every interceptor.

Each phase has an untimed warm-up first, and phases alternate (trivial, GetOrder) in every
run, so both see the same machine; the best run of each is reported. Server CPU is the API
process's user + system time from /proc/<pid>/stat (pid from .run/pids/api.pid) across the
timed ghz run, divided by the requests it answered.

ghz is taken from PATH, else from ~/.cache/ordermesh/bin, else installed there with
`go install` at a pinned version. --port and --pid point the bench at another API server
sharing the stack (an older build, say), to compare two builds in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc
from ordermesh.common.v1 import common_pb2
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from psycopg import AsyncConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from devstack import gotools, postgres, procs
from devstack.paths import REPO_ROOT
from devstack.ports import HOST, Ports

DESCRIPTOR_SET = REPO_ROOT / "gen" / "descriptor" / "ordermesh.binpb"

TRIVIAL_CALL = "grpc.health.v1.Health/Check"
READ_CALL = "ordermesh.order.v1.OrderService/GetOrder"

# Issue 14: GetOrder served 812 requests/s at 32 concurrent clients before this bench's work,
# about 1.2 ms of server CPU per read. The goal is three times that.
BASELINE_READS_PER_SECOND = 812.0
GOAL_FACTOR = 3.0
GOAL_CPU_MS_PER_READ = 0.4

PRODUCT_IDS = ("bench-read-path-00", "bench-read-path-01")
PRODUCT_PRICE_MINOR = 1250
PRODUCT_STOCK = 1_000_000_000
PASSWORD = "bench read path password"
SHIPPING_ADDRESS = common_pb2.Address(
    street="1 Main St", city="Springfield", state="IL", zip="62701", country="US"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The stack is not in a state the bench can measure."""


# ---------------------------------------------------------------- ghz


def ghz_executable() -> str:
    """ghz from PATH or the cache, installed into the cache with `go install` if absent."""
    try:
        return gotools.executable(gotools.GHZ)
    except gotools.GoToolError as error:
        raise BenchError(str(error)) from None


def write_protoset(directory: Path) -> Path:
    """The contract's descriptor set plus grpc.health.v1 (whose wheel ships no .proto): two
    serialised FileDescriptorSets concatenated are one with both files."""
    health = descriptor_pb2.FileDescriptorSet(
        file=[descriptor_pb2.FileDescriptorProto.FromString(health_pb2.DESCRIPTOR.serialized_pb)]
    )
    path = directory / "read_path.protoset"
    path.write_bytes(DESCRIPTOR_SET.read_bytes() + health.SerializeToString())
    return path


@dataclass(frozen=True)
class GhzReport:
    count: int
    seconds: float
    rps: float
    percentiles_ms: dict[int, float]
    average_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]

    @classmethod
    def from_json(cls, report: Mapping[str, Any]) -> GhzReport:
        percentiles = {
            int(entry["percentage"]): entry["latency"] / 1e6
            for entry in report.get("latencyDistribution") or ()
        }
        return cls(
            count=int(report["count"]),
            seconds=report["total"] / 1e9,
            rps=float(report["rps"]),
            percentiles_ms=percentiles,
            average_ms=report["average"] / 1e6,
            statuses=dict(report.get("statusCodeDistribution") or {}),
            errors=dict(report.get("errorDistribution") or {}),
        )

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "OK")


@dataclass(frozen=True)
class Ghz:
    executable: str
    protoset: Path
    target: str
    concurrency: int

    async def run(
        self,
        call: str,
        seconds: float,
        *,
        data: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, str],
        directory: Path,
    ) -> tuple[GhzReport, float]:
        """One ghz run; its report and the CPU seconds ghz itself used."""
        data_file = directory / "data.json"
        data_file.write_text(json.dumps(list(data)))
        metadata_file = directory / "metadata.json"
        metadata_file.write_text(json.dumps(dict(metadata)))
        process = await asyncio.create_subprocess_exec(
            self.executable,
            "--insecure",
            "--protoset",
            str(self.protoset),
            "--call",
            call,
            "--concurrency",
            str(self.concurrency),
            "--connections",
            str(self.concurrency),
            "--duration",
            f"{seconds}s",
            # Calls still in flight when the time is up are awaited and counted, as their
            # server CPU is in the sample.
            "--duration-stop",
            "wait",
            "--data-file",
            str(data_file),
            "--metadata-file",
            str(metadata_file),
            "--disable-template-functions",
            "--format",
            "json",
            self.target,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        before = _children_cpu_seconds()
        out, err = await process.communicate()
        used = _children_cpu_seconds() - before
        if process.returncode != 0:
            raise BenchError(f"ghz {call} exited {process.returncode}: {err.decode()[-2000:]}")
        return GhzReport.from_json(json.loads(out)), used


def _children_cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


# ---------------------------------------------------------------- CPU from /proc


def process_cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# ---------------------------------------------------------------- optional py-spy profile


class Profiler:
    """py-spy sampling of the API process during the timed GetOrder phases (--profile)."""

    def __init__(self, executable: str, pid: int, output: Path) -> None:
        self._executable = executable
        self._pid = pid
        self._output = output
        self._running: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> None:
        self._running = await asyncio.create_subprocess_exec(
            self._executable,
            "record",
            "--pid",
            str(self._pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(self._output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def __aexit__(self, *exc_info: object) -> None:
        if self._running is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._running.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self._running.wait(), 30)
        except TimeoutError:
            self._running.kill()
            await self._running.wait()


def print_profile(path: Path, top: int) -> None:
    """The hottest functions of py-spy's raw output (``frame;frame;... count`` per line),
    by samples in the function itself and by samples with the function on the stack, over
    every thread of the API process that was busy."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            parts = frames.split(";")
            if not count.isdigit() or not frames:
                continue
            samples = int(count)
            total += samples
            stack = [_frame_name(frame) for frame in parts]
            own[stack[-1]] += samples
            for name in set(stack):
                inclusive[name] += samples
    print(f"\n== py-spy, API process during the last timed GetOrder phase: {total} samples")
    if not total:
        return
    for title, counts in (("in the function itself", own), ("on the stack", inclusive)):
        print(f"  {title}:")
        for name, samples in counts.most_common(top):
            print(f"    {samples / total:6.1%}  {name}")


def _frame_name(frame: str) -> str:
    """``function (path/to/file.py:line)`` as ``function (file.py)``."""
    function, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{function} ({'/'.join(Path(file).parts[-2:])})"


# ---------------------------------------------------------------- one phase


@dataclass(frozen=True)
class Phase:
    call: str
    report: GhzReport
    server_cpu: float
    ghz_cpu: float
    machine_busy: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu * 1000 / max(self.report.count, 1)

    def line(self) -> str:
        report = self.report
        p50 = report.percentiles_ms.get(50, math.nan)
        p99 = report.percentiles_ms.get(99, math.nan)
        failed = f"  {report.failed} not OK" if report.failed else ""
        return (
            f"{report.rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            f"  server CPU {self.cpu_ms_per_request:5.3f} ms/req"
            f" ({self.server_cpu / report.seconds:4.2f} cores)"
            f"  ghz {self.ghz_cpu / report.seconds:4.2f} cores"
            f"  machine {self.machine_busy:4.0%}  n={report.count}{failed}"
        )


async def measure(
    ghz: Ghz,
    call: str,
    seconds: float,
    *,
    api_pid: int,
    data: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, str],
    directory: Path,
) -> Phase:
    cpu_before = process_cpu_seconds(api_pid)
    busy_before = machine_busy_jiffies()
    report, ghz_cpu = await ghz.run(
        call, seconds, data=data, metadata=metadata, directory=directory
    )
    server_cpu = process_cpu_seconds(api_pid) - cpu_before
    busy_after = machine_busy_jiffies()
    total = max(busy_after[1] - busy_before[1], 1)
    if report.errors:
        first = next(iter(report.errors))
        print(f"    errors: {dict(Counter(report.errors).most_common(3))}; first: {first}")
    return Phase(call, report, server_cpu, ghz_cpu, (busy_after[0] - busy_before[0]) / total)


# ---------------------------------------------------------------- set-up over gRPC


async def prepare_product(conn: AsyncConnection[Any]) -> None:
    await conn.execute(
        "INSERT INTO inventory.products"
        " (product_id, name, description, unit_price_minor, currency, stock, active)"
        " SELECT id, 'Bench read item ' || id, 'read path bench, not for sale', %s, 'USD', %s,"
        " true FROM unnest(%s::text[]) AS id"
        " ON CONFLICT (product_id) DO UPDATE SET stock = excluded.stock, active = true,"
        " unit_price_minor = excluded.unit_price_minor, updated_at = now()",
        (PRODUCT_PRICE_MINOR, PRODUCT_STOCK, list(PRODUCT_IDS)),
    )


async def retire_product(conn: AsyncConnection[Any]) -> None:
    """Hide the bench product from the public catalog again."""
    await conn.execute(
        "UPDATE inventory.products SET active = false, updated_at = now()"
        " WHERE product_id = ANY(%s)",
        (list(PRODUCT_IDS),),
    )


async def bench_user(channel: grpc.aio.Channel) -> str:
    """A new user's access token."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    email = f"bench-read-{uuid.uuid4().hex[:12]}@example.com"
    await auth.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Read Bench")
    )
    login = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    return str(login.access_token)


async def create_orders(channel: grpc.aio.Channel, token: str, count: int) -> list[str]:
    orders = order_pb2_grpc.OrderServiceStub(channel)
    request = order_pb2.CreateOrderRequest(
        items=[
            order_pb2.CreateOrderItem(product_id=PRODUCT_IDS[0], quantity=1),
            order_pb2.CreateOrderItem(product_id=PRODUCT_IDS[1], quantity=2),
        ],
        shipping_address=SHIPPING_ADDRESS,
        payment_method="tok_visa",
    )
    metadata = (("authorization", f"Bearer {token}"),)
    created = await asyncio.gather(
        *(orders.CreateOrder(request, metadata=metadata) for _ in range(count))
    )
    return [response.order.order_id for response in created]


async def sign_in_and_order(target: str, orders: int) -> tuple[str, list[str]]:
    """A new user's token and ``orders`` orders of theirs. The channel is closed before ghz
    runs: forking this process while a gRPC channel is open makes gRPC log a warning."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 10)
        except TimeoutError:
            raise BenchError(f"no gRPC server answers on {target}") from None
        token = await bench_user(channel)
        return token, await create_orders(channel, token, orders)


# ---------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "HIT" if ok else "MISS"


def print_results(runs: Sequence[Mapping[str, Phase]]) -> None:
    best = {
        call: max((run[call] for run in runs), key=lambda phase: phase.report.rps)
        for call in (TRIVIAL_CALL, READ_CALL)
    }
    print(f"\n== best of {len(runs)} runs")
    for label, call in (("trivial (Health/Check)", TRIVIAL_CALL), ("GetOrder", READ_CALL)):
        print(f"  {label:<22} {best[call].line()}")
    trivial, read = best[TRIVIAL_CALL], best[READ_CALL]
    rps_ratio = read.report.rps / max(trivial.report.rps, 1e-9)
    cpu_ratio = read.cpu_ms_per_request / max(trivial.cpu_ms_per_request, 1e-9)
    print(
        f"  GetOrder/trivial: {rps_ratio:.2f}x the requests/s,"
        f" {cpu_ratio:.2f}x the server CPU per request"
    )
    goal_rps = BASELINE_READS_PER_SECOND * GOAL_FACTOR
    met = read.report.rps >= goal_rps and read.cpu_ms_per_request <= GOAL_CPU_MS_PER_READ
    print(
        f"\nGetOrder >= {GOAL_FACTOR:.0f}x the baseline {BASELINE_READS_PER_SECOND:.0f} req/s"
        f" (server CPU <= {GOAL_CPU_MS_PER_READ} ms/read): {verdict(met)}"
        f"  ({read.report.rps:.0f} req/s = {read.report.rps / BASELINE_READS_PER_SECOND:.2f}x;"
        f" {read.cpu_ms_per_request:.3f} ms CPU/read)"
    )


# ---------------------------------------------------------------- orchestration


def api_pid(given: int | None) -> int:
    pid = given if given is not None else procs.read_pid("api")
    if pid is None:
        raise BenchError("the API process is not running (start the stack with `make up`)")
    if not Path(f"/proc/{pid}/stat").exists():
        raise BenchError(f"no process {pid}")
    return pid


async def run(args: argparse.Namespace) -> None:
    target = f"{HOST}:{args.port or Ports.from_env().grpc}"
    pid = api_pid(args.pid)
    executable = ghz_executable()
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(
            await AsyncConnection.connect(
                postgres.dsn(), autocommit=True, application_name="ordermesh-bench"
            )
        )
        await prepare_product(conn)
        stack.push_async_callback(retire_product, conn)
        token, order_ids = await sign_in_and_order(target, args.orders)
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-read-")))
        ghz = Ghz(executable, write_protoset(directory), target, args.concurrency)
        print(
            f"ordermesh read path bench: API pid {pid} on {target} (direct, not Envoy);"
            f" {os.cpu_count()} cores; ghz {gotools.GHZ.version}, {args.concurrency} workers on"
            f" {args.concurrency} connections, {args.duration:g} s per phase after"
            f" {args.warmup:g} s warm-up; GetOrder over {len(order_ids)} orders of one user"
        )
        phases: dict[str, tuple[list[dict[str, str]], dict[str, str]]] = {
            TRIVIAL_CALL: ([{}], {}),
            READ_CALL: (
                [{"order_id": order_id} for order_id in order_ids],
                {"authorization": f"Bearer {token}"},
            ),
        }
        profiler: Profiler | None = None
        if args.profile is not None:
            py_spy = shutil.which("py-spy")
            if py_spy is None:
                raise BenchError("--profile needs py-spy on PATH (pip install py-spy)")
            profiler = Profiler(py_spy, pid, args.profile)
        runs: list[dict[str, Phase]] = []
        for number in range(1, args.runs + 1):
            print(f"\n== run {number} of {args.runs}", flush=True)
            results: dict[str, Phase] = {}
            for call, (data, metadata) in phases.items():
                if args.warmup > 0:
                    await ghz.run(
                        call, args.warmup, data=data, metadata=metadata, directory=directory
                    )
                sampling = profiler if call == READ_CALL and number == args.runs else None
                async with sampling or contextlib.nullcontext():
                    results[call] = await measure(
                        ghz,
                        call,
                        args.duration,
                        api_pid=pid,
                        data=data,
                        metadata=metadata,
                        directory=directory,
                    )
                print(f"  {_short(call):<22} {results[call].line()}", flush=True)
            runs.append(results)
        print_results(runs)
        if args.profile is not None:
            print_profile(args.profile, args.profile_top)
        if args.plot is not None:
            plot(args.plot, runs)


def plot(directory: Path, runs: Sequence[Mapping[str, Phase]]) -> None:
    """--plot: ghz's latency distribution (its percentiles) of each call in each run, and
    the requests/s of each (ghz reports no per-request times in its summary)."""
    distributions = {
        f"{_short(call)}, run {number}": phase.report.percentiles_ms
        for number, run in enumerate(runs, 1)
        for call, phase in run.items()
    }
    rates = {
        f"{_short(call)}, run {number}": phase.report.rps
        for number, run in enumerate(runs, 1)
        for call, phase in run.items()
    }
    plots.print_written(
        [
            plots.latency_distribution(
                directory,
                "latency-distribution",
                "read path: ghz latency percentiles, gRPC direct to the API",
                distributions,
            ),
            plots.bars(
                directory,
                "requests-per-second",
                "read path: requests/s of each timed phase (ghz)",
                rates,
                xlabel="requests per second",
            ),
        ]
    )


def _short(call: str) -> str:
    return "trivial (Health/Check)" if call == TRIVIAL_CALL else re.sub(r".*/", "", call)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per timed phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first")
    parser.add_argument("--concurrency", type=int, default=32, help="ghz workers/connections")
    parser.add_argument("--orders", type=int, default=64, help="orders the user reads in turn")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs; best is shown")
    parser.add_argument(
        "--port", type=int, help="gRPC port of another API server (default: the stack's)"
    )
    parser.add_argument("--pid", type=int, help="its process id, for its CPU (with --port)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the API during the last GetOrder phase; raw stacks go to this file",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions to list")
    plots.add_plot_argument(parser, "read_path")
    args = parser.parse_args()
    if args.duration <= 0 or args.concurrency < 1 or args.orders < 1 or args.runs < 1:
        parser.error("--duration, --concurrency, --orders and --runs must be positive")
    if (args.port is None) != (args.pid is None):
        parser.error("--port and --pid go together")
    started = time.perf_counter()
    try:
        uvloop.run(run(args))
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
