"""A self-signed TLS certificate for the loopback test servers.

``tls_cert`` (session) writes ``cert.pem`` / ``key.pem`` for ``localhost``,
``127.0.0.1`` and ``::1`` with :mod:`cryptography` (no ``openssl`` binary).
The certificate is its own CA (``BasicConstraints(ca=True)``): clients trust it
only when told to (crmflow's ``extra_ca_file``), so the same servers also
prove that an untrusted certificate is refused.

The server plugins import ``tls_cert`` (so loading any of them provides it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["TestCert", "make_cert"]

#: validity of the throwaway certificate, in days
VALID_DAYS = 2


@dataclass(frozen=True, slots=True)
class TestCert:
    """PEM files of a self-signed certificate and its key."""

    __test__ = False  # not a test class, despite the name

    cert_file: Path
    key_file: Path


def make_cert(directory: Path) -> TestCert:
    """Write a self-signed EC certificate for the loopback names into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crmflow test server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # servers that drop privileges (Dovecot reads it as root, Radicale as us)
    # must be able to read both files
    cert_file.chmod(0o644)
    key_file.chmod(0o644)
    return TestCert(cert_file, key_file)


@pytest.fixture(scope="session")
def tls_cert() -> Iterator[TestCert]:
    """A self-signed certificate for localhost / 127.0.0.1 / ::1 (session)."""
    # Outside pytest's temp tree: another pytest run resets /tmp/pytest-of-root
    # to 0700, which would lock out servers running as other users.
    base = Path(tempfile.mkdtemp(prefix="crmflow-tls-"))
    try:
        base.chmod(0o755)
        yield make_cert(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
