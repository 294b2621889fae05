"""A development CA and a server certificate for the edge's TLS listener.

``ensure()`` writes, into ``.run/tls`` by default (``make up`` calls it):

- ``ca.pem``: the CA's certificate, the one file clients trust
  (``curl --cacert .run/tls/ca.pem``, ``grpcurl -cacert .run/tls/ca.pem``);
- ``ca-key.pem``: the CA's key, kept so a renewed server certificate chains to the same CA;
- ``server.pem`` and ``server-key.pem``: Envoy's certificate (SANs ``localhost``, ``127.0.0.1``
  and ``::1``) and its key.

Keys are ECDSA P-256, mode 0600, in a 0700 directory. Files that are there, parse, match and
stay valid for more than ``RENEW_BEFORE`` are reused; a server certificate near its expiry is
reissued by the same CA, and a CA near its own expiry is replaced with everything it signed.
Nothing here is a production certificate: it exists so TLS can be used and tested locally.

``python -m devstack.tls [DIRECTORY] [--owner UID:GID]`` does the same from the command line
(compose.yaml's ``tls-init`` service runs it into a volume Envoy mounts).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.paths import RUN_DIR

DEFAULT_DIRECTORY = RUN_DIR / "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"

DNS_NAMES: tuple[str, ...] = ("localhost",)
IP_ADDRESSES: tuple[str, ...] = ("127.0.0.1", "::1")

CA_LIFETIME = datetime.timedelta(days=5 * 365)
# Within the 398 days clients such as browsers accept for a server certificate.
SERVER_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
# Tolerates a client clock a little behind ours.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateFiles:
    """Where ``ensure`` keeps the CA and the server certificate."""

    directory: Path
    ca_certificate: Path
    ca_key: Path
    certificate: Path
    private_key: Path

    @classmethod
    def at(cls, directory: Path) -> CertificateFiles:
        return cls(
            directory,
            ca_certificate=directory / CA_CERT,
            ca_key=directory / CA_KEY,
            certificate=directory / SERVER_CERT,
            private_key=directory / SERVER_KEY,
        )


def ensure(
    directory: Path = DEFAULT_DIRECTORY, *, now: datetime.datetime | None = None
) -> CertificateFiles:
    """The CA and server certificate in ``directory``, made or renewed as needed."""
    now = now or datetime.datetime.now(datetime.UTC)
    files = CertificateFiles.at(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca = _load_ca(files, now)
    if ca is None:
        ca = _new_ca(now)
        _write_key(files.ca_key, ca[1])
        _write_certificate(files.ca_certificate, ca[0])
        server = None
    else:
        server = _load_server(files, ca[0], now)
    if server is None:
        certificate, key = _new_server(ca, now)
        _write_key(files.private_key, key)
        _write_certificate(files.certificate, certificate)
    return files


# --- checking what is there ---------------------------------------------------------------------

_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _load_pair(certificate: Path, key: Path) -> _Pair | None:
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != private_key.public_key():
        return None
    return cert, private_key


def _fresh(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc - RENEW_BEFORE


def _load_ca(files: CertificateFiles, now: datetime.datetime) -> _Pair | None:
    pair = _load_pair(files.ca_certificate, files.ca_key)
    if pair is None or not _fresh(pair[0], now):
        return None
    return pair


def _load_server(
    files: CertificateFiles, ca: x509.Certificate, now: datetime.datetime
) -> _Pair | None:
    pair = _load_pair(files.certificate, files.private_key)
    if pair is None or not _fresh(pair[0], now):
        return None
    try:
        pair[0].verify_directly_issued_by(ca)
        names = pair[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return None
    if set(names) != set(_subject_alternative_names()):
        return None
    return pair


# --- making new ones ---------------------------------------------------------------------------


def _subject_alternative_names() -> list[x509.GeneralName]:
    return [
        *(x509.DNSName(name) for name in DNS_NAMES),
        *(x509.IPAddress(ipaddress.ip_address(address)) for address in IP_ADDRESSES),
    ]


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca(now: datetime.datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ordermesh development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ordermesh development CA"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _new_server(ca: _Pair, now: datetime.datetime) -> _Pair:
    ca_certificate, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key_id = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DNS_NAMES[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_LIFETIME, ca_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


# --- files --------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically, created with ``mode`` (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    temporary.chmod(mode)
    temporary.replace(path)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    _write(path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.tls", description=__doc__)
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    parser.add_argument(
        "--owner",
        metavar="UID:GID",
        help="hand the directory and its files to this user (the one Envoy runs as)",
    )
    args = parser.parse_args(argv)
    files = ensure(args.directory)
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        for path in (files.directory, *sorted(files.directory.iterdir())):
            os.chown(path, int(uid), int(gid or uid))
    print(files.ca_certificate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
