"""The development CA and server certificate (devstack/tls.py): what is made, what a TLS 1.3
client accepts, and when files are reused or renewed."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from devstack import tls

NOW = datetime.datetime(2030, 1, 15, 12, 0, tzinfo=datetime.UTC)


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _contents(files: tls.CertificateFiles) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(files.directory.iterdir())}


def _handshake(files: tls.CertificateFiles, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """A TLS handshake in memory between a server with ``files`` and ``client``."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(files.certificate, files.private_key)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        if all(done.values()):
            return client_side
    raise AssertionError("handshake did not finish")


def test_makes_a_ca_and_a_server_certificate(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path / "tls", now=NOW)
    assert sorted(path.name for path in files.directory.iterdir()) == sorted(
        [tls.CA_CERT, tls.CA_KEY, tls.SERVER_CERT, tls.SERVER_KEY]
    )
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600

    ca, server = _certificate(files.ca_certificate), _certificate(files.certificate)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert server.not_valid_after_utc - NOW >= tls.SERVER_LIFETIME - datetime.timedelta(seconds=1)


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_a_client_trusting_the_ca_completes_a_tls13_handshake(
    tmp_path: Path, hostname: str
) -> None:
    files = tls.ensure(tmp_path)
    client = ssl.create_default_context(cafile=files.ca_certificate)
    connection = _handshake(files, client, hostname)
    assert connection.version() == "TLSv1.3"


def test_a_client_without_the_ca_rejects_the_certificate(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path)
    client = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, client, "localhost")


def test_valid_files_are_reused(tmp_path: Path) -> None:
    first = _contents(tls.ensure(tmp_path, now=NOW))
    later = NOW + tls.SERVER_LIFETIME - tls.RENEW_BEFORE - datetime.timedelta(days=1)
    assert _contents(tls.ensure(tmp_path, now=later)) == first


def test_a_server_certificate_near_expiry_is_reissued_by_the_same_ca(tmp_path: Path) -> None:
    first = _contents(tls.ensure(tmp_path, now=NOW))
    later = NOW + tls.SERVER_LIFETIME - tls.RENEW_BEFORE + datetime.timedelta(days=1)
    files = tls.ensure(tmp_path, now=later)
    second = _contents(files)
    assert second[tls.CA_CERT] == first[tls.CA_CERT]
    assert second[tls.CA_KEY] == first[tls.CA_KEY]
    assert second[tls.SERVER_CERT] != first[tls.SERVER_CERT]
    assert second[tls.SERVER_KEY] != first[tls.SERVER_KEY]
    renewed = _certificate(files.certificate)
    renewed.verify_directly_issued_by(_certificate(files.ca_certificate))
    assert renewed.not_valid_after_utc > later + tls.RENEW_BEFORE


def test_a_ca_near_expiry_is_replaced_with_its_server_certificate(tmp_path: Path) -> None:
    first = _contents(tls.ensure(tmp_path, now=NOW))
    later = NOW + tls.CA_LIFETIME - tls.RENEW_BEFORE + datetime.timedelta(days=1)
    second = _contents(tls.ensure(tmp_path, now=later))
    assert all(second[name] != first[name] for name in first)


def test_an_expired_server_certificate_is_replaced(tmp_path: Path) -> None:
    first = _contents(tls.ensure(tmp_path, now=NOW))
    later = NOW + tls.SERVER_LIFETIME + datetime.timedelta(days=1)
    assert _contents(tls.ensure(tmp_path, now=later))[tls.SERVER_CERT] != first[tls.SERVER_CERT]


def test_a_server_certificate_from_another_ca_or_a_wrong_key_is_replaced(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path / "one")
    other = tls.ensure(tmp_path / "two")
    files.certificate.write_bytes(other.certificate.read_bytes())
    files.private_key.write_bytes(other.private_key.read_bytes())
    tls.ensure(files.directory)
    _certificate(files.certificate).verify_directly_issued_by(_certificate(files.ca_certificate))

    files.private_key.write_bytes(other.private_key.read_bytes())
    tls.ensure(files.directory)
    client = ssl.create_default_context(cafile=files.ca_certificate)
    assert _handshake(files, client, "localhost").version() == "TLSv1.3"


def test_missing_or_unreadable_files_are_made_again(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path, now=NOW)
    ca = files.ca_certificate.read_bytes()
    files.certificate.write_text("not a certificate")
    files.private_key.unlink()
    tls.ensure(tmp_path, now=NOW)
    assert files.ca_certificate.read_bytes() == ca
    _certificate(files.certificate).verify_directly_issued_by(_certificate(files.ca_certificate))

    files.ca_key.unlink()
    tls.ensure(tmp_path, now=NOW)
    assert files.ca_certificate.read_bytes() != ca
    _certificate(files.certificate).verify_directly_issued_by(_certificate(files.ca_certificate))
