"""bench/plots.py: the charts the benches' --plot writes, drawn from synthetic data, and the
--plot argument."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from bench import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path | None, directory: Path) -> None:
    assert path is not None
    assert path.parent == directory
    assert path.suffix == ".png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def test_latency_cdf_writes_a_png_of_several_series(tmp_path: Path) -> None:
    rng = random.Random(7)
    series = {
        "fast": [rng.lognormvariate(1.0, 0.5) for _ in range(2000)],
        "slow": [rng.lognormvariate(3.0, 0.8) for _ in range(500)],
        "empty": [],
    }
    path = plots.latency_cdf(tmp_path, "create→SHIPPED latency", "latency", series)
    assert_png(path, tmp_path)
    assert path is not None and path.name == "create-shipped-latency.png"


def test_a_chart_with_nothing_to_draw_writes_nothing(tmp_path: Path) -> None:
    assert plots.latency_cdf(tmp_path, "x", "x", {"a": [], "b": [0.0]}) is None
    assert plots.throughput(tmp_path, "y", "y", {"a": []}) is None
    assert plots.latency_distribution(tmp_path, "z", "z", {"a": {}}) is None
    assert plots.bars(tmp_path, "w", "w", {}, xlabel="kB") is None
    assert list(tmp_path.iterdir()) == []


def test_throughput_over_time_writes_a_png(tmp_path: Path) -> None:
    rng = random.Random(3)
    start = 1_000_000.0
    series = {
        "created": sorted(start + rng.uniform(0, 10) for _ in range(800)),
        "shipped": sorted(start + 0.5 + rng.uniform(0, 10) for _ in range(780)),
    }
    path = plots.throughput(tmp_path, "throughput", "orders over time", series, unit="orders")
    assert_png(path, tmp_path)


def test_per_second_bins_from_the_start() -> None:
    assert plots.per_second([]) == []
    assert plots.per_second([10.0, 10.2, 10.99, 11.0, 13.5]) == [3, 1, 0, 1]
    assert plots.per_second([10.5, 11.0], start=9.0) == [0, 1, 1]
    # Timestamps before the start are left out.
    assert plots.per_second([8.0, 9.5], start=9.0) == [1]


def test_summary_charts_write_pngs(tmp_path: Path) -> None:
    distribution = {
        "trivial": {10: 0.4, 25: 0.6, 50: 0.9, 75: 1.4, 90: 2.0, 95: 2.6, 99: 4.1},
        "GetOrder": {10: 1.4, 25: 2.0, 50: 3.1, 75: 4.4, 90: 6.0, 95: 7.6, 99: 12.5},
    }
    assert_png(plots.latency_distribution(tmp_path, "ghz", "ghz latency", distribution), tmp_path)
    memory = {"bridge": 12.5, "bridge per socket": 0.031, "nan": float("nan")}
    assert_png(plots.bars(tmp_path, "memory", "memory", memory, xlabel="MiB"), tmp_path)
    curves = {"first": [(0, 20.0), (100, 22.5), (200, 25.1)], "more": [(0, 25.1), (100, 27.6)]}
    assert_png(
        plots.lines(tmp_path, "rss", "rss", curves, xlabel="sockets", ylabel="MiB"), tmp_path
    )
    assert plots.lines(tmp_path, "none", "none", {"a": []}, xlabel="x", ylabel="y") is None
    assert len(list(tmp_path.iterdir())) == 3


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert plots.percentile(ordered, 50) == 50.0
    assert plots.percentile(ordered, 99) == 99.0
    assert plots.percentile([5.0], 99) == 5.0


def test_plot_argument_defaults_under_the_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERMESH_RUN_DIR", str(tmp_path / "run"))
    parser = argparse.ArgumentParser()
    plots.add_plot_argument(parser, "pipeline")
    assert parser.parse_args([]).plot is None
    default = tmp_path / "run" / "artifacts" / "bench" / "pipeline"
    assert parser.parse_args(["--plot"]).plot == default
    assert parser.parse_args(["--plot", "out/charts"]).plot == Path("out/charts")


def test_plot_argument_refuses_at_once_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    parser = argparse.ArgumentParser()
    plots.add_plot_argument(parser, "codec")
    assert parser.parse_args([]).plot is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--plot"])


def test_throughput_leaves_out_a_series_before_the_start(tmp_path: Path) -> None:
    series = {"early": [1.0, 2.0], "in time": [10.0, 10.5, 11.2]}
    assert_png(plots.throughput(tmp_path, "t", "t", series, start=10.0), tmp_path)
    assert plots.per_second([1.0, 2.0], start=10.0) == []
    assert plots.throughput(tmp_path, "u", "u", {"early": [1.0, 2.0]}, start=10.0) is None


def test_plot_argument_without_a_run_dir_uses_the_repository_run_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORDERMESH_RUN_DIR", raising=False)
    assert plots.default_directory("edge") == plots.REPO_ROOT / ".run/artifacts/bench/edge"


def test_print_written_lists_the_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.png"
    assert plots.print_written([path, None]) == [path]
    assert str(path) in capsys.readouterr().out
    plots.print_written([])
    assert "nothing to draw" in capsys.readouterr().out


def test_importing_the_module_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys; from bench import plots; print('matplotlib' in sys.modules)"
    root = Path(plots.__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_milliseconds_in_legends() -> None:
    assert plots.ms(0.4567) == "0.457"
    assert plots.ms(53.94) == "53.9"
    assert plots.ms(1757.4) == "1,757"
