"""The ordermesh rate-limit service: Envoy's ``envoy.service.ratelimit.v3.RateLimitService``
with sliding-window (sliding-log) counters in Redis. Run it with ``python -m ratelimit``."""
