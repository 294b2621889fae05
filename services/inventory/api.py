"""InventoryService over gRPC: the public catalog."""

from typing import Any

import grpc
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.common.errors import InvalidArgument, NotFound
from services.common.paging import page_from_request
from services.inventory.domain.model import Product
from services.inventory.domain.ports import ProductCatalog
from services.platform.convert import money_to_proto

SERVICE = "ordermesh.inventory.v1.InventoryService"
PUBLIC_METHODS = tuple(
    f"/{SERVICE}/{name}" for name in ("ListProducts", "GetProduct", "BatchGetProducts")
)
MAX_BATCH = 100

Context = grpc.aio.ServicerContext[Any, Any]


def product_to_proto(product: Product) -> inventory_pb2.Product:
    return inventory_pb2.Product(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        unit_price=money_to_proto(product.unit_price),
        stock=product.stock,
        active=product.active,
    )


class InventoryApi(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, catalog: ProductCatalog) -> None:
        self._catalog = catalog

    async def ListProducts(
        self, request: inventory_pb2.ListProductsRequest, context: Context
    ) -> inventory_pb2.ListProductsResponse:
        page = page_from_request(request.page, request.page_size, default_size=50)
        products, total = await self._catalog.list_active(page)
        return inventory_pb2.ListProductsResponse(
            products=[product_to_proto(p) for p in products],
            total=total,
            page=page.number,
            page_size=page.size,
            has_next=page.has_next(total),
        )

    async def GetProduct(
        self, request: inventory_pb2.GetProductRequest, context: Context
    ) -> inventory_pb2.GetProductResponse:
        if not request.product_id:
            raise InvalidArgument("product_id is required", field="product_id")
        product = await self._catalog.get(request.product_id)
        if product is None:
            raise NotFound(f"product {request.product_id!r} not found")
        return inventory_pb2.GetProductResponse(product=product_to_proto(product))

    async def BatchGetProducts(
        self, request: inventory_pb2.BatchGetProductsRequest, context: Context
    ) -> inventory_pb2.BatchGetProductsResponse:
        if len(request.product_ids) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} product ids per call", field="product_ids")
        products = await self._catalog.get_many(list(dict.fromkeys(request.product_ids)))
        return inventory_pb2.BatchGetProductsResponse(
            products=[product_to_proto(p) for p in products]
        )
