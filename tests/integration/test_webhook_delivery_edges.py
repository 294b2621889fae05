"""Webhook delivery at its edges, against real Postgres with real senders and real servers on
127.0.77.x: HTTPS targets (SNI and Host are the registered name, the certificate is checked
against it, a plain-HTTP answer fails cleanly), the per-user cap across endpoints and
senders, a host that stops resolving, stored webhooks that can no longer be sent (a URL
today's rules refuse, a secret that no longer decrypts), the retention purge, the LISTEN
connection coming back after its backend is killed, and answers that stall or never end."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.platform.db import Pool
from services.platform.messaging.retention import RetentionPurger
from services.platform.settings import Settings
from services.webhook import bootstrap as webhook_bootstrap
from services.webhook.adapters.deliveries import notifications
from services.webhook.adapters.http import CheckedPoster
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.model import Delivery, RegisteredWebhook
from services.webhook.sender import WebhookSender
from services.webhook.settings import WebhookSettings
from tests.integration.webhook_harness import (
    Behaviour,
    Receiver,
    Reply,
    Request,
    Responder,
    WebhookContext,
    answering,
    eventually,
    fast_settings,
    raw_receiver,
    read_request,
    receivers,
    running,
)

pytestmark = pytest.mark.integration


def fresh_host_name(tld: str = "test") -> str:
    return f"hooks-{uuid.uuid4().hex[:12]}.{tld}"


def with_hosts(hosts: Path, names: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """Fast sender settings resolving ``names`` (name: address) through the hosts file."""
    hosts.write_text("".join(f"{address} {name}\n" for name, address in names.items()))
    return fast_settings(HOSTS_FILE=str(hosts), **overrides)


async def attempted(webhooks: WebhookContext, delivery_id: str, times: int = 1) -> bool:
    row = (await webhooks.rows(delivery_id)).get(delivery_id)
    return row is not None and row["attempts"] >= times


# --- HTTPS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A throwaway certificate authority, for HTTPS receivers and the senders trusting it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ordermesh itest CA")])
        certificate = (
            _valid_now(x509.CertificateBuilder())
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def trusted(self) -> ssl.SSLContext:
        """A client context trusting this authority only."""
        return ssl.create_default_context(
            cadata=self.certificate.public_bytes(Encoding.PEM).decode()
        )

    def server(self, host_name: str, directory: Path, sni: list[str | None]) -> ssl.SSLContext:
        """A server context presenting a certificate for ``host_name`` signed by this
        authority, appending the name each client asks for (SNI) to ``sni``."""
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_key_id = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        certificate = (
            _valid_now(x509.CertificateBuilder())
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = directory / f"{host_name}-{uuid.uuid4().hex[:8]}"
        chain, private = stem.with_suffix(".crt"), stem.with_suffix(".key")
        chain.write_bytes(certificate.public_bytes(Encoding.PEM))
        private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, private)

        def record_sni(connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            sni.append(name)

        context.sni_callback = record_sni
        return context


def _valid_now(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
    )


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.create()


def sender_trusting(
    webhooks: WebhookContext, env: Mapping[str, str], trusted: ssl.SSLContext
) -> WebhookSender:
    """A sender wired as the bootstrap wires one, but verifying certificates with
    ``trusted`` instead of the system's authorities."""
    settings = WebhookSettings.from_env(env)
    poster = CheckedPoster(
        DnsResolver(timeout_seconds=settings.connect_timeout, hosts_file=settings.hosts_file),
        allowed=settings.allows,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.total_timeout,
        ssl_context=trusted,
    )
    return WebhookSender(
        webhooks.queue(env),
        poster,
        settings.retry,
        owner=f"itest-tls-{uuid.uuid4().hex[:8]}",
        concurrency=settings.concurrency,
        poll_interval=settings.poll_interval,
        shutdown_grace=settings.total_timeout + 1,
        listener=notifications(webhooks.resources.settings.database_url_for("webhook")),
    )


