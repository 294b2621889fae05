"""Seeds the demo catalog (`python -m services.inventory.seed`). Safe to re-run: existing
products, and their stock, are left as they are."""

import asyncio

import psycopg
from psycopg.rows import dict_row

from services.common.money import Money
from services.inventory.adapters.repository import upsert_products
from services.inventory.domain.model import Product
from services.platform.settings import Settings

DEMO_CATALOG = (
    Product(
        "kb-mech-01",
        "Mechanical Keyboard",
        "Tenkeyless, brown switches",
        Money(8999, "USD"),
        500,
        True,
    ),
    Product("mouse-wl-02", "Wireless Mouse", "Ergonomic, 2.4 GHz", Money(2999, "USD"), 1000, True),
    Product(
        "usb-c-hub-03", "USB-C Hub", "7 ports, 100 W pass-through", Money(4550, "USD"), 300, True
    ),
    Product("monitor-27-04", "27-inch Monitor", "QHD IPS, 144 Hz", Money(32900, "USD"), 50, True),
    Product("cable-usb-05", "USB-C Cable", "2 m, braided", Money(999, "USD"), 5000, True),
    Product("headset-06", "Headset", "Closed-back with microphone", Money(7450, "USD"), 200, True),
    Product("webcam-07", "Webcam", "1080p, retired model", Money(5900, "USD"), 0, False),
    # The product ids of the original API's documentation and browser page, at the prices
    # its documentation uses, so its documented requests work against the demo stack.
    Product(
        "prod-001",
        "Original demo product",
        "The product of the original API's documented requests",
        Money(2999, "USD"),
        100_000,
        True,
    ),
    Product(
        "prod-1",
        "Original demo product (short id)",
        "The product id of the original implementation guide",
        Money(2999, "USD"),
        100_000,
        True,
    ),
)


async def seed(settings: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, row_factory=dict_row
    ) as conn:
        await upsert_products(conn, DEMO_CATALOG)
        await conn.commit()


if __name__ == "__main__":
    asyncio.run(seed(Settings.from_env()))
