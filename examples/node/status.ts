// The rich error model from Node.js: the google.rpc.Status a server (or the edge) sends in the
// `grpc-status-details-bin` trailer, with its details decoded by the generated types.
import { type ServiceError, status as Code } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, QuotaFailure, RetryInfo } from "../../gen/ts/google/rpc/error_details";
import { Status } from "../../gen/ts/google/rpc/status";

// The detail types ordermesh sends, by full name; another arrives as its type name alone.
const DETAIL_DECODERS: Record<string, (bytes: Uint8Array) => unknown> = {
  "google.rpc.BadRequest": (bytes) => BadRequest.toJSON(BadRequest.decode(bytes)),
  "google.rpc.ErrorInfo": (bytes) => ErrorInfo.toJSON(ErrorInfo.decode(bytes)),
  "google.rpc.QuotaFailure": (bytes) => QuotaFailure.toJSON(QuotaFailure.decode(bytes)),
  "google.rpc.RetryInfo": (bytes) => RetryInfo.toJSON(RetryInfo.decode(bytes)),
};

export interface Detail {
  type: string;
  value: unknown;
}

export interface RichError {
  code: number;
  codeName: string;
  message: string;
  details: Detail[];
  retryAfter?: string;
}

export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

export function codeName(code: number): string {
  return Code[code] ?? `CODE_${code}`;
}

/** The error's status; its details from `grpc-status-details-bin` when the trailer is there. */
export function richError(error: ServiceError): RichError {
  const rich: RichError = {
    code: error.code,
    codeName: codeName(error.code),
    message: error.details,
    details: [],
  };
  const [encoded] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (encoded instanceof Buffer) {
    const status = Status.decode(encoded);
    rich.message = status.message || rich.message;
    rich.details = status.details.map((any) => {
      const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
      const decode = DETAIL_DECODERS[type];
      return { type, value: decode === undefined ? null : decode(any.value) };
    });
  }
  const [retryAfter] = error.metadata?.get("retry-after") ?? [];
  if (typeof retryAfter === "string") {
    rich.retryAfter = retryAfter;
  }
  return rich;
}

/** One readable line per part of the error, for a person at a terminal. */
export function describe(rich: RichError): string[] {
  const lines = [`${rich.codeName} (${rich.code}): ${rich.message}`];
  for (const detail of rich.details) {
    lines.push(`  ${detail.type}: ${JSON.stringify(detail.value)}`);
  }
  if (rich.retryAfter !== undefined) {
    lines.push(`  retry after ${rich.retryAfter} s`);
  }
  return lines;
}
