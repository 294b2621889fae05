"""`ordermesh top`: a live terminal dashboard of the running stack, fed by the metrics every
process serves on its loopback metrics port (devstack.stack.metrics_targets), refreshed
every second.

It reads the processes' /metrics directly (not Prometheus), so it works whenever the stack
runs; rates and percentiles come from the difference between two readings a window apart:
orders/s by the status they reached, create→SHIPPED p50/p99, lag per consumer group, the
outbox backlog and its oldest row, dead-lettered and parked rows, and the bridge's sockets,
the rate limiter's decisions and the webhook backlog.
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
STATUSES = (
    "PENDING",
    "VALIDATED",
    "PAID",
    "FULFILLED",
    "SHIPPED",
    "DELIVERED",
    "FAILED",
    "CANCELLED",
)


def parse(text: str) -> dict[Sample, float]:
    """Prometheus text exposition as {(name, labels): value} (comments and bad lines skipped)."""
    found: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(raw_labels or "")))
        found[(name, labels)] = value
    return found


@dataclass(frozen=True)
class Reading:
    """Every process's samples at one moment, and the processes that did not answer."""

    at: float
    samples: Mapping[Sample, float]
    down: tuple[str, ...] = ()

    def select(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), value) for (n, labels), value in self.samples.items() if n == name]

    def total(self, name: str, **where: str) -> float:
        return sum(
            value
            for labels, value in self.select(name)
            if all(labels.get(key) == wanted for key, wanted in where.items())
        )

    def by(self, name: str, key: str) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self.select(name):
            sums[labels.get(key, "")] += value
        return dict(sums)


def read(targets: Sequence[tuple[str, str]], timeout: float = 0.8) -> Reading:
    """One reading of every target's /metrics, concurrently; samples summed across
    processes (the process label is dropped: replicas add up)."""

    def fetch(target: tuple[str, str]) -> tuple[str, str | None]:
        name, address = target
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{address}/metrics", timeout=timeout) as response:
                return name, response.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return name, None

    samples: dict[Sample, float] = defaultdict(float)
    down = []
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        for name, text in pool.map(fetch, targets):
            if text is None:
                down.append(name)
                continue
            for key, value in parse(text).items():
                samples[key] += value
    return Reading(time.monotonic(), dict(samples), tuple(down))


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound → count), interpolated
    linearly within the bucket as Prometheus' histogram_quantile does; None if empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass
class Figures:
    """What one refresh shows."""

    orders_per_second: dict[str, float]
    shipped_p50: float | None
    shipped_p99: float | None
    lag: dict[str, float]
    outbox_backlog: float
    outbox_oldest: float
    dead_lettered: float
    outbox_parked: float
    webhook_parked: float
    webhook_pending: float
    sockets: float | None
    decisions_per_second: dict[str, float]
    down: tuple[str, ...] = ()


def _histogram(reading: Reading, name: str) -> dict[float, float]:
    return {
        float(labels["le"]): value
        for labels, value in reading.select(f"{name}_bucket")
        if "le" in labels
    }