async def test_an_https_delivery_names_the_registered_host_in_sni_and_host(
    webhooks: WebhookContext, authority: Authority, tmp_path: Path
) -> None:
    name = fresh_host_name()
    sni: list[str | None] = []
    async with receivers(answering(), tls=authority.server(name, tmp_path, sni)) as [receiver]:
        env = with_hosts(tmp_path / "hosts", {name: receiver.host})
        hook = await webhooks.register(f"https://{name}:{receiver.port}/hook", env=env)
        [delivery_id] = await webhooks.record(hook)
        async with running(sender_trusting(webhooks, env, authority.trusted())):
            await webhooks.until_states([delivery_id], "succeeded")

    assert receiver.ids() == [delivery_id]
    [request] = receiver.requests
    assert request.headers["host"] == f"{name}:{receiver.port}"  # not the address called
    assert request.target == "/hook"
    assert sni == [name]
    [attempt] = (await webhooks.log(hook))[0].attempts
    assert (attempt.status_code, attempt.error) == (200, "")


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        ("another-name", "Hostname mismatch"),
        ("unknown-authority", "unable to get local issuer certificate"),
    ],
    ids=["another-name", "unknown-authority"],
)
async def test_a_certificate_not_valid_for_the_host_fails_the_attempt_which_is_retried(
    webhooks: WebhookContext, authority: Authority, tmp_path: Path, presented: str, reason: str
) -> None:
    name = fresh_host_name()
    sni: list[str | None] = []
    if presented == "another-name":
        tls = authority.server(fresh_host_name(), tmp_path, sni)
    else:
        tls = Authority.create().server(name, tmp_path, sni)
    async with receivers(answering(), tls=tls) as [receiver]:
        env = with_hosts(tmp_path / "hosts", {name: receiver.host}, MAX_ATTEMPTS="20")
        hook = await webhooks.register(f"https://{name}:{receiver.port}/hook", env=env)
        [delivery_id] = await webhooks.record(hook)
        async with running(sender_trusting(webhooks, env, authority.trusted())):
            await webhooks.until_attempted(hook)
            [delivery] = await webhooks.log(hook)
            await eventually(lambda: attempted(webhooks, delivery_id, times=2))

    assert receiver.requests == []
    assert sni and set(sni) == {name}
    assert delivery.state == "pending"
    attempt = delivery.attempts[-1]
    assert (attempt.number, attempt.status_code) == (1, None)
    assert attempt.error.startswith(
        f"could not connect: {receiver.host}: [SSL: CERTIFICATE_VERIFY_FAILED]"
    ), attempt.error
    assert reason in attempt.error
    assert (await webhooks.states(delivery_id))[delivery_id] == "pending"


async def _answers_plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)  # a TLS ClientHello, which a plain HTTP server cannot parse
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\n")
    writer.write(b"bad request")
    await writer.drain()


async def test_a_plain_http_answer_to_an_https_url_fails_the_attempt_cleanly(
    webhooks: WebhookContext,
) -> None:
    async with raw_receiver(_answers_plain_http) as receiver:
        hook = await webhooks.register(receiver.url(scheme="https"))
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(fast_settings(MAX_ATTEMPTS="20"))):
            await webhooks.until_attempted(hook)
            [delivery] = await webhooks.log(hook)
            # The sender lives on: a later delivery to the same endpoint is attempted too.
            [later] = await webhooks.record(hook)
            await eventually(lambda: attempted(webhooks, later))

    assert receiver.connections >= 2
    assert (delivery.delivery_id, delivery.state) == (delivery_id, "pending")
    attempt = delivery.attempts[-1]
    assert attempt.status_code is None
    # (OpenSSL 3.0 says WRONG_VERSION_NUMBER; the reason differs between versions.)
    assert attempt.error.startswith(f"could not connect: {receiver.host}: [SSL: "), attempt.error
    assert attempt.latency_ms < 1000


