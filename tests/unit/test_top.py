"""`ordermesh top`'s arithmetic: the exposition parser, histogram quantiles, rates between
two readings, and the frame it draws."""

import pytest
from rich.console import Console

from devstack.top import Dashboard, Reading, figures, parse, quantile, render

TEXT = """# HELP ordermesh_order_status_transitions_total Status changes.
# TYPE ordermesh_order_status_transitions_total counter
ordermesh_order_status_transitions_total{from_status="PAID",to_status="FULFILLED"} 10.0
ordermesh_order_status_transitions_total{from_status="FULFILLED",to_status="SHIPPED"} 8.0
ordermesh_consumer_lag{group="ordermesh.fulfillment",topic="ordermesh.orders.v1"} 3.0
ordermesh_consumer_lag{group="ordermesh.fulfillment",topic="ordermesh.inventory.v1"} 2.0
ordermesh_relay_backlog{schema="orders"} 4.0
ordermesh_relay_oldest_age_seconds{schema="orders"} 1.5
ordermesh_gateway_sockets 7.0
not a sample line
ordermesh_weird{label="with \\"quotes\\" inside"} 1e3
"""


def test_the_exposition_format_is_parsed_into_samples() -> None:
    samples = parse(TEXT)
    key = (
        "ordermesh_order_status_transitions_total",
        (("from_status", "PAID"), ("to_status", "FULFILLED")),
    )
    assert samples[key] == 10.0
    assert samples[("ordermesh_gateway_sockets", ())] == 7.0
    assert samples[("ordermesh_weird", (("label", 'with \\"quotes\\" inside'),))] == 1000.0
    assert len(samples) == 8


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.1), (0.75, 0.15), (0.99, 0.998), (0.1, 0.02)],
)
def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile(
    q: float, expected: float
) -> None:
    # 10 observations ≤ 0.1 s, 10 more ≤ 0.2 s, none above 1 s.
    buckets = {0.1: 10.0, 0.2: 20.0, 1.0: 20.0, float("inf"): 20.0}
    if q == 0.99:
        buckets = {0.1: 0.0, 1.0: 10.0, float("inf"): 10.0}
        expected = 0.1 + 0.9 * 0.99
    assert quantile(q, buckets) == pytest.approx(expected)


def test_an_empty_histogram_has_no_quantile() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def reading(at: float, text: str) -> Reading:
    return Reading(at, parse(text))


def test_rates_and_percentiles_come_from_the_window_between_readings() -> None:
    before = reading(
        0.0,
        'ordermesh_order_status_transitions_total{from_status="FULFILLED",to_status="SHIPPED"} 5\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="0.1"} 100\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="1.0"} 100\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="+Inf"} 100\n'
        'ordermesh_ratelimit_decisions_total{route="read",tier="free",outcome="limited"} 1\n',
    )
    now = reading(
        2.0,
        'ordermesh_order_status_transitions_total{from_status="FULFILLED",to_status="SHIPPED"} 25\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="0.1"} 100\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="1.0"} 120\n'
        'ordermesh_order_create_to_shipped_seconds_bucket{le="+Inf"} 120\n'
        'ordermesh_ratelimit_decisions_total{route="read",tier="free",outcome="limited"} 5\n'
        'ordermesh_relay_backlog{schema="orders"} 3\n'
        'ordermesh_relay_backlog{schema="payment"} 2\n',
    )
    shown = figures(now, before)
    assert shown.orders_per_second == {"SHIPPED": 10.0}
    # Only the window's 20 orders, all between 0.1 and 1 s: the old fast ones do not count.
    assert shown.shipped_p50 == pytest.approx(0.55)
    assert shown.decisions_per_second == {"limited": 2.0}
    assert shown.outbox_backlog == 5.0
    assert figures(now, None).orders_per_second == {}


def test_the_dashboard_keeps_a_window_of_readings() -> None:
    clock = iter(range(100))

    def reader() -> Reading:
        at = float(next(clock))
        return reading(
            at, f'ordermesh_order_status_transitions_total{{to_status="PAID"}} {at * 3}\n'
        )

    board = Dashboard(reader, window=5.0)
    shown = [board.refresh() for _ in range(12)]
    assert shown[0].orders_per_second == {}
    assert shown[-1].orders_per_second == {"PAID": pytest.approx(3.0)}
    assert len(board.history) <= 7


def test_a_frame_shows_the_figures_and_the_silent_processes() -> None:
    now = reading(1.0, TEXT)
    shown = figures(now, reading(0.0, ""))
    shown.down = ("webhook-sender",)
    console = Console(record=True, width=140)
    console.print(render(shown))
    text = console.export_text()
    assert "orders/s by status reached" in text
    assert "ordermesh.fulfillment" in text and "5" in text
    assert "outbox oldest unpublished" in text and "1.5 s" in text
    assert "no metrics from: webhook-sender" in text
    assert "WebSocket sockets" in text and "7" in text
