"""The live order page (gateway/static), in a real browser through the public port: Debian's
Chromium driven by Playwright. A user registers, logs in, orders products of the test's own
and watches the order reach "Shipped" over the WebSocket without the page reloading; a
declined card shows "Failed" with its reason; an order is cancelled on a phone-sized screen;
after a dropped socket the page resumes from its last cursor; axe-core finds nothing to fix.
Screenshots go to the run dir (``.run/artifacts/browser``)."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    WebSocket,
    WebSocketRoute,
    async_playwright,
    expect,
)
from playwright.async_api import (
    Error as PlaywrightError,
)

from devstack import browser as debian_browser
from devstack import postgres, procs
from devstack.paths import REPO_ROOT, RUN_DIR
from tests.e2e.conftest import PASSWORD
from tests.e2e.pipeline import Books, products, wait_all_terminal

pytestmark = pytest.mark.e2e

ARTIFACTS = RUN_DIR / "artifacts" / "browser"
# The accessibility engine (npm axe-core, installed by `make tools` from package.json).
AXE = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
SHIP_TIMEOUT_MS = 120_000
PHONE = ViewportSize(width=375, height=812)
DESKTOP = ViewportSize(width=1280, height=900)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    try:
        executable = debian_browser.ensure_chromium()
    except RuntimeError as error:
        pytest.fail(f"the browser tests need Debian's chromium: {error}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(executable))
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
def page_url(base_url: str) -> str:
    """The page at the public port, where Envoy routes ``/`` to the gateway."""
    return f"{base_url}/"


@dataclass
class Tab:
    """One page of the site and what it saw: navigations after the first load, uncaught
    errors, and the WebSocket frames it received."""

    page: Page
    navigations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path

    async def accessibility_violations(self) -> list[str]:
        """What axe-core finds wrong with the page as it stands, one line per rule and node."""
        found = await self.page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})"
            ".then(r => r.violations.flatMap(v => v.nodes.map(n =>"
            " `${v.id} (${v.impact}): ${n.target.join(' ')}: ${n.failureSummary}`)))",
            AXE_TAGS,
        )
        return [str(line) for line in found]

    def updates(self, order_id: str) -> list[dict[str, object]]:
        received = [json.loads(frame) for frame in self.frames if frame.startswith("{")]
        return [
            m for m in received if m.get("type") == "order.update" and m["order_id"] == order_id
        ]


async def open_tab(
    browser: Browser, url: str, request: pytest.FixtureRequest, viewport: ViewportSize
) -> AsyncIterator[Tab]:
    context: BrowserContext = await browser.new_context(
        locale="en-US", timezone_id="UTC", viewport=viewport
    )
    page = await context.new_page()
    await page.add_init_script(path=AXE)
    tab = Tab(page)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            tab.errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    def on_websocket(socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: tab.frames.append(str(payload)))

    page.on("websocket", on_websocket)
    await page.goto(url)
    page.on(
        "framenavigated",
        lambda frame: tab.navigations.append(frame.url) if frame == page.main_frame else None,
    )
    try:
        yield tab
    finally:
        # The page as the test left it, pass or fail; a page that died has no picture.
        with suppress(PlaywrightError):
            await tab.screenshot(f"{request.node.name}-last")
        await context.close()


@pytest.fixture
async def desktop(
    browser: Browser, page_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Tab]:
    async for tab in open_tab(browser, page_url, request, DESKTOP):
        yield tab


@pytest.fixture
async def phone(
    browser: Browser, page_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Tab]:
    async for tab in open_tab(browser, page_url, request, PHONE):
        yield tab


@pytest.fixture
def books() -> Iterator[Books]:
    with products(browser_widget=1000, browser_gadget=1000) as created:
        yield created


def product_label(product_id: str) -> str:
    """What the catalog shows for a product of ``tests.e2e.pipeline.products``."""
    return f"Test {product_id}"


async def sign_up_and_in(page: Page) -> str:
    """Registers a fresh user with the page's form, then logs in with the keyboard only."""
    email = f"browser-{uuid.uuid4().hex[:12]}@example.com"
    register = page.get_by_role("region", name="Create an account")
    await register.get_by_label("Full name").fill("Browser Tester")
    await register.get_by_label("Email").fill(email)
    await register.get_by_label("Password").fill(PASSWORD)
    await register.get_by_role("button", name="Create account").click()
    await expect(register.get_by_role("status")).to_contain_text(f"Account created for {email}")

    login = page.get_by_role("region", name="Log in", exact=True)
    await expect(login.get_by_label("Email")).to_have_value(email)
    await expect(login.get_by_label("Password")).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    await expect(page.get_by_role("heading", name="New order")).to_be_focused()
    return email


