"""The edge bench's accuracy figure: the most admitted calls in any window-long span, and the
edge-burst schedule it is measured with."""

from __future__ import annotations

import yaml

from bench.edge import AccuracyPlan, Load, most_in_any_span, without_ratelimit


def test_most_in_any_span_counts_a_half_open_window() -> None:
    assert most_in_any_span([], 60) == 0
    assert most_in_any_span([5.0], 60) == 1
    # 0 and 60 are not in one [t, t + 60) span; 0.5 and 60 are.
    assert most_in_any_span([0.0, 60.0], 60) == 1
    assert most_in_any_span([0.0, 0.5, 60.0], 60) == 2


def test_most_in_any_span_sees_a_fixed_window_admit_twice_the_limit() -> None:
    before = [59.0 + i / 1000 for i in range(100)]
    after = [60.5 + i / 1000 for i in range(100)]
    next_window = [120.0 + i for i in range(10)]
    assert most_in_any_span(after + next_window + before, 60) == 200


def test_most_in_any_span_of_an_exact_sliding_window_is_the_limit() -> None:
    first = [57.0 + i / 1024 for i in range(100)]  # exact in binary floating point
    # Each call of the first burst frees its place exactly one window later.
    probes = [t + 60 for t in first]
    assert most_in_any_span(first + probes, 60) == 100


def test_the_schedule_bursts_around_a_boundary_and_probes_as_the_window_slides() -> None:
    plan = AccuracyPlan(limit=100, window=60.0)
    boundary = 1_800_000_000.0
    sends = plan.schedule(boundary)
    assert sends[0] == (boundary - 3.0, 100)
    assert sends[1] == (boundary + 1.0, 100)
    probes = [when for when, count in sends[2:] if count == 1]
    assert len(probes) == len(sends) - 2
    assert probes[0] < boundary - 3.0 + 60 < probes[-1] < boundary + 60


def test_the_next_boundary_leaves_room_for_the_first_burst() -> None:
    plan = AccuracyPlan(limit=100, window=60.0)
    boundary = plan.next_boundary(1_800_000_055.0, lead=1.0)
    assert boundary % 60 == 0
    assert boundary - 3.0 >= 1_800_000_056.0


def test_hey_csv_becomes_percentiles_and_failures() -> None:
    rows = [
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"
    ]
    rows += [f"0.00{i % 10},0,0,0,0,0,200,0.1" for i in range(99)]
    rows.append("0.0500,0,0,0,0,0,429,0.2")
    load = Load.from_hey_csv("\n".join(rows), seconds=2.0)
    assert load.requests == 100
    assert load.rps == 50.0
    assert load.failed == 1
    assert load.failures == {"429": 1}
    assert load.p99_ms == 9.0
    assert load.p50_ms == 4.0


def test_without_ratelimit_drops_only_the_ratelimit_filters() -> None:
    prefix = "type.googleapis.com/envoy.extensions.filters.http"
    filters = [
        {"name": "jwt", "typed_config": {"@type": f"{prefix}.jwt_authn.v3.JwtAuthentication"}},
        {"name": "limits", "typed_config": {"@type": f"{prefix}.ratelimit.v3.RateLimit"}},
        {"name": "router", "typed_config": {"@type": f"{prefix}.router.v3.Router"}},
    ]
    chain = {"filters": [{"typed_config": {"http_filters": filters}}]}
    config = {"static_resources": {"listeners": [{"filter_chains": [chain]}]}}
    stripped = yaml.safe_load(without_ratelimit(yaml.safe_dump(config)))
    manager = stripped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert [f["name"] for f in manager["typed_config"]["http_filters"]] == ["jwt", "router"]
