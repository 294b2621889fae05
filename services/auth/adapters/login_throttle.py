"""The login throttle on the rate-limit service (``ratelimit/``): each attempt is one
``ShouldRateLimit`` call with a ``login_email`` descriptor, so the per-account limit lives in
the same limits file and the same Redis counters as the edge's. The email travels only
inside this network; the service keys its counter by a hash of it."""

from __future__ import annotations

import grpc
from ordermesh.vendor.envoy_rls.v3 import rls_pb2, rls_pb2_grpc

from services.common.errors import DependencyUnavailable, ResourceExhausted

DOMAIN = "ordermesh"
DEPENDENCY = "the rate-limit service"


class RateLimitServiceThrottle:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 1.0) -> None:
        self._stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        self._timeout = timeout

    async def admit(self, email: str) -> None:
        request = rls_pb2.RateLimitRequest(domain=DOMAIN)
        request.descriptors.add().entries.add(key="login_email", value=email)
        try:
            response = await self._stub.ShouldRateLimit(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            # Fail closed: without the count, a password could be guessed without limit.
            raise DependencyUnavailable(
                "logins are refused while the rate-limit service cannot be reached; retry shortly",
                dependency=DEPENDENCY,
            ) from error
        if response.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT:
            wait = max(
                (s.duration_until_reset.seconds for s in response.statuses),
                default=60,
            )
            raise ResourceExhausted(
                f"too many login attempts for this account; retry in {wait} s",
                retry_after_seconds=max(1, wait),
            )
