"""The pipeline bench's observe phase: the order of its rounds, the cost it computes from
them, when it judges the goal, and its charts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.pipeline import (
    OBSERVE_ENVIRONMENT,
    ObserveCost,
    ObserveRound,
    Tracing,
    observe_cpu_by_process,
    observe_environment,
    observe_schedule,
    plot_observe,
    print_observe_goal,
)


def a_round(mode: str, orders_per_second: float, cpu_ms: float = 5.0) -> ObserveRound:
    return ObserveRound(mode, orders_per_second, cpu_ms / 1000, 1000, 6 if mode == "on" else 0)


def test_the_schedule_alternates_in_pairs_that_swap_their_order() -> None:
    assert observe_schedule(1) == ["on", "off"]
    assert observe_schedule(3) == ["on", "off", "off", "on", "on", "off"]
    four = observe_schedule(4)
    assert four.count("on") == four.count("off") == 4
    # Balanced against a linear drift: both modes sit at the same mean position.
    positions = {mode: [i for i, m in enumerate(four) if m == mode] for mode in ("on", "off")}
    assert sum(positions["on"]) == sum(positions["off"])


def test_the_off_mode_switches_off_metrics_and_spans_and_on_samples_everything() -> None:
    assert OBSERVE_ENVIRONMENT["off"] == {"ORDERMESH_METRICS": "off", "ORDERMESH_ZIPKIN_URL": ""}
    assert OBSERVE_ENVIRONMENT["on"]["ORDERMESH_TRACE_SAMPLE_RATIO"] == "1.0"
    assert "ORDERMESH_ZIPKIN_URL" not in OBSERVE_ENVIRONMENT["on"]


def test_the_cost_compares_the_medians_of_each_mode() -> None:
    rounds = [
        a_round("on", 90.0, 6.0),
        a_round("off", 100.0, 5.0),
        a_round("off", 104.0, 5.2),
        a_round("on", 94.0, 6.2),
        a_round("on", 200.0, 6.4),  # an outlier moves the mean, not the median
        a_round("off", 98.0, 4.8),
    ]
    cost = ObserveCost.of(rounds)
    assert cost.on == [90.0, 94.0, 200.0]
    assert cost.median_on == 94.0 and cost.median_off == 100.0
    assert cost.ratio == pytest.approx(100 / 94)
    assert cost.cost == pytest.approx(0.06)
    assert cost.mean_cost == pytest.approx(1 - 128 / (302 / 3))
    assert cost.cpu_on == pytest.approx(0.0062) and cost.cpu_off == pytest.approx(0.005)
    assert cost.met


def test_more_than_ten_percent_lower_misses_and_a_faster_on_is_no_cost() -> None:
    assert not ObserveCost.of([a_round("on", 89.0), a_round("off", 100.0)]).met
    assert ObserveCost.of([a_round("on", 90.0), a_round("off", 100.0)]).met
    faster = ObserveCost.of([a_round("on", 105.0), a_round("off", 100.0)])
    assert faster.cost == pytest.approx(-0.05) and faster.met


def test_a_mode_without_rounds_gives_no_figures() -> None:
    cost = ObserveCost.of([a_round("on", 90.0)])
    assert math.isnan(cost.median_off) and math.isnan(cost.cost) and math.isnan(cost.ratio)
    assert not cost.met


def test_tracing_is_judged_only_when_zipkin_has_spans() -> None:
    url = "http://127.0.0.1:59411/api/v2/spans"
    assert "not configured" in (Tracing("", None).problem or "")
    assert "does not answer" in (Tracing(url, None).problem or "")
    assert "no service" in (Tracing(url, []).problem or "")
    assert Tracing(url, ["api", "relay"]).problem is None


def test_the_goal_line(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = [a_round("on", 95.0), a_round("off", 100.0)]
    print_observe_goal(rounds, Tracing("http://127.0.0.1:1/api/v2/spans", ["api"]))
    assert capsys.readouterr().out.strip().startswith("HIT")
    print_observe_goal(rounds, Tracing("", None))
    line = capsys.readouterr().out.strip()
    assert line.startswith("n/a") and "not configured" in line and "5.0%" in line
    print_observe_goal([a_round("on", 80.0), a_round("off", 100.0)], Tracing("u", ["api"]))
    assert capsys.readouterr().out.strip().startswith("MISS")


def test_plot_writes_the_rounds_and_medians(tmp_path: Path) -> None:
    rounds = [a_round(mode, 100.0 - i) for i, mode in enumerate(observe_schedule(2))]
    written = plot_observe(tmp_path, rounds)
    assert [path.name for path in written if path is not None] == [
        "observe-orders-per-second.png",
        "observe-cpu-per-order.png",
    ]


def test_the_cpu_table_puts_the_biggest_cost_of_observing_first() -> None:
    rounds = [
        ObserveRound("on", 60, 0.030, 1000, 6, {"workers": 0.012, "zipkin": 0.004}),
        ObserveRound("off", 70, 0.024, 1000, 0, {"workers": 0.010}),
        ObserveRound("on", 62, 0.029, 1000, 6, {"workers": 0.014, "zipkin": 0.006}),
        ObserveRound("off", 71, 0.023, 1000, 0, {"workers": 0.011}),
    ]
    table = observe_cpu_by_process(rounds)
    assert [name for name, _, _ in table] == ["zipkin", "workers"]
    zipkin_on, zipkin_off = table[0][1], table[0][2]
    assert (round(zipkin_on, 3), zipkin_off) == (5.0, 0.0)
    assert (round(table[1][1], 3), round(table[1][2], 3)) == (13.0, 10.5)


def test_the_on_rounds_sample_as_asked_and_the_off_rounds_trace_nothing() -> None:
    assert observe_environment("on", 0.1)["ORDERMESH_TRACE_SAMPLE_RATIO"] == "0.1"
    assert observe_environment("on")["ORDERMESH_TRACE_SAMPLE_RATIO"] == "1.0"
    assert observe_environment("off", 0.1) == OBSERVE_ENVIRONMENT["off"]


def test_the_goal_is_judged_at_full_sampling_only(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = [a_round("on", 95), a_round("off", 100)]
    print_observe_goal(rounds, Tracing("http://127.0.0.1:9411/api/v2/spans", ["api"], 0.1))
    assert "n/a" in capsys.readouterr().out
