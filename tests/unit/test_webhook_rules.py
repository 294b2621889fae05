"""The webhook domain's rules and settings: targets, events, address ranges, limits."""

import base64
import ipaddress
import random
from datetime import timedelta
from pathlib import Path

import h11
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.platform.settings import SettingsError
from services.webhook.domain.delivery import DeliveryState, RetryPolicy
from services.webhook.domain.model import KNOWN_EVENTS, MAX_WEBHOOKS_PER_USER, Target
from services.webhook.domain.rules import (
    ensure_capacity,
    ensure_public_target,
    is_public_address,
    new_signing_secret,
    normalise_events,
    page_size,
    page_token,
    parse_delivery_id,
    parse_delivery_state,
    parse_page_token,
    parse_target,
    parse_webhook_id,
    refused_addresses,
    rotation_grace,
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


# --- addresses that stand for other addresses ----------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        # NAT64, the well-known prefix, translating to private or loopback IPv4.
        "64:ff9b::10.0.0.1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::192.168.1.1",
        "64:ff9b::169.254.169.254",
        "64:ff9b::100.64.0.1",
        # The local-use NAT64 prefix, whatever it embeds.
        "64:ff9b:1::1",
        "64:ff9b:1::808:808",
        # IPv4-mapped and IPv4-compatible.
        "::ffff:169.254.169.254",
        "::ffff:192.168.0.1",
        "::127.0.0.1",
        "::10.0.0.1",
        # 6to4 of 127.0.0.1, 10.0.0.1 and 192.168.1.1.
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "2002:c0a8:101::1",
        # Teredo.
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        # Cloud metadata over IPv6, documentation, discard-only.
        "fd00:ec2::254",
        "2001:db8::1",
        "100::1",
    ],
)
def test_addresses_standing_for_private_ones_are_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))
    assert refused_addresses([address]) == [address]


@pytest.mark.parametrize(
    "address", ["64:ff9b::8.8.8.8", "2606:4700::1", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_addresses_standing_for_public_ones_are_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))
    assert refused_addresses([address]) == []


# Regression: ::ffff:0:a.b.c.d (RFC 2765 IPv4-translated, inside the reserved ::/8) is refused.
def test_the_ipv4_translated_form_of_a_private_address_is_not_public() -> None:
    address = ipaddress.ip_address("::ffff:0:10.0.0.1")
    assert address.is_reserved
    assert not is_public_address(address)


def test_the_allow_list_lets_its_networks_through_and_nothing_else() -> None:
    settings = WebhookSettings.from_env({"ORDERMESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.77.0/24"})
    assert refused_addresses(["127.0.77.5"], settings.allows) == []
    assert refused_addresses(["127.0.0.1"], settings.allows) == ["127.0.0.1"]
    assert refused_addresses(
        ["127.0.0.1", "93.184.215.14", "127.0.77.5", "10.0.0.1", "127.0.0.1"], settings.allows
    ) == ["10.0.0.1", "127.0.0.1"]
    # The allow-list names networks of its own family: the same host mapped into IPv6 is not
    # in it.
    assert refused_addresses(["::ffff:127.0.77.5"], settings.allows) == ["::ffff:127.0.77.5"]
    ensure_public_target(TARGET, ["127.0.77.5", "93.184.215.14"], settings.allows)
    with pytest.raises(InvalidArgument, match=r"non-public addresses \(127\.0\.0\.1\)"):
        ensure_public_target(TARGET, ["127.0.77.5", "127.0.0.1"], settings.allows)


def test_without_an_allow_list_every_private_address_is_refused() -> None:
    assert refused_addresses(["127.0.77.5", "93.184.215.14"]) == ["127.0.77.5"]
    assert refused_addresses(["127.0.77.5"], WebhookSettings().allows) == ["127.0.77.5"]


