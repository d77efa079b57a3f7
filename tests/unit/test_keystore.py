"""The file keystore: keys encrypted at rest, passphrase rules, and keys reached by URI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from signing import KeyNotFoundError, KeystoreError, PassphraseError
from signing.keys import DEV_PASSPHRASE, KeyScheme, Keystore, KeystoreKeyRing

SECRET = "correct horse battery staple"


def _store(tmp_path: Path, passphrase: str = SECRET, *, dev: bool = False) -> Keystore:
    return Keystore.create(tmp_path / "keys", lambda: passphrase, dev_mode=dev)


@pytest.mark.parametrize("scheme", list(KeyScheme), ids=lambda s: s.value)
def test_generated_key_signs_and_verifies(tmp_path: Path, scheme: KeyScheme) -> None:
    keystore = _store(tmp_path)
    entry = keystore.generate("image-timestamp-1", "image", "timestamp", scheme)
    signature = keystore.signer(entry).sign(b"payload")
    entry.public_key.verify_signature(signature, b"payload")
    assert entry.scheme == ("ed25519" if scheme is KeyScheme.ED25519 else "ecdsa-sha2-nistp256")


def test_private_key_is_encrypted_at_rest(tmp_path: Path) -> None:
    keystore = _store(tmp_path)
    keystore.generate("k1", "image", "root", KeyScheme.ED25519)
    pem = (tmp_path / "keys" / "k1.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert (tmp_path / "keys" / "k1.pem").stat().st_mode & 0o077 == 0


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    _store(tmp_path).generate("k1", "image", "root", KeyScheme.ED25519)
    reopened = Keystore(tmp_path / "keys", lambda: "not it")
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        reopened.signer(reopened.entry("k1"))


def test_dev_passphrase_is_refused_outside_dev_mode(tmp_path: Path) -> None:
    keystore = _store(tmp_path, DEV_PASSPHRASE, dev=False)
    with pytest.raises(PassphraseError, match="dev passphrase"):
        keystore.generate("k1", "image", "root", KeyScheme.ED25519)


def test_dev_passphrase_works_in_dev_mode(tmp_path: Path) -> None:
    keystore = _store(tmp_path, DEV_PASSPHRASE, dev=True)
    entry = keystore.generate("k1", "image", "root", KeyScheme.ED25519)
    assert keystore.signer(entry).public_key.keyid == entry.keyid


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PassphraseError, match="no passphrase"):
        _store(tmp_path, "").generate("k1", "image", "root", KeyScheme.ED25519)


def test_missing_key_and_missing_keystore(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFoundError, match="keys init"):
        Keystore(tmp_path / "nowhere", lambda: SECRET)
    with pytest.raises(KeyNotFoundError):
        _store(tmp_path).entry("absent")


def test_duplicate_and_invalid_names(tmp_path: Path) -> None:
    keystore = _store(tmp_path)
    keystore.generate("k1", "image", "root", KeyScheme.ED25519)
    with pytest.raises(KeystoreError, match="exists"):
        keystore.generate("k1", "image", "root", KeyScheme.ED25519)
    with pytest.raises(KeystoreError, match="invalid key name"):
        keystore.generate("../escape", "image", "root", KeyScheme.ED25519)


def test_an_external_key_is_a_configuration_change(tmp_path: Path) -> None:
    """A key reached by URI (here file2:, as azurekms: would be) signs through the same path."""
    external = CryptoSigner.generate_ecdsa()
    pem_path = tmp_path / "kms-held.pem"
    pem_path.write_bytes(external.private_bytes)
    public_pem = external.public_key.to_dict()["keyval"]["public"].encode()
    keystore = _store(tmp_path)
    entry = keystore.add_external(
        "image-timestamp-kms", "image", "timestamp", f"file2:{pem_path}", public_pem
    )
    ring = KeystoreKeyRing(keystore)
    [signer] = ring.signers("image", "timestamp")
    entry.public_key.verify_signature(signer.sign(b"x"), b"x")
    assert json.loads((tmp_path / "keys" / "image-timestamp-kms.json").read_text())[
        "uri"
    ].startswith("file2:")


def test_an_unknown_uri_scheme_is_refused(tmp_path: Path) -> None:
    public_pem = CryptoSigner.generate_ecdsa().public_key.to_dict()["keyval"]["public"].encode()
    with pytest.raises(KeystoreError, match="no signer is registered"):
        _store(tmp_path).add_external("k", "image", "timestamp", "nosuchkms://x/y", public_pem)


def test_retire_and_restore(tmp_path: Path) -> None:
    keystore = _store(tmp_path)
    keystore.generate("k1", "image", "root", KeyScheme.ED25519)
    keystore.retire("k1")
    assert keystore.entries() == []
    keystore.restore("k1")
    assert [e.name for e in keystore.entries()] == ["k1"]
