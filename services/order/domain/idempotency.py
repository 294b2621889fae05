"""Idempotent creation: one key, scoped to its user, names one order for a limited time.
A retry with the same key and the same request gets the first order back; the same key with
a different request is a client bug and is refused."""

import hashlib
import json
from dataclasses import asdict, dataclass

from services.common.errors import Conflict, InvalidArgument
from services.order.domain.commands import CreateOrder

MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    key: str
    fingerprint: str


def claim_for(command: CreateOrder) -> IdempotencyClaim | None:
    key = command.idempotency_key
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidArgument(
            f"idempotency key must be 1..{MAX_KEY_LENGTH} printable characters",
            field="idempotency_key",
        )
    return IdempotencyClaim(key, fingerprint(command))


def fingerprint(command: CreateOrder) -> str:
    content = {
        "lines": [
            [line.product_id, line.quantity, str(line.expected_unit_price)]
            for line in command.lines
        ],
        "shipping_address": asdict(command.shipping_address),
        "payment_method": command.payment_method,
        "expected_total": str(command.expected_total),
        "metadata": command.metadata,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def ensure_same_request(claim: IdempotencyClaim, stored_fingerprint: str) -> None:
    if claim.fingerprint != stored_fingerprint:
        raise Conflict(
            "this idempotency key was already used with a different request; "
            "use a new key for a new order"
        )
