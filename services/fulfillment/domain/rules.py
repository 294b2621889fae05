"""What makes a shipment well-formed."""

from services.common.errors import InvalidArgument
from services.fulfillment.domain.model import NewShipment

MAX_CARRIER_LENGTH = 100
MAX_TRACKING_NUMBER_LENGTH = 100


def validate_shipment(shipment: NewShipment) -> None:
    if not 0 < len(shipment.carrier) <= MAX_CARRIER_LENGTH:
        raise InvalidArgument(
            f"carrier must be 1 to {MAX_CARRIER_LENGTH} characters", field="carrier"
        )
    if not 0 < len(shipment.tracking_number) <= MAX_TRACKING_NUMBER_LENGTH:
        raise InvalidArgument(
            f"tracking_number must be 1 to {MAX_TRACKING_NUMBER_LENGTH} characters",
            field="tracking_number",
        )
    if shipment.estimated_delivery < shipment.shipped_at:
        raise InvalidArgument(
            "estimated_delivery must not be before shipped_at", field="estimated_delivery"
        )
