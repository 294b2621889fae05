// An ordermesh client for Node.js over native gRPC (@grpc/grpc-js, types from gen/ts): logs in,
// lists the catalog, places an order with an idempotency key and watches it to SHIPPED,
// printing one line per status. `--probe` makes one call that must fail and prints the
// decoded error as JSON (the end-to-end tests use it). See README, "Clients in other languages".
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import {
  type CallOptions,
  type ChannelCredentials,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import { AuthServiceClient } from "../../gen/ts/ordermesh/auth/v1/auth";
import { InventoryServiceClient, type Product } from "../../gen/ts/ordermesh/inventory/v1/inventory";
import {
  CreateOrderRequest,
  type Order,
  OrderServiceClient,
  OrderStatus,
  orderStatusToJSON,
  type WatchOrdersResponse,
} from "../../gen/ts/ordermesh/order/v1/order";
import { describe, isServiceError, type RichError, richError } from "./status";

const USAGE = `usage: node --import tsx examples/node/main.ts --email EMAIL --password PASSWORD
         [--address HOST:PORT] [--tls [--ca FILE]] [--product ID] [--quantity N]
         [--timeout SECONDS] [--probe invalid-argument|no-token|token|rate-limit [--token JWT]]`;

const PROBES = {
  "invalid-argument": "INVALID_ARGUMENT",
  "no-token": "UNAUTHENTICATED",
  token: "UNAUTHENTICATED",
  "rate-limit": "RESOURCE_EXHAUSTED",
} as const;
type Probe = keyof typeof PROBES;

// A free user's create limit is 20 a minute: the rate-limit probe stops at its first refusal.
const RATE_LIMIT_ATTEMPTS = 30;
const TERMINAL = new Set([
  OrderStatus.ORDER_STATUS_FAILED,
  OrderStatus.ORDER_STATUS_CANCELLED,
  OrderStatus.ORDER_STATUS_DELIVERED,
]);

class UsageError extends Error {}

interface Options {
  address: string;
  credentials: ChannelCredentials;
  email: string;
  password: string;
  product?: string;
  quantity: number;
  timeoutMs: number;
  probe?: Probe;
  token?: string;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: "string" },
      tls: { type: "boolean", default: false },
      ca: { type: "string" },
      email: { type: "string" },
      password: { type: "string" },
      product: { type: "string" },
      quantity: { type: "string", default: "1" },
      timeout: { type: "string", default: "60" },
      probe: { type: "string" },
      token: { type: "string" },
    },
  });
  const probe = values.probe;
  if (probe !== undefined && !(probe in PROBES)) {
    throw new UsageError(`unknown probe ${probe}`);
  }
  const needsLogin = probe === undefined || probe === "invalid-argument" || probe === "rate-limit";
  if (needsLogin && (values.email === undefined || values.password === undefined)) {
    throw new UsageError("--email and --password are required");
  }
  if (probe === "token" && values.token === undefined) {
    throw new UsageError("--probe token needs --token");
  }
  if (values.ca !== undefined && !values.tls) {
    throw new UsageError("--ca needs --tls");
  }
  const quantity = Number(values.quantity);
  const timeout = Number(values.timeout);
  if (!Number.isInteger(quantity) || !(timeout > 0)) {
    throw new UsageError("--quantity must be an integer and --timeout a positive number");
  }
  return {
    address: values.address ?? (values.tls ? "localhost:8443" : "localhost:8000"),
    credentials: values.tls
      ? credentials.createSsl(values.ca === undefined ? null : readFileSync(values.ca))
      : credentials.createInsecure(),
    email: values.email ?? "",
    password: values.password ?? "",
    product: values.product,
    quantity,
    timeoutMs: timeout * 1000,
    probe: probe as Probe | undefined,
    token: values.token,
  };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** A unary call as a promise, with a deadline. */
function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: Metadata,
  timeoutMs: number,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, metadata, { deadline: Date.now() + timeoutMs }, (error, response) =>
      error === null ? resolve(response) : reject(error),
    );
  });
}

