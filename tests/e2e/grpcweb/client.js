#!/usr/bin/env node
// One grpc-web call through the public port, made by the grpc-web runtime (npm `grpc-web`,
// GrpcWebClientBase) as a browser would make it. There is no protoc-gen-grpc-web here (its
// npm package downloads a binary), so each MethodDescriptor gets its serializers from
// protobufjs, which loads the contract itself: protos/ and the Google API protos that
// tools/protodeps.py copies into build/protodeps.
//
// usage: node client.js --base-url URL --method pkg.Service/Method [--mode grpcwebtext|grpcweb]
//                       [--metadata key=value ...] [REQUEST_JSON]
//
// Prints one JSON line per response message, {"message": {...}} (proto field names, enums
// by name, 64-bit integers as strings), as each arrives, then one line {"status": {"code":
// N, "message": "...", "headers": {...}}} (the response headers, less the grpc-* ones the
// runtime keeps to itself). A server stream runs until the server ends it or standard input
// closes (then the call is cancelled and the status is CANCELLED). Exits 0 whenever the call
// got an answer, whatever its code; 2 for a usage error.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const protobuf = require("protobufjs");
const grpcWeb = require("grpc-web");
const XHR2 = require("xhr2");

const REPO_ROOT = path.resolve(__dirname, "..", "..", "..");
// Where imports are looked up, in order: ours, the Google API protos, then the well-known
// types protobufjs ships (google/protobuf/*.proto).
const PROTO_PATH = [
  path.join(REPO_ROOT, "protos"),
  path.join(REPO_ROOT, "build", "protodeps"),
  path.dirname(require.resolve("protobufjs/package.json")),
];
const CANCELLED = 1;
const FORMAT_OF_MODE = { grpcwebtext: "text", grpcweb: "binary" };

// The grpc-web runtime talks through XMLHttpRequest; xhr2 provides it in Node. In text mode
// grpc-web streams by reading responseText as it grows, at every readystatechange. Browsers
// allow that: the XHR standard fires readystatechange for every chunk of the body ("process
// response body chunk") and responseText is the text received so far. xhr2 fires it once
// and fills responseText only when the response is complete, so a server stream would show
// nothing until it ended: this subclass adds those two behaviours. Binary mode (unary only in
// grpc-web) reads an ArrayBuffer once the response is complete, which xhr2 does as it is.
class StreamingXMLHttpRequest extends XHR2 {
  _onHttpResponseData(response, data) {
    super._onHttpResponseData(response, data);
    if (this._response === response && (this.responseType === "" || this.responseType === "text")) {
      this.responseText = Buffer.concat(this._responseParts).toString("utf8");
      this._setReadyState(XHR2.LOADING);
    }
  }
}

function fail(message) {
  process.stderr.write(`client.js: ${message}\n`);
  process.exit(2);
}

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      "base-url": { type: "string" },
      method: { type: "string" },
      mode: { type: "string", default: "grpcwebtext" },
      metadata: { type: "string", multiple: true, default: [] },
    },
  });
  if (!values["base-url"] || !values.method) fail("--base-url and --method are required");
  if (!(values.mode in FORMAT_OF_MODE)) fail(`unknown --mode ${values.mode}`);
  const metadata = {};
  for (const pair of values.metadata) {
    const cut = pair.indexOf("=");
    if (cut < 1) fail(`--metadata wants key=value, got ${pair}`);
    metadata[pair.slice(0, cut)] = pair.slice(cut + 1);
  }
  if (positionals.length > 1) fail("at most one REQUEST_JSON");
  return { ...values, metadata, request: JSON.parse(positionals[0] ?? "{}") };
}

function loadContract(protoFile) {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    PROTO_PATH.map((dir) => path.join(dir, target)).find((file) => fs.existsSync(file)) ??
    target;
  root.loadSync(protoFile, { keepCase: true });
  root.resolveAll();
  return root;
}

// `ordermesh.order.v1.OrderService/CreateOrder` is declared in ordermesh/order/v1/*.proto.
function describe(fullMethod) {
  const [serviceName, methodName] = fullMethod.split("/");
  const packageDir = path.join(PROTO_PATH[0], ...serviceName.split(".").slice(0, -1));
  if (!methodName || !fs.existsSync(packageDir)) fail(`no contract for ${fullMethod}`);
  const protoFiles = fs
    .readdirSync(packageDir)
    .filter((name) => name.endsWith(".proto"))
    .map((name) => path.join(packageDir, name));
  const service = loadContract(protoFiles).lookupService(serviceName);
  const method = service.methods[methodName];
  if (!method) fail(`${serviceName} has no method ${methodName}`);
  return method;
}

function descriptorFor(fullMethod, method) {
  const requestType = method.resolvedRequestType;
  const responseType = method.resolvedResponseType;
  return new grpcWeb.MethodDescriptor(
    `/${fullMethod}`,
    method.responseStream ? grpcWeb.MethodType.SERVER_STREAMING : grpcWeb.MethodType.UNARY,
    requestType.ctor,
    responseType.ctor,
    (message) => requestType.encode(message).finish(),
    (bytes) => responseType.decode(bytes),
  );
}

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function asJson(message) {
  return message.$type.toObject(message, {
    longs: String,
    enums: String,
    defaults: true,
    arrays: true,
  });
}

function main() {
  const args = options();
  global.XMLHttpRequest = StreamingXMLHttpRequest;
  const method = describe(args.method);
  const descriptor = descriptorFor(args.method, method);
  const client = new grpcWeb.GrpcWebClientBase({ format: FORMAT_OF_MODE[args.mode] });
  const url = args["base-url"].replace(/\/$/, "") + descriptor.getName();
  const request = method.resolvedRequestType.fromObject(args.request);
  let headers = {};
  const finish = (code, message) => {
    emit({ status: { code, message, headers } });
    process.exit(0);
  };

  if (!method.responseStream) {
    const call = client.rpcCall(url, request, args.metadata, descriptor, (error, response) => {
      if (error) return finish(error.code, error.message);
      emit({ message: asJson(response) });
      finish(0, "");
    });
    call.on("metadata", (received) => {
      headers = received;
    });
    return;
  }
  const stream = client.serverStreaming(url, request, args.metadata, descriptor);
  stream.on("metadata", (received) => {
    headers = received;
  });
  stream.on("data", (response) => emit({ message: asJson(response) }));
  stream.on("error", (error) => finish(error.code, error.message));
  stream.on("status", (status) => {
    if (status.code === 0) finish(0, status.details);
  });
  stream.on("end", () => finish(0, ""));
  process.stdin.on("end", () => {
    stream.cancel();
    finish(CANCELLED, "cancelled by the client");
  });
  process.stdin.resume();
}

main();
