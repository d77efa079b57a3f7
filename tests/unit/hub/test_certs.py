"""The hub's local PKI."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.hub._auth import thumbprint
from infra.hub._certs import ensure_ca, ensure_server_certificate, issue_device_certificate


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_names_every_address_clients_dial(tmp_path: Path) -> None:
    paths = ensure_server_certificate(tmp_path, "fleet-hub.local")
    cert, ca = _load(paths.cert), _load(tmp_path / "ca.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fleet-hub.local"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca)
    assert (paths.key.stat().st_mode & 0o777) == 0o600


def test_the_ca_is_kept_and_the_server_certificate_follows_the_host_name(tmp_path: Path) -> None:
    first_ca = ensure_ca(tmp_path).cert.read_bytes()
    first = ensure_server_certificate(tmp_path, "a.local").cert.read_bytes()
    assert ensure_server_certificate(tmp_path, "a.local").cert.read_bytes() == first
    renamed = ensure_server_certificate(tmp_path, "b.local").cert.read_bytes()
    assert renamed != first and ensure_ca(tmp_path).cert.read_bytes() == first_ca


def test_device_certificates_are_client_certificates_named_after_the_device(tmp_path: Path) -> None:
    paths, thumb = issue_device_certificate(tmp_path, "cam-1")
    cert = _load(paths.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(_load(tmp_path / "ca.pem"))
    assert thumb == thumbprint(cert.public_bytes(serialization.Encoding.DER)) and len(thumb) == 40