# --- URL normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normal", "request_target"),
    [
        ("HTTPS://hooks.example.com/orders", "https://hooks.example.com/orders", "/orders"),
        ("Https://hooks.example.com:443/", "https://hooks.example.com/", "/"),
        ("http://hooks.example.com:80/x", "http://hooks.example.com/x", "/x"),
        # Only the scheme's own default port is dropped.
        ("http://hooks.example.com:443/x", "http://hooks.example.com:443/x", "/x"),
        ("https://hooks.example.com:80/x", "https://hooks.example.com:80/x", "/x"),
        ("https://hooks.example.com/a?b=1#c", "https://hooks.example.com/a?b=1", "/a?b=1"),
        ("https://hooks.example.com#only-a-fragment", "https://hooks.example.com/", "/"),
        ("http://a.com?x", "http://a.com/?x", "/?x"),
        ("http://a.com:8080?x=1&y=2", "http://a.com:8080/?x=1&y=2", "/?x=1&y=2"),
        ("http://a.com/?", "http://a.com/", "/"),
        ("https://hooks.example.com:/x", "https://hooks.example.com/x", "/x"),
        ("https://[::FFFF:1.2.3.4]/", "https://[::ffff:102:304]/", "/"),
        ("https://Bücher.Example/x", "https://xn--bcher-kva.example/x", "/x"),
    ],
)
def test_urls_are_normalised_as_stored_and_called(
    url: str, normal: str, request_target: str
) -> None:
    target = parse_target(url)
    assert (target.url, target.request_target) == (normal, request_target)
    assert normal.startswith(target.scheme + "://")
    assert parse_target(target.url) == target


@pytest.mark.parametrize(
    "url",
    [
        "http://a b.com/",
        "http://a.com/a b",
        "http://a.com/a\tb",
        "http://a.com/a\nb",
        "http://a.com/a\rb",
        "http://a.com/\x00",
        "http://a.com\x00.evil.com/",
        "http://a.com/\x7f",
        "http://a.com/\x1b[31m",
        "http://[::1",
        "http://a.com:abc/",
        "http://a.com:99999/",
        "http://a.com:-1/",
        "https://user@hooks.example.com/",
        "https://:secret@hooks.example.com/",
        "https://user:secret@hooks.example.com/",
        "https://hooks.example.com\\@evil.com/",
        "http://a..com/",
        "http://.a.com/",
        "http://" + "a" * 64 + ".com/",
        "http://a\u3002\u3002b/",
        "http://\udcff.com/",
        "http://a_b.com/",
        "http://%31%32%37.0.0.1/",
        "http:a.com",
        "http:/a.com",
        "mailto:x@a.com",
        "//a.com/x",
        "   ",
    ],
)
def test_malformed_urls_are_invalid_naming_the_url(url: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_target(url)
    assert raised.value.field == "url"


def test_any_string_is_a_target_or_invalid_never_another_error() -> None:
    rng = random.Random(2026)
    alphabet = [
        *"abcXYZ019.-_:/?#[]@%!$&'()*+,;=~ ",
        *"\x00\t\n\r\x7f\x85\xa0é\u3002\uff0e\u200bß\ufb01\u0130\u212a\u0301\ud800",
    ]
    starts = ["http://", "https://", "HTTP://", "http://[", "http://[::1]", "https://a.com", ""]
    for _ in range(5000):
        url = rng.choice(starts) + "".join(rng.choices(alphabet, k=rng.randint(0, 24)))
        try:
            target = parse_target(url)
        except InvalidArgument as error:
            assert error.field == "url"
            continue
        assert target.url.startswith(("http://", "https://"))
        assert target.request_target.startswith("/")


# Regression: non-ASCII characters in the path and query are stored percent-encoded, so the
# sender can always write the request line.
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/bestellungen/ü",
        "https://hooks.example.com/hook?name=José",
        "https://hooks.example.com/a\u00a0b",
        "https://hooks.example.com/a\x85b",
    ],
)
def test_a_stored_url_is_one_the_sender_can_request(url: str) -> None:
    try:
        target = parse_target(url)
    except InvalidArgument as error:
        assert error.field == "url"
        return
    h11.Request(method="POST", target=target.request_target, headers=[("Host", target.host)])
    assert target.request_target.isascii()


