"""The webhook domain's rules and settings: targets, events, address ranges, limits."""

import base64
import ipaddress

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.platform.settings import SettingsError
from services.webhook.domain.model import KNOWN_EVENTS, MAX_WEBHOOKS_PER_USER, Target
from services.webhook.domain.rules import (
    ensure_capacity,
    ensure_public_target,
    is_public_address,
    new_signing_secret,
    normalise_events,
    parse_target,
    parse_webhook_id,
)
from services.webhook.settings import WebhookSettings


@pytest.mark.parametrize(
    ("url", "normal", "host", "port"),
    [
        ("https://hooks.example.com/orders", None, "hooks.example.com", 443),
        ("http://hooks.example.com/orders", None, "hooks.example.com", 80),
        (
            " https://HOOKS.example.com:8443/x?y=1 ",
            "https://hooks.example.com:8443/x?y=1",
            "hooks.example.com",
            8443,
        ),
        ("https://[2001:db8::1]/hook", None, "2001:db8::1", 443),
        ("HTTP://Hooks.Example.COM", "http://hooks.example.com/", "hooks.example.com", 80),
        (
            "https://hooks.example.com:443/a#frag",
            "https://hooks.example.com/a",
            "hooks.example.com",
            443,
        ),
        ("http://[2001:DB8::0:1]:8080", "http://[2001:db8::1]:8080/", "2001:db8::1", 8080),
        ("http://bücher.example/", "http://xn--bcher-kva.example/", "xn--bcher-kva.example", 80),
        ("http://hooks.example.com./x", "http://hooks.example.com/x", "hooks.example.com", 80),
    ],
)
def test_targets_are_normalised_and_name_host_and_port(
    url: str, normal: str | None, host: str, port: int
) -> None:
    target = parse_target(url)
    assert (target.url, target.host, target.port) == (normal or url.strip(), host, port)
    assert parse_target(target.url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "url is required"),
        ("ftp://example.com/hook", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("hooks.example.com/orders", "http:// or https://"),
        ("https:///path-only", "must name a host"),
        ("https://user:pass@example.com/hook", "credentials"),
        ("https://example.com:99999/hook", "malformed"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_bad_targets_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        parse_target(url)
    assert raised.value.field == "url"


def test_events_are_known_types_or_the_wildcard_without_duplicates() -> None:
    assert normalise_events(["order.paid", " order.shipped", "order.paid"]) == (
        "order.paid",
        "order.shipped",
    )
    assert normalise_events(["*"]) == ("*",)
    assert normalise_events(list(KNOWN_EVENTS)) == KNOWN_EVENTS


@pytest.mark.parametrize("events", [[], ["order.exploded"], ["order.paid", "ORDER.PAID"]])
def test_unknown_or_missing_events_are_refused(events: list[str]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalise_events(events)
    assert raised.value.field == "events"


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "0.0.0.0",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "100.64.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
    ],
)
def test_private_loopback_link_local_and_multicast_addresses_are_not_public(
    address: str,
) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


TARGET = Target("https://hooks.example.com/x", "hooks.example.com", 443)


def test_a_target_must_resolve_to_public_addresses_only() -> None:
    ensure_public_target(TARGET, ["93.184.215.14", "2606:4700:4700::1111"])
    with pytest.raises(InvalidArgument, match="does not resolve"):
        ensure_public_target(TARGET, [])
    with pytest.raises(InvalidArgument, match=r"non-public addresses \(10\.0\.0\.7\)"):
        ensure_public_target(TARGET, ["93.184.215.14", "10.0.0.7"])


def test_the_per_user_limit() -> None:
    ensure_capacity(MAX_WEBHOOKS_PER_USER - 1)
    with pytest.raises(FailedPrecondition, match=f"at most {MAX_WEBHOOKS_PER_USER}"):
        ensure_capacity(MAX_WEBHOOKS_PER_USER)


def test_webhook_ids_are_uuids() -> None:
    assert parse_webhook_id("6F1C1A52-3B9E-4C55-9D7E-0B8A4F6E2D10") == (
        "6f1c1a52-3b9e-4c55-9d7e-0b8a4f6e2d10"
    )
    with pytest.raises(InvalidArgument, match="UUID"):
        parse_webhook_id("42")


def test_signing_secrets_are_prefixed_and_random() -> None:
    secrets = {new_signing_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(
        s.startswith("whsec_")
        and len(s) == len("whsec_") + 44
        and base64.b64decode(s[6:], validate=True)
        for s in secrets
    )


@pytest.mark.parametrize(
    ("raw", "address", "allowed"),
    [
        (None, "127.0.0.1", False),
        ("", "127.0.0.1", False),
        ("127.0.77.0/24", "127.0.77.9", True),
        ("127.0.77.0/24", "127.0.0.1", False),
        ("127.0.0.0/8, ::1/128", "::1", True),
        ("10.1.2.3", "10.1.2.3", True),
    ],
)
def test_private_targets_are_allowed_only_in_the_configured_networks(
    raw: str | None, address: str, allowed: bool
) -> None:
    env = {} if raw is None else {"ORDERMESH_WEBHOOK_ALLOWED_NETWORKS": raw}
    assert WebhookSettings.from_env(env).allows(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ORDERMESH_WEBHOOK_ALLOWED_NETWORKS", "localhost"),
        ("ORDERMESH_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("ORDERMESH_WEBHOOK_TIMEOUT_SECONDS", "soon"),
        ("ORDERMESH_WEBHOOK_RETRY_BASE_SECONDS", "nan"),
        ("ORDERMESH_WEBHOOK_LEASE_SECONDS", "5"),
    ],
)
def test_a_malformed_setting_fails_fast_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        WebhookSettings.from_env({name: raw})
