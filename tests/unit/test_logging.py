"""The JSON log lines (services/platform/logging.py): one object per record with the
record's extra fields, values JSON cannot hold as text, and the current request id."""

import json
import logging
import sys
from datetime import UTC, datetime

from services.platform.logging import JsonFormatter, request_id_var


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord("ordermesh.rpc", logging.INFO, "", 0, "rpc %s", ("done",), None)
    made.created = datetime(2026, 12, 1, 5, 52, 7, 56789, tzinfo=UTC).timestamp()
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_the_extra_fields() -> None:
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter("api").format(
            record(method="/x/Y", duration_ms=1.5, at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    finally:
        request_id_var.reset(token)
    assert json.loads(line) == {
        "time": "2026-12-01T05:52:07.056+00:00",
        "level": "info",
        "component": "api",
        "logger": "ordermesh.rpc",
        "message": "rpc done",
        "request_id": "req-1",
        "method": "/x/Y",
        "duration_ms": 1.5,
        "at": "2026-01-01 00:00:00+00:00",
    }


def test_a_line_carries_its_exception() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        failed = record()
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter("api").format(failed))
    assert "ValueError: broken" in entry["exception"]
    assert "request_id" not in entry