# Regression: the trailing dot is dropped after IDNA encoding, which turns the full stops of
# other scripts into "." (normalising is idempotent).
@pytest.mark.parametrize("stop", ["\u3002", "\uff0e", "\uff61"])
def test_a_trailing_full_stop_of_any_script_is_dropped(stop: str) -> None:
    target = parse_target(f"https://hooks.example.com{stop}/x")
    assert (target.url, target.host) == ("https://hooks.example.com/x", "hooks.example.com")


# Regression: an explicit port 0 is refused, not taken for the default port.
def test_port_zero_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_target("https://hooks.example.com:0/x")
    assert raised.value.field == "url"


# --- ids, tokens, sizes, grace periods, states ---------------------------------------------


def test_delivery_ids_are_uuids() -> None:
    assert parse_delivery_id("6F1C1A52-3B9E-4C55-9D7E-0B8A4F6E2D10") == (
        "6f1c1a52-3b9e-4c55-9d7e-0b8a4f6e2d10"
    )
    for raw in ("42", "", "../etc", "6f1c1a52-3b9e-4c55-9d7e-0b8a4f6e2d1"):
        with pytest.raises(InvalidArgument, match="delivery_id must be a UUID") as raised:
            parse_delivery_id(raw)
        assert raised.value.field == "delivery_id"


@pytest.mark.parametrize("position", [0, 1, 42, 2**40, 10**30])
def test_page_tokens_round_trip(position: int) -> None:
    token = page_token(position)
    assert token and "=" not in token
    assert token.isascii() and token.replace("-", "").replace("_", "").isalnum()
    assert parse_page_token(token) == position
    # A client that pads the token back is understood too.
    assert parse_page_token(token + "=" * (-len(token) % 4)) == position


def test_no_position_is_no_token_and_no_token_the_first_page() -> None:
    assert page_token(None) == ""
    assert parse_page_token("") is None


def _b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "d1:5",
        "!!!!",
        "é",
        _b64(b"d1:"),
        _b64(b"d1:-1"),
        _b64(b"d1:1e3"),
        _b64(b"d1: 5"),
        _b64(b"d2:5"),
        _b64(b"5"),
        _b64(b"\xff\xfe"),
        _b64(b"d1:\xc2\xb2"),
        _b64(b"d1:" + b"9" * 5000),
    ],
)
def test_a_forged_page_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token is not one this API returned") as raised:
        parse_page_token(token)
    assert raised.value.field == "page_token"


@pytest.mark.parametrize(("raw", "size"), [(0, 20), (1, 1), (50, 50), (100, 100)])
def test_page_sizes(raw: int, size: int) -> None:
    assert page_size(raw) == size


@pytest.mark.parametrize("raw", [-1, 101, 2**31 - 1])
def test_a_page_size_out_of_bounds_is_invalid(raw: int) -> None:
    with pytest.raises(InvalidArgument, match="page_size must be between 1 and 100") as raised:
        page_size(raw)
    assert raised.value.field == "page_size"


@pytest.mark.parametrize(
    ("seconds", "grace"),
    [
        (None, timedelta(hours=3)),
        (0, timedelta(0)),
        (1, timedelta(seconds=1)),
        (604800, timedelta(days=7)),
    ],
)
def test_rotation_grace(seconds: int | None, grace: timedelta) -> None:
    assert rotation_grace(seconds, timedelta(hours=3)) == grace


@pytest.mark.parametrize("seconds", [-1, 604801, -(2**31)])
def test_a_rotation_grace_out_of_bounds_is_invalid(seconds: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        rotation_grace(seconds, timedelta(hours=24))
    assert raised.value.field == "grace_period_seconds"
    assert str(raised.value) == "grace_period_seconds must be between 0 and 604800 (7 days)"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("", None),
        ("parked", DeliveryState.PARKED),
        ("DELIVERY_STATE_FAILED", DeliveryState.FAILED),
        (" Succeeded ", DeliveryState.SUCCEEDED),
    ],
)
def test_delivery_state_filters(raw: str, state: DeliveryState | None) -> None:
    assert parse_delivery_state(raw) is state


