"""The bounded contexts of ordermesh, declared once: each is a package under services/ with a
``bootstrap`` module, a public gRPC service, and a Postgres schema of its own.

Composition roots find a context's wiring by convention (``services.<name>.bootstrap``), the
edge routes to its service, devstack and compose create its database role from this list.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    name: str
    grpc_service: str
    schema: str

    @property
    def bootstrap_module(self) -> str:
        return f"services.{self.name}.bootstrap"


CONTEXTS: tuple[Context, ...] = (
    Context("auth", "ordermesh.auth.v1.AuthService", "auth"),
    Context("order", "ordermesh.order.v1.OrderService", "orders"),
    Context("inventory", "ordermesh.inventory.v1.InventoryService", "inventory"),
    Context("payment", "ordermesh.payment.v1.PaymentService", "payment"),
    Context("fulfillment", "ordermesh.fulfillment.v1.FulfillmentService", "fulfillment"),
    Context("webhook", "ordermesh.webhook.v1.WebhookService", "webhook"),
)
CONTEXT_NAMES: tuple[str, ...] = tuple(context.name for context in CONTEXTS)
PUBLIC_SERVICE_NAMES: tuple[str, ...] = tuple(context.grpc_service for context in CONTEXTS)


def context(name: str) -> Context:
    for found in CONTEXTS:
        if found.name == name:
            return found
    raise KeyError(f"no bounded context named {name!r}; known: {', '.join(CONTEXT_NAMES)}")
