"""``envoy.service.ratelimit.v3.RateLimitService`` over gRPC: translate Envoy's descriptors
into a caller, ask the domain which limits apply, hit the counters, and answer with the
decision, the ``X-RateLimit-*`` headers and, over the limit, a ``google.rpc.Status`` (JSON
body for REST, ``grpc-status-details-bin`` for gRPC) with ``RetryInfo``.

Descriptor entries understood (domain ``ordermesh``):

- from Envoy's route actions: ``method`` (the gRPC path, after transcoding), ``remote_address``
  (Envoy's peer address), for a call with a valid token ``user`` and ``tier`` (jwt_authn's
  claim headers), and for a REST call ``rest_path`` (its refusal gets a JSON body; a gRPC
  call's gets the plain message, which Envoy sends as ``grpc-message``);
- from the auth service: ``login_email`` (the target of a login attempt).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from ordermesh.vendor.envoy_rls.v3 import rls_pb2, rls_pb2_grpc

from ratelimit.domain import (
    Caller,
    Check,
    Counters,
    CountersUnavailable,
    Decision,
    LimitsConfig,
    Plan,
    decide,
    plan_call,
    plan_login_attempt,
)
from services.platform import metrics

log = logging.getLogger(__name__)

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
DOMAIN = "ordermesh"
MAX_HITS = 1000

Context = grpc.aio.ServicerContext[Any, Any]
Response = rls_pb2.RateLimitResponse
_UNITS = {
    1: Response.RateLimit.SECOND,
    60: Response.RateLimit.MINUTE,
    3600: Response.RateLimit.HOUR,
    86400: Response.RateLimit.DAY,
}


class BadDescriptor(ValueError):
    pass


def _entries(descriptor: rls_pb2.RateLimitDescriptor) -> dict[str, str]:
    entries: dict[str, str] = {}
    for entry in descriptor.entries:
        if entry.key in entries:
            raise BadDescriptor(f"descriptor entry {entry.key!r} appears twice")
        entries[entry.key] = entry.value
    return entries


def is_rest(request: rls_pb2.RateLimitRequest) -> bool:
    return any(e.key == "rest_path" for d in request.descriptors for e in d.entries)


def plan_request(config: LimitsConfig, request: rls_pb2.RateLimitRequest) -> Plan:
    """One plan for all of a request's descriptors (they are checked together)."""
    if request.domain != DOMAIN:
        raise BadDescriptor(f"domain {request.domain!r} is not served here (only {DOMAIN!r})")
    if not request.descriptors:
        raise BadDescriptor("a request needs at least one descriptor")
    plans = []
    for descriptor in request.descriptors:
        entries = _entries(descriptor)
        if "login_email" in entries:
            plans.append(plan_login_attempt(config, entries["login_email"]))
            continue
        if "method" not in entries or "remote_address" not in entries:
            raise BadDescriptor(
                f"descriptor {sorted(entries)} lacks method and remote_address (or login_email)"
            )
        caller = Caller(
            entries["method"], entries["remote_address"], entries.get("user"), entries.get("tier")
        )
        plans.append(plan_call(config, caller))
    checks: dict[str, Check] = {}
    for plan in plans:
        for check in plan.checks:
            checks.setdefault(check.key, check)
    return Plan(tuple(checks.values()), plans[0].route, plans[0].tier)


def _hits(request: rls_pb2.RateLimitRequest) -> int:
    hits = request.hits_addend or 1
    for descriptor in request.descriptors:
        if descriptor.HasField("hits_addend"):
            hits = max(hits, descriptor.hits_addend.value)
    return min(hits, MAX_HITS)