async def test_a_complete_https_answer_counts_even_if_the_receiver_does_not_answer_the_close(
    webhooks: WebhookContext, authority: Authority, tmp_path: Path
) -> None:
    name = fresh_host_name()

    async def answers_then_stops_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await asyncio.sleep(1.5)  # within the 2 s timeout, with half a second to spare
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        # A busy receiver: it reads no more, so the sender's close_notify goes unanswered.
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        await asyncio.sleep(30)

    tls = authority.server(name, tmp_path, [])
    async with raw_receiver(answers_then_stops_reading, tls=tls) as receiver:
        env = with_hosts(
            tmp_path / "hosts",
            {name: receiver.host},
            TIMEOUT_SECONDS="2",
            LEASE_SECONDS="5",
            MAX_ATTEMPTS="20",
        )
        hook = await webhooks.register(f"https://{name}:{receiver.port}/hook", env=env)
        await webhooks.record(hook)
        async with running(sender_trusting(webhooks, env, authority.trusted())):
            await webhooks.until_attempted(hook)
            [delivery] = await webhooks.log(hook)

    first = delivery.attempts[-1]
    # Today: (None, "timed out after 2 s without a complete response"), and it is sent again.
    assert (first.status_code, first.error) == (200, "")
    assert delivery.state == "succeeded"


# --- the per-user cap ------------------------------------------------------------------------


@dataclass
class Gauge:
    """Requests held at once by a group of receivers, now and at most."""

    now: int = 0
    most: int = 0
    history: list[int] = field(default_factory=list)

    def slow(self, seconds: float) -> Behaviour:
        async def reply(request: Request) -> Reply:
            self.now += 1
            self.most = max(self.most, self.now)
            self.history.append(self.now)
            try:
                await asyncio.sleep(seconds)
            finally:
                self.now -= 1
            return Reply()

        return reply


async def test_one_users_endpoints_together_hold_no_more_than_the_per_user_cap(
    webhooks: WebhookContext,
) -> None:
    busy_user, other_user = f"itest-{uuid.uuid4()}", f"itest-{uuid.uuid4()}"
    gauge = Gauge()
    env = fast_settings(PER_USER_CONCURRENCY="3", PER_ENDPOINT_CONCURRENCY="2")
    behaviours = [gauge.slow(1.5)] * 3
    async with receivers(*behaviours, answering()) as [*busy_endpoints, prompt_endpoint]:
        busy_hooks = [await webhooks.register(r.url(), user_id=busy_user) for r in busy_endpoints]
        other_hook = await webhooks.register(prompt_endpoint.url(), user_id=other_user)
        busy_ids = await webhooks.record_many(
            [(hook, str(uuid.uuid4()), 1) for hook in busy_hooks for _ in range(2)]
        )
        # Two senders, so the cap must hold between their claims too.
        async with running(webhooks.sender(env), webhooks.sender(env)):

            async def saturated() -> bool:
                return gauge.now >= 3

            await eventually(saturated, within=5, interval=0.01)
            recorded_at = time.monotonic()
            other_ids = await webhooks.record_for_orders(other_hook, 3)
            await webhooks.until_states(other_ids, "succeeded", within=5)
            other_took = time.monotonic() - recorded_at
            still_busy = gauge.now
            await webhooks.until_states(busy_ids, "succeeded", within=15)

    assert gauge.most == 3, gauge.history
    assert still_busy > 0  # the other user's deliveries went while the busy one's were held
    assert other_took < 1.0
    assert sorted(prompt_endpoint.ids()) == sorted(other_ids)
    assert [len(r.requests) for r in busy_endpoints] == [2, 2, 2]
    assert all(r.most_in_flight <= 2 for r in busy_endpoints)


async def test_one_claim_fills_a_users_free_slots_across_its_endpoints(
    webhooks: WebhookContext,
) -> None:
    user = f"itest-{uuid.uuid4()}"
    crowded = await webhooks.register("http://127.0.77.1/crowded", user_id=user)
    quiet = await webhooks.register("http://127.0.77.1/quiet", user_id=user)
    crowded_ids = await webhooks.record_for_orders(crowded, 3)
    quiet_ids = await webhooks.record_for_orders(quiet, 1)
    queue = webhooks.queue(fast_settings(PER_USER_CONCURRENCY="3", PER_ENDPOINT_CONCURRENCY="2"))
    claimed = await queue.claim("itest-claimer", 10)
    await queue.release("itest-claimer", [delivery.delivery_id for delivery in claimed])

    leased = {delivery.delivery_id for delivery in claimed}
    # Two of the crowded endpoint's (its cap) and the quiet one's: the user's three slots.
    # Today only the crowded two; the quiet delivery waits for the next claim (a poll later).
    assert len(leased & set(crowded_ids)) == 2
    assert leased & set(quiet_ids) == set(quiet_ids)