function bearer(token: string, extra: Record<string, string> = {}): Metadata {
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  for (const [key, value] of Object.entries(extra)) {
    metadata.set(key, value);
  }
  return metadata;
}

function statusName(status: OrderStatus): string {
  return orderStatusToJSON(status).replace(/^ORDER_STATUS_/, "");
}

function price(product: Product): string {
  const money = product.unitPrice;
  return money === undefined ? "-" : `${money.currency} ${money.amount}`;
}

class Shop {
  readonly auth: AuthServiceClient;
  readonly inventory: InventoryServiceClient;
  readonly orders: OrderServiceClient;

  constructor(readonly opts: Options) {
    this.auth = new AuthServiceClient(opts.address, opts.credentials);
    // One HTTP/2 connection for all three services: they share the first client's channel.
    const shared = { channelOverride: this.auth.getChannel() };
    this.inventory = new InventoryServiceClient(opts.address, opts.credentials, shared);
    this.orders = new OrderServiceClient(opts.address, opts.credentials, shared);
  }

  close(): void {
    this.auth.close();
  }

  async login(): Promise<string> {
    const { email, password, timeoutMs } = this.opts;
    const login = this.auth.login.bind(this.auth);
    const reply = await unary(login, { email, password }, new Metadata(), timeoutMs);
    return reply.accessToken;
  }

  async catalog(): Promise<Product[]> {
    const page = await unary(
      this.inventory.listProducts.bind(this.inventory),
      { page: 1, pageSize: 100 },
      new Metadata(),
      this.opts.timeoutMs,
    );
    return page.products;
  }

  async createOrder(
    token: string,
    productId: string,
    quantity: number,
    idempotencyKey: string,
  ): Promise<Order> {
    const request = CreateOrderRequest.fromPartial({
      items: [{ productId, quantity }],
      shippingAddress: { street: "1 Main St", city: "Springfield", state: "IL", zip: "62701", country: "US" },
      paymentMethod: "tok_visa",
    });
    const reply = await unary(
      this.orders.createOrder.bind(this.orders),
      request,
      bearer(token, { "idempotency-key": idempotencyKey }),
      this.opts.timeoutMs,
    );
    if (reply.order === undefined) {
      throw new Error("CreateOrder answered without an order");
    }
    return reply.order;
  }

  /** The cursor of the user's feed as of now: the heartbeat that ends a watch's snapshot. */
  bookmark(token: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const stream = this.orders.watchOrders({ cursor: "", userId: "", orderId: "" }, bearer(token), {
        deadline: Date.now() + this.opts.timeoutMs,
      });
      let found: string | undefined;
      stream.on("data", (message: WatchOrdersResponse) => {
        if (message.heartbeat && found === undefined) {
          found = message.cursor;
          stream.cancel();
          resolve(found);
        }
      });
      stream.on("error", (error: ServiceError) => {
        if (found === undefined) reject(error);
      });
      stream.on("end", () => {
        if (found === undefined) reject(new Error("WatchOrders ended before its first heartbeat"));
      });
    });
  }

  /** Prints every status of the order after `cursor`, one line each, until it has shipped. */
  watchUntilShipped(token: string, orderId: string, cursor: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = this.orders.watchOrders({ cursor, userId: "", orderId }, bearer(token));
      let finished = false;
      const finish = (error?: Error): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        stream.cancel();
        if (error === undefined) resolve();
        else reject(error);
      };
      const timer = setTimeout(
        () => finish(new Error(`order ${orderId} did not ship within ${this.opts.timeoutMs / 1000} s`)),
        this.opts.timeoutMs,
      );
      stream.on("data", (message: WatchOrdersResponse) => {
        if (message.heartbeat || message.orderId !== orderId) return;
        console.log(updateLine(message));
        if (message.status === OrderStatus.ORDER_STATUS_SHIPPED) {
          finish();
        } else if (TERMINAL.has(message.status)) {
          finish(new Error(`order ${orderId} ended ${statusName(message.status)}: ${message.message}`));
        }
      });
      stream.on("error", (error: ServiceError) => finish(error));
      stream.on("end", () => finish(new Error("WatchOrders ended before the order shipped")));
    });
  }
}

