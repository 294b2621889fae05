"""PNG charts for the benches' `--plot [DIR]`: latency CDFs, throughput over time, and bars
for benches that only have a summary.

matplotlib is imported only when a chart is drawn (the Agg backend, no display), so a bench
run without `--plot` starts as fast as before and does not need matplotlib installed.
Charts go to DIR, by default `<run dir>/artifacts/bench/<bench>/` (the run dir is
`ORDERMESH_RUN_DIR` when set, else `.run/`, as for the browser screenshots).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZE = (9.0, 5.0)
# Line styles in turn, so that series with the same counts stay visible one over another.
STYLES = ("-", "--", ":", "-.")
DPI = 110


def ms(value: float) -> str:
    """Milliseconds for a legend: 3 significant digits, whole numbers from 1000 up."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def run_dir() -> Path:
    """The dev stack's run dir, as `devstack.paths` has it (without importing devstack)."""
    return Path(os.environ.get("ORDERMESH_RUN_DIR") or REPO_ROOT / ".run").absolute()


def default_directory(bench: str) -> Path:
    return run_dir() / "artifacts" / "bench" / bench


class _PlotAction(argparse.Action):
    """Stores the directory; refuses at once when matplotlib is missing (not after the run)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        if importlib.util.find_spec("matplotlib") is None:
            parser.error("--plot needs matplotlib: pip install -e '.[dev]'")
        setattr(namespace, self.dest, self.const if values is None else Path(str(values)))


def add_plot_argument(parser: argparse.ArgumentParser, bench: str) -> None:
    """`--plot [DIR]`: args.plot is None without it, else the directory to write PNGs to."""
    default = default_directory(bench)
    parser.add_argument(
        "--plot",
        nargs="?",
        action=_PlotAction,
        const=default,
        default=None,
        metavar="DIR",
        help=f"also write PNG charts to DIR (default {default})",
    )


def slug(text: str) -> str:
    """A file name part from a title: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chart"


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def per_second(timestamps: Iterable[float], start: float | None = None) -> list[int]:
    """Counts of timestamps (seconds) in 1 s bins from `start` (the earliest by default)."""
    times = sorted(timestamps)
    if not times:
        return []
    origin = times[0] if start is None else start
    counts = [0] * max(int(times[-1] - origin) + 1, 0)
    for t in times:
        if t >= origin:
            counts[int(t - origin)] += 1
    return counts


def _figure() -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def _log_x(axes: Axes) -> None:
    """A log x axis labelled in plain numbers (1, 2, 5, 10, 20, 50, ...)."""
    from matplotlib.ticker import FuncFormatter

    def plain(value: float, _: object) -> str:
        return f"{value:g}"

    def some(value: float, _: object) -> str:
        leading = f"{value:e}"[0]
        return f"{value:g}" if leading in "25" else ""

    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(plain))
    axes.xaxis.set_minor_formatter(FuncFormatter(some))
    axes.tick_params(axis="x", which="minor", labelsize=8)


