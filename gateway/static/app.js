// The live order page: account, catalog, new order, and the user's orders kept current by
// the WebSocket feed. Everything the API says is put on the page as text, never as HTML.

import { ApiError, Session, SessionEnded, listProducts } from "./api.js";
import { OrderFeed } from "./live.js";

const STATUS_WORDS = {
  pending: "Pending",
  validated: "Validated",
  paid: "Paid",
  fulfilled: "Ready to ship",
  shipped: "Shipped",
  delivered: "Delivered",
  failed: "Failed",
  cancelled: "Cancelled",
};
// CancelOrder is accepted until the order is released to the warehouse (FULFILLED).
const CANCELLABLE = new Set(["pending", "validated", "paid"]);
const ORDERS_PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

// --- formatting -------------------------------------------------------------------------

function statusKey(status) {
  return String(status || "").replace(/^ORDER_STATUS_/i, "").toLowerCase();
}

function statusWord(status) {
  const key = statusKey(status);
  return STATUS_WORDS[key] || (key ? key[0].toUpperCase() + key.slice(1) : "Unknown");
}

// Money travels as integer minor units plus a currency; it is formatted from an exact decimal
// string (Intl formats strings without going through a float).
function formatMoney(currency, amountMinor) {
  if (!currency) return "—";
  const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
  const digits = format.resolvedOptions().maximumFractionDigits;
  const minor = BigInt(amountMinor || 0);
  const sign = minor < 0n ? "-" : "";
  const padded = (minor < 0n ? -minor : minor).toString().padStart(digits + 1, "0");
  const decimal = digits
    ? `${sign}${padded.slice(0, -digits)}.${padded.slice(-digits)}`
    : `${sign}${padded}`;
  return format.format(decimal);
}

const money = (value) => (value ? formatMoney(value.currency, value.amount_minor) : "—");

function formatDate(value, format = dateFormat) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : format.format(date);
}

// --- small helpers ----------------------------------------------------------------------

const announcer = $("announcer");
function announce(text) {
  announcer.textContent = "";
  // A fresh node a moment later, so the same words twice are still read out.
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

function showError(target, error) {
  target.textContent = error ? error.message || String(error) : "";
}

async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fill(node, name, text) {
  node.querySelector(`[data-${name}]`).textContent = text;
}

// --- state ------------------------------------------------------------------------------

const session = new Session(sessionEnded);
const products = new Map(); // product_id -> { product, input }
const orders = new Map(); // order_id -> { view, node }
const fetching = new Map(); // order_id -> Promise, for updates about orders not shown yet
let feed = null;
let firstPageShown = null; // a Promise: updates wait for the first page of orders
let nextOrdersPage = 1;
let orderKey = null;

// --- account ----------------------------------------------------------------------------

function formFields(form) {
  return Object.fromEntries(new FormData(form).entries());
}

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector("[data-error]");
  const notice = form.querySelector("[data-notice]");
  showError(error, null);
  notice.textContent = "";
  const fields = formFields(form);
  try {
    await busy(form.querySelector("button"), () => session.register(fields));
  } catch (failure) {
    showError(error, failure);
    return;
  }
  form.reset();
  notice.textContent = `Account created for ${fields.email}. Log in to continue.`;
  $("login-email").value = fields.email;
  $("login-password").focus();
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector("[data-error]");
  showError(error, null);
  const { email, password } = formFields(form);
  try {
    await busy(form.querySelector("button"), () => session.login(email, password));
  } catch (failure) {
    showError(error, failure);
    return;
  }
  form.reset();
  enterSignedIn();
  announce(`Logged in as ${email}.`);
  $("order-heading").focus();
});

$("logout").addEventListener("click", async () => {
  await busy($("logout"), () => session.logout());
  leaveSignedIn();
  announce("Logged out.");
  $("login-email").focus();
});

function sessionEnded(ended) {
  leaveSignedIn();
  showError($("login-form").querySelector("[data-error]"), ended);
  $("login-email").focus();
}

function enterSignedIn() {
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("account").hidden = false;
  $("account-email").textContent = session.user.email;
  loadCatalog();
  orders.clear();
  $("orders").replaceChildren();
  nextOrdersPage = 1;
  firstPageShown = loadOrders();
  feed = new OrderFeed({
    userId: session.user.user_id,
    accessToken: (options) => session.accessToken(options),
    onUpdate: applyUpdate,
    onState: showLiveState,
  });
  feed.start();
}

function leaveSignedIn() {
  if (feed) feed.stop();
  feed = null;
  orders.clear();
  fetching.clear();
  products.clear();
  $("orders").replaceChildren();
  $("catalog").replaceChildren();
  $("signed-in").hidden = true;
  $("account").hidden = true;
  $("signed-out").hidden = false;
}

const LIVE_STATES = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  off: "Live updates off",
};

