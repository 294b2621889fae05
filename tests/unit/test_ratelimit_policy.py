"""The rate-limit service's domain: which limits a call is held to, and what the counters'
answer means for it; and the limits file's parsing."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from ratelimit import config
from ratelimit.domain import (
    Caller,
    ConfigError,
    Count,
    Rate,
    decide,
    plan_call,
    plan_login_attempt,
)

LIMITS = config.load(config.DEFAULT_PATH, environ={})
CREATE = "/ordermesh.order.v1.OrderService/CreateOrder"
LIST = "/ordermesh.order.v1.OrderService/ListOrders"
REGISTER = "/ordermesh.auth.v1.AuthService/Register"


def test_the_shipped_limits_are_the_documented_ones() -> None:
    routes = {route.name: route for route in LIMITS.routes}
    assert routes["register"].rate == Rate(10, 60) and routes["register"].fail_closed
    assert routes["login"].rate == Rate(20, 60) and routes["login"].fail_closed
    for name in ("create_order", "update_order", "cancel_order"):
        assert routes[name].rate == Rate(20, 60) and not routes[name].fail_closed
    assert routes["read"].rate == Rate(100, 60)
    assert routes["webhook_registration"].rate == Rate(10, 3600)
    assert {name: (t.overall, t.route_scale) for name, t in LIMITS.tiers.items()} == {
        "free": (Rate(50, 60), 1),
        "standard": (Rate(100, 60), 2),
        "premium": (Rate(500, 60), 10),
        "enterprise": (None, None),
    }
    assert LIMITS.anonymous == Rate(200, 60)
    assert LIMITS.login_per_email == Rate(20, 60)


@pytest.mark.parametrize(
    ("tier", "route_limit", "overall"),
    [("free", 20, 50), ("standard", 40, 100), ("premium", 200, 500), (None, 20, 50)],
)
def test_a_users_route_limit_scales_with_the_tier_beside_the_tiers_overall_limit(
    tier: str | None, route_limit: int, overall: int
) -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", tier))
    assert [(c.key, c.rate.requests) for c in plan.checks] == [
        ("route:create_order:user:u-1", route_limit),
        ("tier:user:u-1", overall),
    ]
    assert (plan.route, plan.tier) == ("create_order", tier or "free")


def test_an_unknown_tier_is_held_to_the_default_one() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "platinum"))
    assert plan.tier == "free"
    assert [c.rate.requests for c in plan.checks] == [20, 50]


def test_enterprise_users_are_unlimited() -> None:
    assert plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "enterprise")).checks == ()


def test_anonymous_calls_are_limited_per_address_by_route_and_overall() -> None:
    plan = plan_call(LIMITS, Caller(REGISTER, "127.0.0.2"))
    assert [(c.key, c.rate.requests) for c in plan.checks] == [
        ("route:register:address:127.0.0.2", 10),
        ("anonymous:address:127.0.0.2", 200),
    ]
    other = plan_call(LIMITS, Caller("/grpc.reflection.v1.ServerReflection/Info", "::1"))
    assert [c.key for c in other.checks] == ["anonymous:address:::1"]
    assert other.route == "other"


def test_login_attempts_are_keyed_by_a_hash_of_the_normalised_email() -> None:
    [check] = plan_login_attempt(LIMITS, " Ada@Example.com").checks
    [same] = plan_login_attempt(LIMITS, "ada@example.com").checks
    assert check.key == same.key and "ada" not in check.key
    assert check.rate == Rate(20, 60)


def test_the_decision_names_the_limit_that_binds() -> None:
    plan = plan_call(LIMITS, Caller(LIST, "10.0.0.1", "u-1", "free"))
    allowed = decide(plan, True, [Count(10, 30.2), Count(49, 12.0)])
    assert allowed.allowed and allowed.retry_after == 0
    assert allowed.binding is not None
    assert (allowed.binding.check.rate.requests, allowed.binding.remaining) == (50, 1)
    assert allowed.binding.reset_seconds == 12

    refused = decide(plan, False, [Count(10, 30.2), Count(50, 12.5)])
    assert not refused.allowed
    assert [o.over for o in refused.outcomes] == [False, True]
    assert refused.binding is not None and refused.binding.check.key == "tier:user:u-1"
    assert (refused.binding.remaining, refused.retry_after) == (0, 13)


def test_when_several_limits_refuse_the_longest_wait_is_given() -> None:
    plan = plan_call(LIMITS, Caller(CREATE, "10.0.0.1", "u-1", "free"))
    refused = decide(plan, False, [Count(20, 40.0), Count(50, 5.0)])
    assert refused.retry_after == 40
    assert refused.binding is not None and refused.binding.check.key.startswith("route:")


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/minute", Rate(20, 60)), (" 10/HOUR ", Rate(10, 3600)), ("unlimited", None)],
)
def test_rates_parse(text: str, rate: Rate | None) -> None:
    assert Rate.parse(text, "x") == rate


def test_scaled_limits_stay_within_what_envoys_api_can_carry() -> None:
    assert Rate(1_000_000_000, 60).scaled(1_000_000) == Rate(1_000_000_000, 60)


@pytest.mark.parametrize(
    "text", ["20", "20/fortnight", "0/minute", "-1/minute", "x/minute", "5000000000/minute"]
)
def test_bad_rates_are_refused_naming_where(text: str) -> None:
    with pytest.raises(ConfigError, match=r"routes\.login\.limit"):
        Rate.parse(text, "routes.login.limit")


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(config.DEFAULT_PATH.read_text())
    return loaded


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["routes"]["login"].update(on_failure="maybe"), "on_failure"),
        (lambda d: d["routes"]["login"].update(methods=["Login"]), "pkg.Service/Method"),
        (lambda d: d["routes"]["read"]["methods"].append(CREATE.lstrip("/")), "in both"),
        (lambda d: d.update(default_tier="gold"), "default tier"),
        (lambda d: d.update(surprise=1), "unknown keys"),
        (lambda d: d["tiers"]["free"].update(route_scale=0), "route_scale"),
        (lambda d: d["anonymous"].update(per_address="unlimited"), "cannot be unlimited"),
    ],
)
def test_invalid_configs_are_refused_with_the_reason(change: Any, message: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(ConfigError, match=message):
        config.parse(document)


def test_environment_overrides_merge_over_the_file(tmp_path: Path) -> None:
    limits = config.load(
        config.DEFAULT_PATH,
        environ={config.OVERRIDES_VAR: "{routes: {create_order: {limit: 40/minute}}}"},
    )
    routes = {route.name: route for route in limits.routes}
    assert routes["create_order"].rate == Rate(40, 60)
    assert routes["login"].rate == Rate(20, 60), "the rest of the file stays"
    with pytest.raises(ConfigError, match="OVERRIDES"):
        config.load(config.DEFAULT_PATH, environ={config.OVERRIDES_VAR: "{routes: ["})


def test_a_live_config_keeps_its_limits_when_an_edit_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(config.DEFAULT_PATH.read_text())
    live = config.LiveConfig(path, lambda p: config.load(p, environ={}))
    before = live.current
    path.write_text("routes: [")
    assert not live.reload("test")
    assert live.current is before
    path.write_text(config.DEFAULT_PATH.read_text().replace("limit: 20/minute", "limit: 7/minute"))
    assert live.reload("test")
    assert {r.name: r.rate.requests for r in live.current.routes}["create_order"] == 7