# --- a host that does not resolve ------------------------------------------------------------


async def test_a_host_that_stops_resolving_is_retried_until_it_resolves_again(
    webhooks: WebhookContext, tmp_path: Path
) -> None:
    name = fresh_host_name("invalid")  # reserved: never resolves outside the hosts file
    hosts = tmp_path / "hosts"
    async with receivers(answering()) as [receiver]:
        env = with_hosts(hosts, {name: receiver.host}, MAX_ATTEMPTS="20")
        hook = await webhooks.register(f"http://{name}:{receiver.port}/hook", env=env)
        hosts.write_text("# the test's name is gone\n")
        [delivery_id] = await webhooks.record(hook)
        async with running(webhooks.sender(env)):
            await webhooks.until_attempted(hook)
            [unresolved] = await webhooks.log(hook)
            hosts.write_text(f"{receiver.host} {name}\n")
            await webhooks.until_states([delivery_id], "succeeded")

    assert unresolved.state == "pending"
    assert unresolved.next_attempt_at is not None
    first = unresolved.attempts[-1]
    assert (first.number, first.status_code) == (1, None)
    assert first.error == f"host {name!r} does not resolve"
    assert receiver.ids() == [delivery_id]
    [delivered] = await webhooks.log(hook)
    assert delivered.attempts[0].status_code == 200
    assert len(delivered.attempts) >= 2


# --- stored webhooks that cannot be sent -----------------------------------------------------

Corruption = Callable[[Pool, RegisteredWebhook, Receiver], Awaitable[None]]


async def _unsendable_beside_sendable(
    webhooks: WebhookContext, corrupt: Corruption
) -> tuple[Delivery, list[str], Receiver]:
    """A webhook corrupted in the database and a sound one of the same user, each with
    deliveries due at once (so one claim takes them all): the corrupted webhook's delivery
    once it has failed, the sound deliveries' ids, and the receiver."""
    user = f"itest-{uuid.uuid4()}"
    async with receivers(answering()) as [receiver]:
        sound = await webhooks.register(receiver.url("/sound"), user_id=user)
        broken = await webhooks.register(receiver.url("/broken"), user_id=user)
        await corrupt(webhooks.pool, broken, receiver)
        plan = [(sound, str(uuid.uuid4()), 1), (broken, str(uuid.uuid4()), 1)]
        plan += [(sound, str(uuid.uuid4()), 1) for _ in range(3)]
        first, failing, *rest = await webhooks.record_many(plan)
        async with running(webhooks.sender(fast_settings())):
            await webhooks.until_states([failing], "failed")
            await webhooks.until_states([first, *rest], "succeeded")
    [delivery] = await webhooks.log(broken)
    assert delivery.delivery_id == failing
    return delivery, [first, *rest], receiver


@pytest.mark.parametrize("path", ["/a b", "/a\x01b", "/a\x7fb"], ids=["space", "soh", "del"])
async def test_a_stored_url_the_rules_now_refuse_fails_its_delivery_and_no_other(
    webhooks: WebhookContext, path: str
) -> None:
    async def store_old_url(pool: Pool, hook: RegisteredWebhook, receiver: Receiver) -> None:
        # As an older version, checking less, could have stored it.
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE webhook.webhooks SET url = %s WHERE webhook_id = %s",
                (f"http://{receiver.host}:{receiver.port}{path}", hook.webhook.webhook_id),
            )

    delivery, sent, receiver = await _unsendable_beside_sendable(webhooks, store_old_url)

    assert delivery.last_error.startswith("refused: the webhook's URL is not accepted"), (
        delivery.last_error
    )
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.error) == (None, delivery.last_error)
    assert sorted(receiver.ids()) == sorted(sent)
    assert {request.target for request in receiver.requests} == {"/sound"}