def figures(now: Reading, before: Reading | None) -> Figures:
    """The dashboard's figures from the latest reading and one a window before it (rates
    and percentiles over that window; without one, percentiles since the processes
    started and no rates)."""
    seconds = (now.at - before.at) if before is not None else 0.0

    def rate_by(name: str, key: str) -> dict[str, float]:
        if before is None or seconds <= 0:
            return {}
        old = before.by(name, key)
        return {k: max(0.0, v - old.get(k, 0.0)) / seconds for k, v in now.by(name, key).items()}

    buckets = _histogram(now, "ordermesh_order_create_to_shipped_seconds")
    if before is not None:
        old = _histogram(before, "ordermesh_order_create_to_shipped_seconds")
        window = {bound: count - old.get(bound, 0.0) for bound, count in buckets.items()}
        if window and max(window.values()) > 0:
            buckets = window
    sockets = now.select("ordermesh_gateway_sockets")
    return Figures(
        orders_per_second=rate_by("ordermesh_order_status_transitions_total", "to_status"),
        shipped_p50=quantile(0.5, buckets),
        shipped_p99=quantile(0.99, buckets),
        lag=now.by("ordermesh_consumer_lag", "group"),
        outbox_backlog=now.total("ordermesh_relay_backlog"),
        outbox_oldest=max(
            now.by("ordermesh_relay_oldest_age_seconds", "schema").values(), default=0.0
        ),
        dead_lettered=now.total("ordermesh_consumer_dead_lettered_total"),
        outbox_parked=now.total("ordermesh_relay_parked"),
        webhook_parked=now.total("ordermesh_webhook_parked"),
        webhook_pending=now.total("ordermesh_webhook_pending"),
        sockets=sum(value for _, value in sockets) if sockets else None,
        decisions_per_second=rate_by("ordermesh_ratelimit_decisions_total", "outcome"),
        down=now.down,
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def render(shown: Figures) -> RenderableType:
    """A rich renderable of the figures."""
    from rich.console import Group
    from rich.table import Table

    orders = Table(title="orders/s by status reached", expand=True)
    for status in STATUSES:
        orders.add_column(status.lower(), justify="right")
    orders.add_row(*(f"{shown.orders_per_second.get(s, 0.0):.1f}" for s in STATUSES))

    pipeline = Table(title="pipeline", expand=True, show_header=False)
    pipeline.add_column("what")
    pipeline.add_column("value", justify="right")
    pipeline.add_row("create → SHIPPED p50", _ms(shown.shipped_p50))
    pipeline.add_row("create → SHIPPED p99", _ms(shown.shipped_p99))
    pipeline.add_row("outbox backlog (rows)", f"{shown.outbox_backlog:,.0f}")
    pipeline.add_row("outbox oldest unpublished", f"{shown.outbox_oldest:.1f} s")
    pipeline.add_row("dead-lettered (since start)", f"{shown.dead_lettered:,.0f}")
    pipeline.add_row("parked outbox rows", f"{shown.outbox_parked:,.0f}")
    pipeline.add_row(
        "webhook deliveries pending / parked",
        f"{shown.webhook_pending:,.0f} / {shown.webhook_parked:,.0f}",
    )
    pipeline.add_row("WebSocket sockets", "-" if shown.sockets is None else f"{shown.sockets:,.0f}")
    decisions = ", ".join(f"{k} {v:.1f}/s" for k, v in sorted(shown.decisions_per_second.items()))
    pipeline.add_row("rate-limit decisions", decisions or "-")

    lag = Table(title="consumer lag", expand=True)
    lag.add_column("group")
    lag.add_column("messages behind", justify="right")
    for group, behind in sorted(shown.lag.items()):
        lag.add_row(group, f"{behind:,.0f}")
    parts: list[RenderableType] = [orders, pipeline, lag]
    if shown.down:
        parts.append(f"[red]no metrics from: {', '.join(shown.down)}[/red]")
    return Group(*parts)


@dataclass
class Dashboard:
    """Readings kept for ``window`` seconds, so rates cover a steady span."""

    reader: Callable[[], Reading]
    window: float = 10.0
    history: deque[Reading] = field(default_factory=deque)

    def refresh(self) -> Figures:
        now = self.reader()
        self.history.append(now)
        while len(self.history) > 2 and now.at - self.history[1].at >= self.window:
            self.history.popleft()
        before = self.history[0] if len(self.history) > 1 else None
        return figures(now, before)


def run(targets: Callable[[], Sequence[tuple[str, str]]], *, interval: float, once: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    board = Dashboard(lambda: read(targets()))
    console = Console()
    if once:
        board.refresh()
        time.sleep(interval)
        console.print(render(board.refresh()))
        return
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                live.update(render(board.refresh()))
                time.sleep(interval)
        except KeyboardInterrupt:
            return
