"""The rate-limit service's answers to Envoy: statuses per descriptor, the headers, and the
refusal's body for REST and gRPC callers."""

import base64
import json

from google.rpc import error_details_pb2, status_pb2
from ordermesh.vendor.envoy_rls.v3 import rls_pb2

from ratelimit import config
from ratelimit.api import build_response, percent_encoded
from ratelimit.domain import Caller, Count, decide, plan_call

LIMITS = config.load(config.DEFAULT_PATH, environ={})
CREATE = "/ordermesh.order.v1.OrderService/CreateOrder"
Response = rls_pb2.RateLimitResponse


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


def test_an_allowed_call_gets_a_status_per_descriptor_and_the_headers() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "free"))
    response = build_response(
        decide(plan, True, [Count(3, 50.2), Count(9, 40.0)]), rest=True, descriptors=2
    )
    assert response.overall_code == Response.OK
    assert [s.code for s in response.statuses] == [Response.OK, Response.OK]
    assert response.statuses[0].limit_remaining == 17
    assert response.statuses[0].current_limit.requests_per_unit == 20
    assert response.statuses[0].current_limit.unit == Response.RateLimit.MINUTE
    assert response.statuses[0].duration_until_reset.seconds == 51
    assert headers(response) == {
        "x-ratelimit-limit": "20",
        "x-ratelimit-remaining": "17",
        "x-ratelimit-reset": "51",
    }
    assert not response.raw_body


def test_an_unlimited_call_gets_ok_statuses_and_no_headers() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "enterprise"))
    response = build_response(decide(plan, True, []), rest=False)
    assert [s.code for s in response.statuses] == [Response.OK]
    assert headers(response) == {}


def test_a_refused_grpc_call_gets_the_message_and_details_for_grpc() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "free"))
    response = build_response(decide(plan, False, [Count(20, 12.4), Count(20, 30.0)]), rest=False)
    assert response.overall_code == Response.OVER_LIMIT
    sent = headers(response)
    assert sent["retry-after"] == "13"
    encoded = sent["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert status.code == 8
    assert response.raw_body.decode() == status.message
    assert sent["grpc-message"] == percent_encoded(status.message)
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 13
    assert status.details[1].Unpack(quota)
    assert [v.subject for v in quota.violations] == ["user:u-1"]


def test_a_refused_rest_call_gets_a_json_status_body() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "free"))
    response = build_response(decide(plan, False, [Count(20, 12.4), Count(3, 1.0)]), rest=True)
    body = json.loads(response.raw_body)
    assert body["code"] == 8
    assert body["message"].startswith("rate limit exceeded: create_order: 20 per minute")
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retry_delay": "13s",
    }
    assert "grpc-status-details-bin" not in headers(response)


def test_grpc_messages_are_percent_encoded() -> None:
    assert percent_encoded("50% off: café") == "50%25 off: caf%C3%A9"
