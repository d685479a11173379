"""Self-signed TLS certificates for the federation listener (``[federation] tls_*_path``).

Theory of operation
-------------------
The spec wants a certificate "signed by a known Certificate Authority" (s2s
"TLS"); an operator supplies one at ``tls_certificate_path`` /
``tls_private_key_path``. For development, tests and closed networks (with
``verify_certificates = false`` on the peers) this module makes a self-signed
pair instead:

* ``self_signed_pair(names)`` returns PEM bytes (certificate, key) for an EC
  P-256 key, valid from now for ``days`` (10 years by default), with every name
  in the subjectAltName (a DNS name, or an IP address for IP literals). P-256
  rather than ed25519 because every TLS client speaks it.
* ``write_self_signed_pair(cert_path, key_path, server_name)`` writes one for the
  server name's host; the key with mode 0600. It refuses to replace existing
  files.
* ``ensure_tls_files(cert_path, key_path, server_name)`` is what startup and
  ``generate-config`` call: nothing if both files exist, a new pair if both are
  missing (returns True: the caller logs a warning), ``TlsFilesError`` if only
  one exists (an operator's half-installed certificate is not silently
  replaced).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api.files import write_new_file

from roomactors.protocol.server_discovery import parse_server_name

__all__ = ["TlsFilesError", "ensure_tls_files", "self_signed_pair", "write_self_signed_pair"]

DEFAULT_DAYS = 3650


class TlsFilesError(Exception):
    """The certificate/key pair is half present or cannot be written."""


def self_signed_pair(names: Sequence[str], *, days: int = DEFAULT_DAYS) -> tuple[bytes, bytes]:
    """PEM (certificate, private key) valid for ``names`` (DNS names or IP addresses)."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def write_self_signed_pair(cert_path: Path, key_path: Path, server_name: str) -> None:
    """Write a new self-signed pair for ``server_name``'s host (never replacing files)."""
    host = parse_server_name(server_name).host
    cert_pem, key_pem = self_signed_pair([host])
    for path in (cert_path, key_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_new_file(key_path, key_pem, 0o600)
    try:
        write_new_file(cert_path, cert_pem, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise


def ensure_tls_files(cert_path: Path, key_path: Path, server_name: str) -> bool:
    """Make a self-signed pair if neither file exists; True when one was made."""
    cert_exists, key_exists = cert_path.exists(), key_path.exists()
    if cert_exists and key_exists:
        return False
    if cert_exists or key_exists:
        present, missing = (cert_path, key_path) if cert_exists else (key_path, cert_path)
        raise TlsFilesError(f"{present} exists but {missing} does not; install both or neither")
    try:
        write_self_signed_pair(cert_path, key_path, server_name)
    except OSError as e:
        raise TlsFilesError(f"cannot write {cert_path} / {key_path}: {e}") from e
    return True