async def test_a_secret_encrypted_under_another_key_fails_its_delivery_and_no_other(
    webhooks: WebhookContext,
) -> None:
    async def encrypt_elsewhere(pool: Pool, hook: RegisteredWebhook, receiver: Receiver) -> None:
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE webhook.webhooks SET secret_encrypted = %s WHERE webhook_id = %s",
                (SecretCipher("another key").encrypt(hook.secret), hook.webhook.webhook_id),
            )

    delivery, sent, receiver = await _unsendable_beside_sendable(webhooks, encrypt_elsewhere)

    assert delivery.last_error.startswith("refused: "), delivery.last_error
    assert "cannot be decrypted" in delivery.last_error
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.error) == (None, delivery.last_error)
    assert sorted(receiver.ids()) == sorted(sent)


# --- retention -------------------------------------------------------------------------------


async def test_the_purge_deletes_old_finished_deliveries_orders_and_inbox_entries_only(
    webhooks: WebhookContext, settings: Settings
) -> None:
    hook = await webhooks.register("http://127.0.77.1/retention")
    ids = await webhooks.record_for_orders(hook, 6)
    # (delivery, state, finished this many days ago)
    plan: list[tuple[str, str, int | None]] = [
        (ids[0], "succeeded", 31),
        (ids[1], "failed", 31),
        (ids[2], "parked", 31),
        (ids[3], "pending", None),
        (ids[4], "succeeded", 29),
        (ids[5], "failed", 0),
    ]
    old_order, recent_order = f"itest-{uuid.uuid4()}", f"itest-{uuid.uuid4()}"
    group = f"itest-retention-{uuid.uuid4()}"
    old_event, recent_event = uuid.uuid4(), uuid.uuid4()
    inbox_horizon = settings.inbox_retention_seconds
    async with webhooks.pool.connection() as conn:
        for delivery_id, state, days in plan:
            await conn.execute(
                "UPDATE webhook.deliveries SET state = %s, created_at = now() - interval '40 days',"
                " finished_at = now() - make_interval(days => %s::int) WHERE delivery_id = %s",
                (state, days, delivery_id),
            )
            await conn.execute(
                "INSERT INTO webhook.delivery_attempts (delivery_id, number, started_at,"
                " latency_ms, error) VALUES (%s, 1, now() - interval '40 days', 5, 'itest')",
                (delivery_id,),
            )
        # Orders are kept as long as the inbox remembers events.
        await conn.execute(
            "INSERT INTO webhook.orders (order_id, user_id, version, document, updated_at)"
            " VALUES (%s, 'itest', 1, '{}', now() - make_interval(secs => %s)),"
            " (%s, 'itest', 1, '{}', now() - make_interval(secs => %s))",
            (old_order, inbox_horizon + 3600, recent_order, inbox_horizon - 3600),
        )
        await conn.execute(
            "INSERT INTO webhook.inbox (consumer_group, event_id, processed_at)"
            " VALUES (%s, %s, now() - make_interval(secs => %s)),"
            " (%s, %s, now() - make_interval(secs => %s))",
            (group, old_event, inbox_horizon + 3600, group, recent_event, inbox_horizon - 3600),
        )
    try:
        # Run by the webhook role, one row per statement (each purge repeats until done).
        purger = RetentionPurger(
            {"webhook": webhooks.pool}, webhook_bootstrap.purges(settings), interval=60, batch=1
        )
        deleted = await purger.purge_once()
        async with webhooks.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT d.delivery_id::text AS id, count(a.number) AS attempts"
                " FROM webhook.deliveries d LEFT JOIN webhook.delivery_attempts a USING"
                " (delivery_id) WHERE d.delivery_id = ANY(%s::uuid[]) GROUP BY d.delivery_id",
                (ids,),
            )
            kept = {row["id"]: row["attempts"] for row in await cursor.fetchall()}
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM webhook.delivery_attempts"
                " WHERE delivery_id = ANY(%s::uuid[])",
                (ids,),
            )
            attempts = await cursor.fetchone()
            cursor = await conn.execute(
                "SELECT order_id FROM webhook.orders WHERE order_id = ANY(%s)",
                ([old_order, recent_order],),
            )
            orders = [row["order_id"] for row in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT event_id FROM webhook.inbox WHERE consumer_group = %s", (group,)
            )
            inbox = [row["event_id"] for row in await cursor.fetchall()]
    finally:
        async with webhooks.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM webhook.orders WHERE order_id = ANY(%s)", ([old_order, recent_order],)
            )
            await conn.execute("DELETE FROM webhook.inbox WHERE consumer_group = %s", (group,))

    assert deleted == {
        "webhook.deliveries (succeeded or failed)": 2,
        "webhook.orders (untouched)": 1,
        "webhook.inbox": 1,
    }
    assert kept == dict.fromkeys(ids[2:], 1)
    assert attempts == {"n": 4}  # the deleted deliveries' attempts went with them
    assert orders == [recent_order]
    assert inbox == [recent_event]