function showLiveState(state, reason) {
  const node = $("live-state");
  node.dataset.state = state;
  node.textContent = LIVE_STATES[state];
  if (state === "off") {
    node.textContent += reason ? `: ${reason}` : "";
    announce(`${node.textContent}. Reload the page to see new statuses.`);
  }
}

// --- catalog and new order -------------------------------------------------------------

async function loadCatalog() {
  const state = $("catalog-state");
  state.textContent = "Loading the catalog…";
  state.hidden = false;
  let list;
  try {
    list = await listProducts();
  } catch (failure) {
    state.textContent = `The catalog could not be loaded: ${failure.message}`;
    return;
  }
  const template = $("product-template");
  products.clear();
  const nodes = list.map((product) => {
    const node = template.content.firstElementChild.cloneNode(true);
    const inputId = `qty-${product.product_id}`;
    const input = node.querySelector("[data-quantity]");
    input.id = inputId;
    input.name = product.product_id;
    node.querySelector("label").htmlFor = inputId;
    node.dataset.productId = product.product_id;
    fill(node, "name", product.name || product.product_id);
    fill(node, "price", money(product.unit_price));
    const stock = Number(product.stock || 0);
    fill(node, "stock", stock > 0 ? `${stock} in stock` : "out of stock");
    input.max = String(Math.max(0, Math.min(100, stock)));
    input.disabled = stock <= 0;
    input.addEventListener("input", showOrderTotal);
    products.set(product.product_id, { product, input });
    return node;
  });
  $("catalog").replaceChildren(...nodes);
  state.textContent = nodes.length ? "" : "The catalog is empty.";
  state.hidden = nodes.length > 0;
  showOrderTotal();
}

function chosenItems() {
  const items = [];
  for (const [productId, { product, input }] of products) {
    const quantity = Number(input.value);
    if (Number.isInteger(quantity) && quantity > 0) items.push({ productId, product, quantity });
  }
  return items;
}

function showOrderTotal() {
  const totals = new Map();
  for (const { product, quantity } of chosenItems()) {
    const { currency, amount_minor: minor } = product.unit_price || {};
    totals.set(currency, (totals.get(currency) || 0n) + BigInt(minor || 0) * BigInt(quantity));
  }
  $("order-total").textContent = totals.size
    ? Array.from(totals, ([currency, minor]) => formatMoney(currency, minor)).join(" + ")
    : "—";
}

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector("[data-error]");
  showError(error, null);
  const items = chosenItems();
  if (!items.length) {
    showError(error, new Error("Choose a quantity for at least one product."));
    form.querySelector("[data-quantity]:not(:disabled)")?.focus();
    return;
  }
  const fields = formFields(form);
  const body = {
    items: items.map(({ productId, quantity }) => ({ product_id: productId, quantity })),
    shipping_address: {
      street: fields.street,
      city: fields.city,
      state: fields.state,
      zip: fields.zip,
      country: fields.country,
    },
    payment_method: fields.payment_method,
  };
  // The same key until the server has answered, so a retry after a lost answer can never
  // place a second order.
  orderKey = orderKey || newIdempotencyKey();
  let order;
  try {
    order = await busy(form.querySelector('button[type="submit"]'), () =>
      session.call("POST", "/api/v1/orders", { body, headers: { "Idempotency-Key": orderKey } }),
    );
  } catch (failure) {
    if (failure instanceof ApiError && failure.status !== 0) orderKey = null;
    if (!(failure instanceof SessionEnded)) showError(error, failure);
    return;
  }
  orderKey = null;
  for (const { input } of products.values()) input.value = "0";
  showOrderTotal();
  showOrder(viewOf(order), { first: true });
  announce(`Order ${shortId(order.order_id)} placed: ${statusWord(order.status)}.`);
});

// --- orders -----------------------------------------------------------------------------

const shortId = (orderId) => String(orderId).slice(0, 8);

// What a row shows, from a REST order.
function viewOf(order) {
  return {
    orderId: order.order_id,
    status: statusKey(order.status),
    version: Number(order.version || 0),
    reason: order.status_reason || "",
    carrier: order.carrier || "",
    trackingNumber: order.tracking_number || "",
    estimatedDelivery: order.estimated_delivery || "",
    createdAt: order.created_at,
    total: order.total_amount,
    items: order.items || [],
  };
}

async function loadOrders() {
  const more = $("orders-more");
  const errorNode = $("orders-error");
  showError(errorNode, null);
  let page;
  try {
    page = await busy(more, () =>
      session.call("GET", `/api/v1/orders?page=${nextOrdersPage}&page_size=${ORDERS_PAGE_SIZE}`),
    );
  } catch (failure) {
    if (!(failure instanceof SessionEnded)) showError(errorNode, failure);
    return;
  }
  for (const order of page.orders || []) showOrder(viewOf(order), { first: false });
  nextOrdersPage += 1;
  more.hidden = !page.has_next;
  $("orders-empty").hidden = orders.size > 0;
}

$("orders-more").addEventListener("click", loadOrders);