async def place_order(page: Page, lines: dict[str, int], card: str) -> Locator:
    """Fills the order form (quantities by product, the card, an address), submits it and
    returns the new order's entry in the list."""
    form = page.get_by_role("region", name="New order")
    for product_id, quantity in lines.items():
        await form.get_by_label(product_label(product_id)).fill(str(quantity))
    await form.get_by_label("Card").select_option(label=card)
    await form.get_by_label("Street", exact=True).fill("1 Main St")
    await form.get_by_label("City", exact=True).fill("Springfield")
    await form.get_by_label("State", exact=True).fill("IL")
    await form.get_by_label("ZIP code", exact=True).fill("62701")
    await form.get_by_label("Country", exact=True).fill("US")
    listed = page.locator("#orders > li")
    before = await listed.count()
    await form.get_by_role("button", name="Place order").click()
    await expect(listed).to_have_count(before + 1)
    order_id = await listed.first.get_attribute("data-order-id")
    assert order_id, "the new order is listed first"
    await expect(form.get_by_label(product_label(next(iter(lines))))).to_have_value("0")
    return page.locator(f'#orders > li[data-order-id="{order_id}"]')


async def order_id_of(entry: Locator) -> str:
    order_id = await entry.get_attribute("data-order-id")
    assert order_id
    return order_id


async def test_an_order_ships_live_without_a_reload(desktop: Tab, books: Books) -> None:
    page = desktop.page
    await sign_up_and_in(page)
    await expect(page.locator("#live-state")).to_have_text("Live")
    widget, gadget = books.products
    form = page.get_by_role("region", name="New order")
    await expect(form.get_by_text(product_label(widget))).to_be_visible()
    await expect(form.locator(f'li[data-product-id="{widget}"]')).to_contain_text("$12.50")
    await page.evaluate("window.sameDocument = true")

    entry = await place_order(page, {widget: 2, gadget: 3}, card="Test Visa (approved)")
    order_id = await order_id_of(entry)
    await expect(entry).to_contain_text(f"2 \N{MULTIPLICATION SIGN} Test {widget} — $25.00")
    await expect(entry).to_contain_text(f"3 \N{MULTIPLICATION SIGN} Test {gadget} — $37.50")
    await expect(entry).to_contain_text("Total $62.50")
    await desktop.screenshot("placed")

    status = entry.locator("[data-status]")
    await expect(status).to_have_text("Shipped", timeout=SHIP_TIMEOUT_MS)
    carrier, tracking = shipment_of(order_id)
    await expect(entry).to_contain_text(f"Carrier: {carrier}")
    await expect(entry).to_contain_text(f"Tracking number: {tracking}")
    await expect(entry.get_by_role("button", name="Cancel order")).to_be_hidden()
    await desktop.screenshot("shipped")

    assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"
    assert desktop.navigations == [], desktop.navigations
    shipped = [m for m in desktop.updates(order_id) if m["status"] == "shipped"]
    assert shipped, f"no shipped update reached the page's socket: {desktop.updates(order_id)}"
    assert desktop.errors == []


async def test_a_declined_card_shows_failed_with_its_reason(desktop: Tab, books: Books) -> None:
    page = desktop.page
    await sign_up_and_in(page)
    widget, gadget = books.products
    entry = await place_order(page, {widget: 1, gadget: 1}, card="Test card that is declined")
    await expect(entry.locator("[data-status]")).to_have_text("Failed", timeout=SHIP_TIMEOUT_MS)
    await expect(entry.locator("[data-detail]")).to_contain_text("Reason:")
    await expect(entry.locator("[data-detail]")).to_contain_text("declined")
    await expect(page.get_by_role("status").filter(has_text="is now Failed")).to_have_count(1)
    await desktop.screenshot("declined")
    assert desktop.navigations == [], desktop.navigations
    assert desktop.errors == []


async def test_an_order_is_cancelled_on_a_phone(phone: Tab, books: Books) -> None:
    page = phone.page
    email = await sign_up_and_in(page)
    widget, _ = books.products
    # Held in PENDING: with the outbox relay paused, nothing downstream hears of the order.
    with paused("relay"):
        entry = await place_order(page, {widget: 4}, card="Test Visa (approved)")
        await expect(entry.locator("[data-status]")).to_have_text("Pending")
        await entry.get_by_role("button", name="Cancel order").click()
        await expect(entry.locator("[data-status]")).to_have_text("Cancelled")
        await expect(entry.get_by_role("heading")).to_be_focused()
        await expect(entry.get_by_role("button", name="Cancel order")).to_be_hidden()
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await phone.screenshot("phone-cancelled")

    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("region", name="Log in", exact=True)).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    register = page.get_by_role("region", name="Create an account")
    await register.get_by_label("Full name").fill("Browser Tester")
    await register.get_by_label("Email").fill(email)
    await register.get_by_label("Password").fill(PASSWORD)
    await register.get_by_role("button", name="Create account").click()
    await expect(register.get_by_role("alert")).to_contain_text("already")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await phone.screenshot("phone-error")
    assert phone.errors == []


