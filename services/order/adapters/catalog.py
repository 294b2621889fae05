"""The order service's view of the catalog, fetched from the inventory service over gRPC."""

from collections.abc import Mapping, Sequence

import grpc
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.common.errors import DependencyUnavailable
from services.common.money import Money
from services.order.domain.pricing import CatalogEntry

DEPENDENCY = "inventory service (catalog)"

# Answers that mean the inventory service is away or overloaded, not that the question was
# wrong: the caller may retry them.
OUTAGE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class InventoryCatalog:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        self._timeout = timeout

    async def entries(self, product_ids: Sequence[str]) -> Mapping[str, CatalogEntry]:
        try:
            response = await self._stub.BatchGetProducts(
                inventory_pb2.BatchGetProductsRequest(product_ids=list(product_ids)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in OUTAGE_CODES:
                raise DependencyUnavailable(
                    f"catalog unavailable: {error.code().name} {error.details()}",
                    dependency=DEPENDENCY,
                ) from error
            raise
        return {
            product.product_id: CatalogEntry(
                product_id=product.product_id,
                name=product.name,
                unit_price=Money(product.unit_price.amount_minor, product.unit_price.currency),
                active=product.active,
            )
            for product in response.products
        }