@pytest.mark.parametrize("raw", ["done", "DELIVERY_STATE_UNSPECIFIED", "pending,parked"])
def test_an_unknown_delivery_state_filter_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_delivery_state(raw)
    assert raised.value.field == "state"
    assert str(raised.value) == "state must be one of pending, succeeded, failed, parked"


# --- settings -----------------------------------------------------------------------------


def test_the_settings_default_to_the_documented_values() -> None:
    settings = WebhookSettings.from_env({})
    assert settings == WebhookSettings()
    assert settings.retry == RetryPolicy()
    assert (settings.rotation_grace, settings.lease, settings.poll_interval) == (
        timedelta(hours=24),
        timedelta(seconds=60),
        1.0,
    )
    assert settings.hosts_file is None
    assert settings.allowed_networks == ()


def test_the_settings_read_every_variable() -> None:
    env = {
        "ORDERMESH_WEBHOOK_ALLOWED_NETWORKS": " 10.0.0.0/8 , fd00::/8 ,",
        "ORDERMESH_WEBHOOK_HOSTS_FILE": "/tmp/hosts",
        "ORDERMESH_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "1.5",
        "ORDERMESH_WEBHOOK_TIMEOUT_SECONDS": "3",
        "ORDERMESH_WEBHOOK_MAX_ATTEMPTS": "4",
        "ORDERMESH_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "ORDERMESH_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "30",
        "ORDERMESH_WEBHOOK_RETRY_MIN_SPAN_SECONDS": "0",
        "ORDERMESH_WEBHOOK_DISABLE_AFTER_FAILURES": "7",
        "ORDERMESH_WEBHOOK_PER_ENDPOINT_CONCURRENCY": "2",
        "ORDERMESH_WEBHOOK_SENDER_CONCURRENCY": "16",
        "ORDERMESH_WEBHOOK_LEASE_SECONDS": "10",
        "ORDERMESH_WEBHOOK_POLL_SECONDS": "0.25",
        "ORDERMESH_WEBHOOK_ROTATION_GRACE_SECONDS": "0",
    }
    assert WebhookSettings.from_env(env) == WebhookSettings(
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")),
        hosts_file=Path("/tmp/hosts"),
        connect_timeout=1.5,
        total_timeout=3.0,
        retry=RetryPolicy(
            max_attempts=4,
            base_delay=timedelta(seconds=0.5),
            max_delay=timedelta(seconds=30),
            min_span=timedelta(0),
        ),
        disable_after_failures=7,
        per_endpoint_concurrency=2,
        concurrency=16,
        lease=timedelta(seconds=10),
        poll_interval=0.25,
        rotation_grace=timedelta(0),
    )


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ORDERMESH_WEBHOOK_POLL_SECONDS", "0"),
        ("ORDERMESH_WEBHOOK_RETRY_BASE_SECONDS", "-1"),
        ("ORDERMESH_WEBHOOK_RETRY_MAX_DELAY_SECONDS", "inf"),
        ("ORDERMESH_WEBHOOK_ROTATION_GRACE_SECONDS", "-5"),
        ("ORDERMESH_WEBHOOK_SENDER_CONCURRENCY", "1.5"),
        ("ORDERMESH_WEBHOOK_PER_ENDPOINT_CONCURRENCY", "-2"),
        ("ORDERMESH_WEBHOOK_DISABLE_AFTER_FAILURES", "many"),
        ("ORDERMESH_WEBHOOK_LEASE_SECONDS", "10"),
    ],
)
def test_more_malformed_settings_fail_fast_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        WebhookSettings.from_env({name: raw})
