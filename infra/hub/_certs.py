"""The hub's local PKI: a CA, the server certificate, and device certificates (ECDSA P-256).

Files live under `DATA/certs/`; private keys are written with mode 0600. Existing files are
reused, so restarting the hub keeps the CA that devices already trust.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.hub._auth import thumbprint

__all__ = ["CertificatePaths", "ensure_ca", "ensure_server_certificate", "issue_device_certificate"]

_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load(paths: CertificatePaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tinyfleet mock IoT hub"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_ca(certs_dir: Path) -> CertificatePaths:
    certs_dir.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(certs_dir / "ca.pem", certs_dir / "ca.key")
    if paths.cert.exists() and paths.key.exists():
        return paths
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("tinyfleet mock hub CA"))
        .issuer_name(_name("tinyfleet mock hub CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 2 * _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(paths.key, key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _issue(
    ca: CertificatePaths,
    out: CertificatePaths,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> None:
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out.cert.parent.mkdir(parents=True, exist_ok=True)
    _write_key(out.key, key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_server_certificate(certs_dir: Path, hostname: str) -> CertificatePaths:
    """The TLS server certificate, valid for `localhost`, `127.0.0.1` and the hub host name."""
    ca = ensure_ca(certs_dir)
    out = CertificatePaths(certs_dir / "server.pem", certs_dir / "server.key")
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(hostname),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if out.cert.exists() and out.key.exists():
        current = x509.load_pem_x509_certificate(out.cert.read_bytes())
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if set(san) == set(names):
            return out
    _issue(ca, out, hostname, ExtendedKeyUsageOID.SERVER_AUTH, names)
    return out


def issue_device_certificate(certs_dir: Path, device_id: str) -> tuple[CertificatePaths, str]:
    """A client certificate with CN = device id, signed by the hub CA; returns its thumbprint."""
    ca = ensure_ca(certs_dir)
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in device_id)
    out = CertificatePaths(
        certs_dir / "devices" / f"{safe}.pem", certs_dir / "devices" / f"{safe}.key"
    )
    _issue(ca, out, device_id, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    der = x509.load_pem_x509_certificate(out.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    return out, thumbprint(der)