@dataclass
class Connection:
    """One socket the page opened, as the test's man in the middle saw it."""

    url: str
    refused: bool
    received: list[dict[str, object]] = field(default_factory=list)

    @property
    def cursor(self) -> str | None:
        values = parse_qs(urlsplit(self.url).query).get("cursor")
        return values[0] if values else None

    def last_cursor(self) -> str | None:
        """The cursor a client resumes from: the last one seen, snapshots aside."""
        cursors = [
            str(m["cursor"]) for m in self.received if m.get("cursor") and not m.get("snapshot")
        ]
        return cursors[-1] if cursors else None


async def test_the_page_resumes_from_its_cursor_after_the_socket_drops(
    desktop: Tab, books: Books
) -> None:
    """The socket drops, the bridge refuses the page for a while, an order ships meanwhile:
    the page reconnects with the last cursor it saw and gets exactly what it missed."""
    page = desktop.page
    connections: list[Connection] = []
    routes: list[WebSocketRoute] = []
    bridge_away = False

    async def man_in_the_middle(route: WebSocketRoute) -> None:
        connection = Connection(route.url, refused=bridge_away)
        connections.append(connection)
        if connection.refused:
            await route.close(code=4007, reason="test: the bridge is away")
            return
        server = route.connect_to_server()

        def forward(message: str | bytes) -> None:
            if isinstance(message, str) and message.startswith("{"):
                connection.received.append(json.loads(message))
            route.send(message)

        server.on_message(forward)
        routes.append(route)

    await page.route_web_socket(re.compile(r"/ws/orders/"), man_in_the_middle)
    await sign_up_and_in(page)
    widget, gadget = books.products
    first = await place_order(page, {widget: 1}, card="Test Visa (approved)")
    await expect(first.locator("[data-status]")).to_have_text("Shipped", timeout=SHIP_TIMEOUT_MS)
    dropped = connections[-1]
    resume_from = dropped.last_cursor()
    assert resume_from, dropped.received

    bridge_away = True
    await routes[-1].close(code=1001, reason="test: going away")
    await expect(page.locator("#live-state")).to_have_text("Reconnecting…")
    second = await place_order(page, {gadget: 2}, card="Test Visa (approved)")
    second_id = await order_id_of(second)
    assert wait_all_terminal([second_id]) == {second_id: "SHIPPED"}
    await expect(second.locator("[data-status]")).to_have_text("Pending")
    assert any(c.refused for c in connections), "the page did not try to reconnect"

    bridge_away = False
    await expect(second.locator("[data-status]")).to_have_text("Shipped", timeout=60_000)
    refused = [c for c in connections if c.refused]
    resumed = connections[-1]
    assert not resumed.refused
    assert {c.cursor for c in [*refused, resumed]} == {resume_from}
    missed = [m for m in resumed.received if m.get("type") == "order.update"]
    assert all(m["order_id"] == second_id for m in missed), "an update seen before came again"
    versions = [int(str(m["version"])) for m in missed]
    assert versions == sorted(set(versions)), f"repeated or out of order: {versions}"
    assert missed[-1]["status"] == "shipped"
    await desktop.screenshot("resumed")
    assert desktop.navigations == []
    assert desktop.errors == []


async def test_the_page_passes_an_accessibility_scan(
    desktop: Tab, phone: Tab, books: Books
) -> None:
    assert await desktop.accessibility_violations() == []
    await sign_up_and_in(desktop.page)
    widget, gadget = books.products
    await place_order(desktop.page, {widget: 1, gadget: 2}, card="Test Visa (approved)")
    assert await desktop.accessibility_violations() == []

    assert await phone.accessibility_violations() == []
    await sign_up_and_in(phone.page)
    await place_order(phone.page, {gadget: 1}, card="Test card that is declined")
    assert await phone.accessibility_violations() == []
    assert await phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert desktop.errors == phone.errors == []


def shipment_of(order_id: str) -> tuple[str, str]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT carrier, tracking_number FROM fulfillment.shipments WHERE order_id = %s",
            (order_id,),
        ).fetchone()
    assert row is not None, f"order {order_id} has no shipment"
    return str(row[0]), str(row[1])


@contextmanager
def paused(name: str) -> Iterator[None]:
    """Stops daemon ``name`` (SIGSTOP) for the block, then lets it go on (SIGCONT)."""
    pid = procs.read_pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