# --- the LISTEN connection -------------------------------------------------------------------

LISTENER = "ordermesh-webhook-listen"


async def listener_backends(pool: Pool) -> list[int]:
    """The pids of this database's webhook LISTEN connections, listening."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND query = 'LISTEN webhook_deliveries'",
            (LISTENER,),
        )
        return [row["pid"] for row in await cursor.fetchall()]


async def test_the_listener_reconnects_after_its_backend_is_terminated(
    webhooks: WebhookContext,
) -> None:
    async with receivers(answering()) as [receiver]:
        hook = await webhooks.register(receiver.url())
        async with running(webhooks.sender(fast_settings(POLL_SECONDS="30"))):
            found: list[int] = []

            async def listening() -> bool:
                found[:] = await listener_backends(webhooks.pool)
                return bool(found)

            await eventually(listening, within=5)
            [before] = found
            # The webhook role may end its own backends (the owner role may not); only this
            # test database's listener, by the pid just seen.
            async with webhooks.pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = %s"
                    " AND pid = %s",
                    (LISTENER, before),
                )
                assert [row["ended"] for row in await cursor.fetchall()] == [True]

            async def listening_again() -> bool:
                return await listening() and before not in found

            await eventually(listening_again, within=10)
            delivery_id, latency = await webhooks.record_and_time(hook, receiver)

    assert receiver.ids() == [delivery_id]
    assert latency < 1.0  # woken by the notification, not the 30 s poll


# --- answers that stall or never end ---------------------------------------------------------


async def _stalls_its_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
    await writer.drain()
    await reader.read()  # nothing more, until the sender hangs up


async def test_a_2xx_whose_body_stalls_counts_by_its_status_at_the_timeout(
    webhooks: WebhookContext,
) -> None:
    """The status decides; the body is only read for the log, until the deadline."""
    async with raw_receiver(_stalls_its_body) as receiver:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        env = fast_settings(TIMEOUT_SECONDS="1", LEASE_SECONDS="5")
        async with running(webhooks.sender(env)):
            await webhooks.until_states([delivery_id], "succeeded", within=5)
            [delivery] = await webhooks.log(hook)
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.response_excerpt, attempt.error) == (200, "0123456789", "")
    assert 900 <= attempt.latency_ms < 1500


async def _floods_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for number in itertools.count():
        writer.write(b"X-Filler-%d: %s\r\n" % (number, b"y" * 100))
        await writer.drain()


async def _trickles_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for number in itertools.count():
        writer.write(b"X-Filler-%d: y\r\n" % number)
        await writer.drain()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("respond", "error"),
    [
        (_floods_headers, "malformed HTTP response"),
        (_trickles_headers, "timed out after 1 s without a complete response"),
    ],
    ids=["flooded-headers", "trickled-headers"],
)
async def test_an_answer_that_never_completes_ends_the_attempt_within_the_timeout(
    webhooks: WebhookContext, respond: Responder, error: str
) -> None:
    async with raw_receiver(respond) as receiver:
        hook = await webhooks.register(receiver.url())
        [delivery_id] = await webhooks.record(hook)
        env = fast_settings(TIMEOUT_SECONDS="1", LEASE_SECONDS="5", MAX_ATTEMPTS="20")
        started = time.monotonic()
        async with running(webhooks.sender(env)):
            await webhooks.until_attempted(hook)
            [delivery] = await webhooks.log(hook)
        took = time.monotonic() - started

    assert (delivery.delivery_id, delivery.state) == (delivery_id, "pending")
    first = delivery.attempts[-1]
    assert first.number == 1
    assert first.status_code is None
    assert first.error.startswith(error), first.error
    assert first.latency_ms < 1500
    # The first attempt, then at most one more in flight when the sender was stopped.
    assert took < 1 + 1 + 2
    assert receiver.connections >= 1