// Adds the order, or replaces what its row shows if this view is newer.
function showOrder(view, { first }) {
  const known = orders.get(view.orderId);
  if (known) {
    if (view.version > known.view.version) {
      known.view = view;
      renderOrder(known.node, view);
    }
    return known;
  }
  const node = $("order-template").content.firstElementChild.cloneNode(true);
  node.dataset.orderId = view.orderId;
  const heading = node.querySelector("h3");
  heading.id = `order-${view.orderId}`;
  heading.tabIndex = -1;
  node.querySelector("article").setAttribute("aria-labelledby", heading.id);
  node.querySelector("[data-cancel]").addEventListener("click", () => cancelOrder(view.orderId));
  renderOrder(node, view);
  const list = $("orders");
  if (first) list.prepend(node);
  else list.append(node);
  const entry = { view, node };
  orders.set(view.orderId, entry);
  $("orders-empty").hidden = true;
  return entry;
}

function renderOrder(node, view) {
  fill(node, "short-id", shortId(view.orderId));
  const status = node.querySelector("[data-status]");
  status.textContent = statusWord(view.status);
  status.dataset.status = view.status;
  const created = node.querySelector("[data-created]");
  created.dateTime = view.createdAt || "";
  created.textContent = formatDate(view.createdAt);
  fill(node, "total", `Total ${money(view.total)}`);
  node.querySelector("[data-lines]").replaceChildren(
    ...view.items.map((item) => {
      const line = document.createElement("li");
      line.textContent =
        `${item.quantity} × ${item.name || item.product_id} — ${money(item.total_price)}`;
      return line;
    }),
  );
  const detail = node.querySelector("[data-detail]");
  detail.textContent = orderDetail(view);
  detail.hidden = !detail.textContent;
  node.querySelector("[data-cancel]").hidden = !CANCELLABLE.has(view.status);
}

function orderDetail(view) {
  if (view.status === "failed" || view.status === "cancelled") {
    return view.reason ? `Reason: ${view.reason}` : "";
  }
  if (view.status === "shipped" || view.status === "delivered") {
    const parts = [];
    if (view.carrier) parts.push(`Carrier: ${view.carrier}`);
    if (view.trackingNumber) parts.push(`Tracking number: ${view.trackingNumber}`);
    const delivery = formatDate(view.estimatedDelivery, dayFormat);
    if (delivery) parts.push(`Estimated delivery: ${delivery}`);
    return parts.join(" · ");
  }
  return "";
}

// An order.update from the feed; an update no newer than the row is ignored. The first
// page of orders is shown before any update is applied. A snapshot of an order not shown
// (an older one, past the first page) is left alone; a change to an order not shown yet (one
// placed elsewhere) fetches it.
async function applyUpdate(message) {
  const orderId = message.order_id;
  if (!orderId) return;
  const current = feed;
  await firstPageShown;
  if (feed !== current) return;
  const known = orders.get(orderId);
  if (!known) {
    if (message.snapshot) return;
    if (!fetching.has(orderId)) {
      fetching.set(
        orderId,
        session
          .call("GET", `/api/v1/orders/${encodeURIComponent(orderId)}`)
          .then((order) => showOrder(viewOf(order), { first: true }))
          .catch(() => undefined)
          .finally(() => fetching.delete(orderId)),
      );
    }
    fetching.get(orderId).then(() => {
      if (orders.has(orderId)) applyUpdate(message);
    });
    return;
  }
  const version = Number(message.version || 0);
  if (version <= known.view.version) return;
  const status = statusKey(message.status);
  const data = message.data || {};
  const failedOrCancelled = status === "failed" || status === "cancelled";
  known.view = {
    ...known.view,
    status,
    version,
    reason: failedOrCancelled ? message.message || known.view.reason : known.view.reason,
    carrier: data.carrier || known.view.carrier,
    trackingNumber: data.tracking_number || known.view.trackingNumber,
    estimatedDelivery: data.estimated_delivery || known.view.estimatedDelivery,
  };
  renderOrder(known.node, known.view);
  const reason = failedOrCancelled && known.view.reason ? ` ${known.view.reason}` : "";
  announce(`Order ${shortId(orderId)} is now ${statusWord(status)}.${reason}`);
}

async function cancelOrder(orderId) {
  const entry = orders.get(orderId);
  const errorNode = $("orders-error");
  showError(errorNode, null);
  const button = entry.node.querySelector("[data-cancel]");
  let order;
  try {
    order = await busy(button, () =>
      session.call("DELETE", `/api/v1/orders/${encodeURIComponent(orderId)}`),
    );
  } catch (failure) {
    if (!(failure instanceof SessionEnded)) {
      showError(errorNode, new Error(`Order ${shortId(orderId)} was not cancelled: ${failure.message}`));
    }
    return;
  }
  showOrder(viewOf(order), { first: false });
  entry.node.querySelector("h3").focus();
  announce(`Order ${shortId(orderId)} is now ${statusWord(order.status)}.`);
}

// --- start ------------------------------------------------------------------------------

if (session.signedIn) enterSignedIn();