def percent_encoded(message: str) -> str:
    """A grpc-message value: UTF-8, with '%' and bytes outside printable ASCII as %XX."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in message.encode()
    )


def _header(key: str, value: str) -> rls_pb2.HeaderValue:
    return rls_pb2.HeaderValue(key=key, value=value)


def over_limit_status(decision: Decision) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a refused call: RESOURCE_EXHAUSTED naming the limit, with
    ``RetryInfo`` and a ``QuotaFailure`` per refusing limit."""
    binding = decision.binding
    assert binding is not None
    retry = decision.retry_after
    message = f"rate limit exceeded: {binding.check.what}; retry in {retry} s"
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry))
    )
    failure = error_details_pb2.QuotaFailure()
    for outcome in decision.outcomes:
        if outcome.over:
            failure.violations.add(subject=outcome.check.subject, description=outcome.check.what)
    status.details.add().Pack(failure)
    return status


def _status_json(status: status_pb2.Status) -> bytes:
    """The Status as grpc-gateway writes it (proto3 JSON, proto field names)."""
    body = json_format.MessageToDict(status, preserving_proto_field_name=True)
    return json.dumps(body, separators=(",", ":")).encode()


def build_response(
    decision: Decision, *, rest: bool, descriptors: int = 1
) -> rls_pb2.RateLimitResponse:
    """Envoy's answer: the overall code, one status per descriptor of the request (the
    descriptors are checked together, so each reports the binding limit), the headers and,
    over the limit, the refusal's body and details."""
    response = rls_pb2.RateLimitResponse(
        overall_code=Response.OK if decision.allowed else Response.OVER_LIMIT
    )
    binding = decision.binding
    if binding is None:
        for _ in range(descriptors):
            response.statuses.add(code=Response.OK)
        return response
    rate = binding.check.rate
    current = Response.RateLimit(
        name=binding.check.what,
        requests_per_unit=rate.requests,
        unit=_UNITS.get(rate.window_seconds, Response.RateLimit.UNKNOWN),
    )
    for _ in range(descriptors):
        response.statuses.add(
            code=Response.OVER_LIMIT if binding.over else Response.OK,
            current_limit=current,
            limit_remaining=binding.remaining,
            duration_until_reset=duration_pb2.Duration(seconds=binding.reset_seconds),
        )
    response.response_headers_to_add.extend(
        [
            _header("x-ratelimit-limit", str(rate.requests)),
            _header("x-ratelimit-remaining", str(binding.remaining)),
            _header("x-ratelimit-reset", str(binding.reset_seconds)),
        ]
    )
    if not decision.allowed:
        retry = decision.retry_after
        status = over_limit_status(decision)
        response.response_headers_to_add.append(_header("retry-after", str(retry)))
        if rest:
            response.raw_body = _status_json(status)
        else:
            # grpc-message must equal the details' message, or clients reject the details.
            # Envoy sends the body as grpc-message to gRPC callers; grpc-web callers get the
            # header as given here (their reply is made by the edge's local reply mappers).
            response.raw_body = status.message.encode()
            response.response_headers_to_add.extend(
                [
                    _header("grpc-message", percent_encoded(status.message)),
                    _header(
                        "grpc-status-details-bin",
                        base64.b64encode(status.SerializeToString()).decode().rstrip("="),
                    ),
                ]
            )
    return response


class RateLimitApi(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, config: Callable[[], LimitsConfig], counters: Counters) -> None:
        self._config = config
        self._counters = counters

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Context
    ) -> rls_pb2.RateLimitResponse:
        try:
            plan = plan_request(self._config(), request)
        except BadDescriptor as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        hits = _hits(request)
        try:
            admitted, counts = await self._counters.hit(plan.checks, hits, plan.route, plan.tier)
        except CountersUnavailable as error:
            metrics.ratelimit_decisions.labels(plan.route, plan.tier, "unavailable").inc()
            # The caller's failure mode decides: Envoy's per-route stage (allow or deny), the
            # auth service's login check (deny).
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"rate-limit counters: {error}")
        decision = decide(plan, admitted, counts, hits)
        outcome = "allowed" if decision.allowed else "limited"
        metrics.ratelimit_decisions.labels(plan.route, plan.tier, outcome).inc()
        if not decision.allowed and (binding := decision.binding) is not None:
            log.info(
                "limited",
                extra={"route": plan.route, "tier": plan.tier, "limit": binding.check.what},
            )
        return build_response(decision, rest=is_rest(request), descriptors=len(request.descriptors))
