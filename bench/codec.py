"""Codec cost per event: the outbox and consumer paths against bare fastavro.

    python bench/codec.py                 # or: python -m bench.codec
    python bench/codec.py --iterations 2000 --repeats 60 --profile

For a few real events, the unit tests' samples (OrderCreated and PaymentProcessed with
three lines, OrderShipped), it times in one process and side by side:

- bare fastavro: ``schemaless_writer`` then ``schemaless_reader`` of the same record with
  a schema parsed beforehand, the floor any Avro codec in Python stands on;
- the codec as the services use it: on the producer side ``outbox_message`` (a new event
  id, the record encoded into single-object bytes, its CloudEvents headers), on the
  consumer side what ``EventConsumer`` does per message (``header_map`` of Kafka header
  tuples with bytes values, then ``envelope_from``).

Each figure is the best of ``--repeats`` runs of ``--iterations`` calls, timed with
``time.perf_counter`` and the garbage collector paused (as ``timeit`` does); the runs of
all measurements take turns. The goal line compares the mean over the events. No server
is needed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from services.platform.messaging.codec import (
    SCHEMA_DIR,
    EventCodec,
    EventEnvelope,
    header_map,
    kafka_headers,
)
from services.platform.messaging.outbox import OutboxMessage, outbox_message
from tests.unit.test_codec import SAMPLES

K = TypeVar("K")

GOAL_RATIO = 2.0
SOURCE = "/ordermesh/bench"
AT = SAMPLES["OrderShipped"]["shipped_at"]
ORDER_ID = SAMPLES["OrderShipped"]["order_id"]
THREE_LINES = [
    *SAMPLES["OrderCreated"]["items"],
    {"product_id": "sku-usb-hub", "quantity": 1, "unit_price_minor": 3100},
]
EVENTS: dict[str, dict[str, Any]] = {
    "OrderCreated": {**SAMPLES["OrderCreated"], "items": THREE_LINES, "total_minor": 16999},
    "PaymentProcessed": {
        **SAMPLES["PaymentProcessed"],
        "items": THREE_LINES,
        "amount_minor": 16999,
    },
    "OrderShipped": SAMPLES["OrderShipped"],
}


def best_seconds_per_call(
    works: Mapping[K, Callable[[], object]], iterations: int, repeats: int
) -> dict[K, float]:
    """For each work, the fastest of ``repeats`` timed runs of ``iterations`` calls, per call.

    The works take turns run by run, so a busy spell on a shared machine slows them alike
    instead of whichever was running then.
    """
    best = dict.fromkeys(works, float("inf"))
    for _ in range(repeats):
        gc.collect()
        for key, work in works.items():
            gc.disable()
            try:
                started = time.perf_counter()
                for _ in range(iterations):
                    work()
                elapsed = time.perf_counter() - started
            finally:
                gc.enable()
            best[key] = min(best[key], elapsed / iterations)
    return best


def bare_fastavro(codec: EventCodec, name: str, record: dict[str, Any]) -> Callable[[], object]:
    parsed = parse_schema(codec.schema(name), named_schemas={})

    def round_trip() -> object:
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, record)
        return schemaless_reader(io.BytesIO(buffer.getvalue()), parsed)

    return round_trip


def producer_path(
    codec: EventCodec, name: str, record: dict[str, Any]
) -> Callable[[], OutboxMessage]:
    def produce() -> OutboxMessage:
        return outbox_message(
            codec,
            topic="orders",
            key=ORDER_ID,
            event_name=name,
            record=record,
            source=SOURCE,
            occurred_at=AT,
        )

    return produce


def consumer_path(
    codec: EventCodec, name: str, record: dict[str, Any]
) -> Callable[[], EventEnvelope]:
    message = producer_path(codec, name, record)()
    headers, payload = kafka_headers(message.headers), message.payload

    def consume() -> EventEnvelope:
        return codec.envelope_from(header_map(headers), payload)

    return consume


def check_round_trip(codec: EventCodec) -> None:
    """The codec paths give back what the bench encodes (a bench of a broken codec is moot)."""
    for name, record in EVENTS.items():
        if consumer_path(codec, name, record)().record != record:
            raise SystemExit(f"{name} does not round-trip through the codec")


def profile(codec: EventCodec, iterations: int, top: int) -> None:
    paths = [
        path(codec, name, record)
        for name, record in EVENTS.items()
        for path in (producer_path, consumer_path)
    ]
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        for path in paths:
            path()
    profiler.disable()
    print(f"\ncProfile of the codec paths, {iterations} x each event, by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=40, help="timed runs; the best counts")
    parser.add_argument("--profile", action="store_true", help="then cProfile the codec paths")
    parser.add_argument("--top", type=int, default=25, help="functions the profile lists")
    plots.add_plot_argument(parser, "codec")
    args = parser.parse_args()

    codec = EventCodec.from_directory(SCHEMA_DIR)
    check_round_trip(codec)
    paths = {"bare": bare_fastavro, "produce": producer_path, "consume": consumer_path}
    works = {
        (name, label): path(codec, name, record)
        for name, record in EVENTS.items()
        for label, path in paths.items()
    }
    best = best_seconds_per_call(works, args.iterations, args.repeats)

    print(
        f"µs per event, best of {args.repeats} x {args.iterations:,} calls"
        f" (python {sys.version.split()[0]}, fastavro {fastavro.__version__})"
    )
    print(f"{'event':<18} {'fastavro':>9} {'produce':>9} {'consume':>9} {'codec':>9} {'ratio':>7}")
    for name in EVENTS:
        bare, produce, consume = (best[name, label] * 1e6 for label in paths)
        print(
            f"{name:<18} {bare:>9.2f} {produce:>9.2f} {consume:>9.2f}"
            f" {produce + consume:>9.2f} {(produce + consume) / bare:>7.2f}"
        )
    bare_mean = statistics.mean(best[name, "bare"] for name in EVENTS) * 1e6
    codec_mean = statistics.mean(best[name, "produce"] + best[name, "consume"] for name in EVENTS)
    codec_mean *= 1e6
    ratio = codec_mean / bare_mean
    print(f"{'mean':<18} {bare_mean:>9.2f} {'':>9} {'':>9} {codec_mean:>9.2f} {ratio:>7.2f}")
    verdict = "HIT" if ratio <= GOAL_RATIO else "MISS"
    print(f"encode+decode within {GOAL_RATIO:g}x of bare fastavro: {verdict} (ratio {ratio:.2f})")
    if args.profile:
        profile(codec, args.iterations, args.top)
    if args.plot is not None:
        labels = {"bare": "fastavro", "produce": "produce", "consume": "consume"}
        plots.print_written(
            [
                plots.bars(
                    args.plot,
                    "microseconds-per-event",
                    f"codec: µs per event, best of {args.repeats} x {args.iterations:,} calls",
                    {
                        f"{name} {labels[label]}": best[name, label] * 1e6
                        for name in EVENTS
                        for label in paths
                    },
                    xlabel="µs per event (lower is better)",
                )
            ]
        )


if __name__ == "__main__":
    main()