def _save(figure: Figure, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{slug(name)}.png"
    figure.savefig(path)
    return path


def latency_cdf(
    directory: Path,
    name: str,
    title: str,
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "latency (ms, log scale)",
) -> Path | None:
    """A CDF per named series of milliseconds, log x axis, p50 and p99 marked on each.

    Returns the PNG's path, or None when no series has a value (nothing is written)."""
    data = {label: sorted(v for v in values if v > 0) for label, values in series.items()}
    data = {label: values for label, values in data.items() if values}
    if not data:
        return None
    figure, axes = _figure()
    for label, values in data.items():
        n = len(values)
        fractions = [(i + 1) / n for i in range(n)]
        p50, p99 = percentile(values, 50), percentile(values, 99)
        (line,) = axes.step(
            values,
            fractions,
            where="post",
            label=f"{label} (n={n:,}, p50 {ms(p50)} ms, p99 {ms(p99)} ms)",
        )
        axes.plot([p50], [0.5], "o", color=line.get_color())
        axes.plot([p99], [0.99], "D", color=line.get_color())
    _log_x(axes)
    axes.set_ylim(0, 1.02)
    for q, y in (("p50 ●", 0.5), ("p99 ◆", 0.99)):
        axes.axhline(y, color="grey", linewidth=0.5, linestyle=":")
        axes.annotate(
            q,
            (0, y),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=8,
            color="grey",
        )
    axes.set_xlabel(xlabel)
    axes.set_ylabel("fraction at or below (cumulative)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it hid the slowest series' tail.
    figure.legend(loc="outside lower center", fontsize=8)
    return _save(figure, directory, name)


def throughput(
    directory: Path,
    name: str,
    title: str,
    series: Mapping[str, Sequence[float]],
    *,
    unit: str = "events",
    start: float | None = None,
) -> Path | None:
    """Events per second in 1 s bins over time, one line per named series of timestamps
    (seconds, any clock: the x axis counts from `start`, else the earliest of all series)."""
    data = {label: list(values) for label, values in series.items() if values}
    if not data:
        return None
    origin = min(min(values) for values in data.values()) if start is None else start
    binned = {label: per_second(values, origin) for label, values in data.items()}
    binned = {label: counts for label, counts in binned.items() if counts}
    if not binned:
        return None
    figure, axes = _figure()
    peak = max(max(counts) for counts in binned.values())
    for index, (label, counts) in enumerate(binned.items()):
        values = data[label]
        seconds = len(counts)
        span = max(values) - origin
        # The mean rate from the start, when the series lasts a second or more.
        mean = f", {len(values) / span:.1f}/s overall" if span >= 1.0 else ""
        # Each bin drawn over its whole second: the last count repeated at its end.
        axes.step(
            range(seconds + 1),
            [*counts, counts[-1]],
            where="post",
            linestyle=STYLES[index % len(STYLES)],
            label=f"{label} ({len(values):,} {unit}{mean})",
        )
    axes.set_xlabel("time since start (s, 1 s bins)")
    axes.set_ylabel(f"{unit} per second")
    axes.set_ylim(0, max(peak, 1) * 1.3)  # room for the legend above the lines
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, directory, name)


def latency_distribution(
    directory: Path,
    name: str,
    title: str,
    series: Mapping[str, Mapping[int, float]],
) -> Path | None:
    """A summary's percentiles (percent → ms, e.g. ghz's latencyDistribution) as a CDF drawn
    through its points, one line per named series, log x axis."""
    data = {label: sorted(points.items()) for label, points in series.items() if points}
    data = {label: [(q, v) for q, v in points if v > 0] for label, points in data.items()}
    data = {label: points for label, points in data.items() if points}
    if not data:
        return None
    figure, axes = _figure()
    for label, points in data.items():
        marks = dict(points)
        text = ", ".join(f"p{q} {ms(marks[q])} ms" for q in (50, 99) if q in marks)
        axes.plot(
            [v for _, v in points],
            [q / 100 for q, _ in points],
            "o-",
            label=f"{label} ({text})" if text else label,
        )
    _log_x(axes)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("fraction at or below (cumulative)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it hid the slowest series' tail.
    figure.legend(loc="outside lower center", fontsize=8)
    return _save(figure, directory, name)


def lines(
    directory: Path,
    name: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
) -> Path | None:
    """One line of (x, y) points per named series, e.g. memory against sockets open."""
    data = {label: list(points) for label, points in series.items() if points}
    if not data:
        return None
    figure, axes = _figure()
    for label, points in data.items():
        axes.plot([x for x, _ in points], [y for _, y in points], ".-", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, directory, name)


def bars(
    directory: Path,
    name: str,
    title: str,
    values: Mapping[str, float],
    *,
    xlabel: str,
) -> Path | None:
    """One horizontal bar per named figure (for benches that only have a summary), each
    labelled with its value; `xlabel` names the figure and its unit."""
    data = {label: value for label, value in values.items() if not math.isnan(value)}
    if not data:
        return None
    figure, axes = _figure()
    labels = list(data)
    # Horizontal bars, the first on top: long labels stay readable.
    drawn = axes.barh(range(len(labels)), [data[label] for label in labels])
    axes.bar_label(drawn, fmt="%.4g", fontsize=8, padding=3)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.margins(x=0.12)
    axes.set_title(title)
    axes.grid(True, axis="x", alpha=0.3)
    return _save(figure, directory, name)


def print_written(paths: Iterable[Path | None]) -> list[Path]:
    """Print the charts written (after the bench's own figures) and return them."""
    written = [path for path in paths if path is not None]
    if written:
        print("\ncharts (--plot):")
        for path in written:
            print(f"  {path}")
    else:
        print("\ncharts (--plot): nothing to draw")
    return written
