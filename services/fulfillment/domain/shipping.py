"""How an order is handed to a carrier: which carrier, its tracking number and when it
should arrive. Pure functions; the caller supplies the clock and the randomness."""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.fulfillment.domain.model import NewShipment


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    tracking_prefix: str
    tracking_digits: int
    transit_days: int


CARRIERS: tuple[Carrier, ...] = (
    Carrier("UPS", "1Z", 16, 3),
    Carrier("FedEx", "FX", 12, 2),
    Carrier("USPS", "94", 20, 5),
    Carrier("DHL", "JD", 18, 4),
)


def choose_carrier(order_id: str, carriers: tuple[Carrier, ...] = CARRIERS) -> Carrier:
    """The carrier of an order: the same for every replica and every redelivery (a stable
    digest, not Python's per-process salted ``hash``)."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return carriers[int.from_bytes(digest[:8], "big") % len(carriers)]


def tracking_number(carrier: Carrier, entropy: int) -> str:
    """The carrier's prefix and ``tracking_digits`` digits drawn from ``entropy`` (e.g. the
    128 bits of a random UUID: collisions are as unlikely as the digit count allows)."""
    digits = str(entropy % 10**carrier.tracking_digits).zfill(carrier.tracking_digits)
    return f"{carrier.tracking_prefix}{digits}"


def plan_shipment(
    *, order_id: str, user_id: str, shipment_id: str, entropy: int, shipped_at: datetime
) -> NewShipment:
    """The shipment an order leaves with at ``shipped_at``."""
    carrier = choose_carrier(order_id)
    return NewShipment(
        shipment_id=shipment_id,
        order_id=order_id,
        user_id=user_id,
        carrier=carrier.name,
        tracking_number=tracking_number(carrier, entropy),
        shipped_at=shipped_at,
        estimated_delivery=shipped_at + timedelta(days=carrier.transit_days),
    )