function updateLine(message: WatchOrdersResponse): string {
  const parts = [`update ${statusName(message.status)}`, `version=${message.version}`];
  if (message.occurredAt !== undefined) parts.push(`at=${message.occurredAt.toISOString()}`);
  if (message.snapshot) parts.push("snapshot");
  if (message.carrier) parts.push(`carrier=${message.carrier}`, `tracking=${message.trackingNumber}`);
  if (message.message) parts.push(`message=${JSON.stringify(message.message)}`);
  return parts.join(" ");
}

async function order(shop: Shop): Promise<void> {
  const { opts } = shop;
  const token = await shop.login();
  console.log(`logged in as ${opts.email}`);

  const products = await shop.catalog();
  console.log(`catalog: ${products.length} products`);
  for (const product of products) {
    console.log(`  ${product.productId}  ${product.name}  ${price(product)}  stock ${product.stock}`);
  }
  const chosen = opts.product ?? products.find((p) => p.active && p.stock >= opts.quantity)?.productId;
  if (chosen === undefined) {
    throw new Error(`no product in the catalog has ${opts.quantity} in stock`);
  }

  const cursor = await shop.bookmark(token);
  const key = randomUUID();
  const created = await shop.createOrder(token, chosen, opts.quantity, key);
  const retried = await shop.createOrder(token, chosen, opts.quantity, key);
  if (retried.orderId !== created.orderId) {
    throw new Error(`the retry with idempotency key ${key} made a second order ${retried.orderId}`);
  }
  const total = created.totalAmount;
  console.log(
    `created order ${created.orderId}: ${opts.quantity} x ${chosen},` +
      ` total ${total?.currency} ${total?.amount}` +
      ` (idempotency-key ${key}; a retry with it returned the same order)`,
  );

  await shop.watchUntilShipped(token, created.orderId, cursor);
  console.log(`order ${created.orderId} shipped`);
}

/** One call that must fail; prints what arrived as JSON; true when it was the expected code. */
async function probe(shop: Shop, kind: Probe): Promise<boolean> {
  const { opts } = shop;
  let attempts = 0;
  let outcome: RichError | undefined;
  try {
    if (kind === "no-token" || kind === "token") {
      attempts = 1;
      const metadata = kind === "token" ? bearer(opts.token ?? "") : new Metadata();
      const listOrders = shop.orders.listOrders.bind(shop.orders);
      const request = { page: 1, pageSize: 1, status: "", userId: "" };
      await unary(listOrders, request, metadata, opts.timeoutMs);
    } else {
      const token = await shop.login();
      const quantity = kind === "invalid-argument" ? 0 : 1;
      const productId = opts.product ?? "kb-mech-01";
      const limit = kind === "rate-limit" ? RATE_LIMIT_ATTEMPTS : 1;
      while (attempts < limit) {
        attempts += 1;
        await shop.createOrder(token, productId, quantity, randomUUID());
      }
    }
  } catch (error) {
    if (!isServiceError(error)) throw error;
    outcome = richError(error);
  }
  console.log(JSON.stringify({ probe: kind, attempts, error: outcome ?? null }));
  return outcome?.codeName === PROBES[kind];
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = options(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError || error instanceof TypeError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  const shop = new Shop(opts);
  try {
    if (opts.probe !== undefined) {
      return (await probe(shop, opts.probe)) ? 0 : 1;
    }
    await order(shop);
    return 0;
  } catch (error) {
    if (isServiceError(error)) {
      const [first, ...rest] = describe(richError(error));
      console.error([`error: ${first}`, ...rest].join("\n"));
    } else {
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    }
    return 1;
  } finally {
    shop.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
