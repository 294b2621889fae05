"""Which limits a call is held to, and what the counters' answers mean for it.

Plain Python: the limits come in as data (``LimitsConfig``, read by ``ratelimit.config``),
the counters are a port (``ratelimit.window``). A call is held to every limit that applies
to it at once; it is admitted only if it fits all of them, so the most restrictive one
decides, and a refused call consumes nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

UNITS: Mapping[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# The largest count a limit may name (Envoy's API carries counts as uint32); a scaled limit
# past it is held at it, which is no limit in practice.
MAX_REQUESTS = 1_000_000_000


class ConfigError(ValueError):
    """The limits configuration is not usable; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``window_seconds``, counted over a sliding window."""

    requests: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str, where: str) -> Rate | None:
        """``"20/minute"`` → Rate(20, 60); ``"unlimited"`` → None."""
        value = str(text).strip().lower()
        if value == "unlimited":
            return None
        count, _, unit = value.partition("/")
        if unit not in UNITS or not count.strip().isdigit():
            raise ConfigError(
                f"{where}: {text!r} is not a rate: write N/second|minute|hour|day or unlimited"
            )
        requests = int(count)
        if requests < 1:
            raise ConfigError(f"{where}: {text!r} admits nothing: use at least 1")
        if requests > MAX_REQUESTS:
            raise ConfigError(
                f"{where}: {text!r} is more than {MAX_REQUESTS:,}: write unlimited instead"
            )
        return cls(requests, UNITS[unit])

    def scaled(self, factor: int) -> Rate:
        return Rate(min(self.requests * factor, MAX_REQUESTS), self.window_seconds)

    def describe(self) -> str:
        unit = next(name for name, seconds in UNITS.items() if seconds == self.window_seconds)
        return f"{self.requests} per {unit}"


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """A group of methods sharing one limit per caller, at the free tier's level."""

    name: str
    methods: tuple[str, ...]
    rate: Rate
    # When the counters cannot be reached: True refuses the call (login, register), False
    # lets it through. The edge's config is rendered from this (see devstack/edge.py).
    fail_closed: bool


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    # None: unlimited. The overall limit of every call by one user.
    overall: Rate | None
    # Route limits are multiplied by this; None: no route limits at all.
    route_scale: int | None

    @property
    def unlimited(self) -> bool:
        return self.overall is None and self.route_scale is None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    routes: tuple[RouteLimit, ...]
    tiers: Mapping[str, Tier]
    # Every unauthenticated call, per client address.
    anonymous: Rate
    # Login attempts per target email, from any address.
    login_per_email: Rate
    # The tier of a token that names none, or one this config does not know.
    default_tier: str = "free"
    _by_method: Mapping[str, RouteLimit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.default_tier not in self.tiers:
            raise ConfigError(f"default tier {self.default_tier!r} is not among the tiers")
        by_method: dict[str, RouteLimit] = {}
        for route in self.routes:
            for method in route.methods:
                if method in by_method:
                    raise ConfigError(
                        f"method {method} is in both {by_method[method].name!r} and {route.name!r}"
                    )
                by_method[method] = route
        object.__setattr__(self, "_by_method", by_method)

    def route_for(self, method: str) -> RouteLimit | None:
        """The route limit of a gRPC method (``/pkg.Service/Method`` or ``pkg.Service/Method``)."""
        return self._by_method.get(method.lstrip("/"))

    def tier(self, name: str | None) -> Tier:
        return self.tiers.get(name or "", self.tiers[self.default_tier])


@dataclass(frozen=True, slots=True)
class Caller:
    """What the edge tells about a call: the method, the client address, and for a call with
    a valid token its user and tier."""

    method: str
    address: str
    user_id: str | None = None
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One limit to hold a call to: the counter's ``key`` and its ``rate``; ``what`` names
    the limit for people (the 429's message, the headers' reader)."""

    key: str
    rate: Rate
    what: str
    subject: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The checks of one call, and how it is counted (route and tier)."""

    checks: tuple[Check, ...]
    route: str
    tier: str


def _hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def plan_call(config: LimitsConfig, caller: Caller) -> Plan:
    route = config.route_for(caller.method)
    route_name = route.name if route else "other"
    if caller.user_id:
        tier = config.tier(caller.tier)
        checks: list[Check] = []
        subject = f"user:{caller.user_id}"
        if route is not None and tier.route_scale is not None:
            rate = route.rate.scaled(tier.route_scale)
            checks.append(
                Check(
                    f"route:{route.name}:{subject}",
                    rate,
                    f"{route.name}: {rate.describe()} per user ({tier.name} tier)",
                    subject,
                )
            )
        if tier.overall is not None:
            checks.append(
                Check(
                    f"tier:{subject}",
                    tier.overall,
                    f"all calls: {tier.overall.describe()} per user ({tier.name} tier)",
                    subject,
                )
            )
        return Plan(tuple(checks), route_name, tier.name)
    subject = f"address:{caller.address}"
    checks = []
    if route is not None:
        checks.append(
            Check(
                f"route:{route.name}:{subject}",
                route.rate,
                f"{route.name}: {route.rate.describe()} per client address",
                subject,
            )
        )
    checks.append(
        Check(
            f"anonymous:{subject}",
            config.anonymous,
            f"unauthenticated calls: {config.anonymous.describe()} per client address",
            subject,
        )
    )
    return Plan(tuple(checks), route_name, "anonymous")


def plan_login_attempt(config: LimitsConfig, email: str) -> Plan:
    """The check of one login attempt for ``email`` (any case), whatever its address."""
    subject = f"email:{_hashed(email.strip().lower())}"
    rate = config.login_per_email
    check = Check(f"login:{subject}", rate, f"login: {rate.describe()} per account", "login email")
    return Plan((check,), "login_email", "anonymous")


@dataclass(frozen=True, slots=True)
class Count:
    """A counter's state after a check: requests in the window (this one included when it
    was admitted), and how long until the oldest of them leaves the window."""

    in_window: int
    oldest_leaves_in: float


@dataclass(frozen=True, slots=True)
class Outcome:
    check: Check
    over: bool
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    outcomes: tuple[Outcome, ...]

    @property
    def binding(self) -> Outcome | None:
        """The limit a client should read in the headers: the one that refused the call (the
        longest wait among them), else the one with the fewest calls left."""
        if not self.outcomes:
            return None
        over = [o for o in self.outcomes if o.over]
        if over:
            return max(over, key=lambda o: (o.reset_seconds, -o.check.rate.requests))
        return min(self.outcomes, key=lambda o: (o.remaining, o.check.rate.requests))

    @property
    def retry_after(self) -> int:
        """Whole seconds until every refusing limit has room again (0 when allowed)."""
        return max((o.reset_seconds for o in self.outcomes if o.over), default=0)


def decide(plan: Plan, admitted: bool, counts: Sequence[Count], hits: int = 1) -> Decision:
    """The decision for ``plan`` from the counters' answer: whether the call fit every limit,
    and each counter's state."""
    outcomes = []
    for check, count in zip(plan.checks, counts, strict=True):
        over = not admitted and count.in_window + hits > check.rate.requests
        remaining = max(0, check.rate.requests - count.in_window)
        # Seconds until the next request fits: when the oldest counted one leaves the window.
        reset = max(1, math.ceil(count.oldest_leaves_in)) if count.in_window else 0
        outcomes.append(Outcome(check, over, remaining, reset))
    return Decision(admitted, tuple(outcomes))


class Counters(Protocol):
    """Sliding-window counters: admit ``hits`` against every check at once or not at all,
    and count the decision under ``route`` and ``tier``."""

    async def hit(
        self, checks: Sequence[Check], hits: int, route: str, tier: str
    ) -> tuple[bool, list[Count]]: ...


class CountersUnavailable(Exception):
    """The counters cannot be reached; the caller's failure mode decides."""
