"""The wall clock and fresh identifiers, as the composition roots hand them to handlers (tests
pass fixed ones instead)."""

import uuid
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())
