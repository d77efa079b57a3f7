"""Signing keys and the file keystore.

Every key is reached through securesystemslib's `Signer` interface by a private-key URI, so a key
held in Azure Key Vault (`azurekms://...`, ECDSA P-256) is a keystore entry like any other. Local
keys use the `encfile:` scheme registered here: a PKCS#8 PEM file encrypted with the keystore
passphrase (scrypt-derived AES, cryptography's `BestAvailableEncryption`).

Invariants:
- A private key is never written to disk unencrypted.
- Outside dev mode the passphrase must be given (environment or prompt) and must not be the dev
  default; a dev keystore says so in its manifest and is refused in production mode.
- An entry's public key is what the metadata trusts; a signer whose private key does not match it
  is refused when loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib import parse

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import (
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    SecretsHandler,
    Signer,
    SSlibKey,
)

from signing._errors import KeyNotFoundError, KeystoreError, PassphraseError
from signing.files import atomic_write

__all__ = [
    "DEV_PASSPHRASE",
    "EncryptedFileSigner",
    "KeyEntry",
    "KeyScheme",
    "Keystore",
    "KeystoreKeyRing",
    "MemoryKeyRing",
    "generate_signer",
]

DEV_PASSPHRASE = "tinyfleet-dev-only"  # accepted only by a keystore created in dev mode
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_MANIFEST = "keystore.json"


class KeyScheme(StrEnum):
    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"


def generate_signer(scheme: KeyScheme) -> CryptoSigner:
    if scheme is KeyScheme.ED25519:
        return CryptoSigner.generate_ed25519()
    return CryptoSigner.generate_ecdsa()


class EncryptedFileSigner(CryptoSigner):
    """`encfile:<path>`: an encrypted PKCS#8 PEM; the passphrase comes from the secrets handler."""

    SCHEME = "encfile"

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> CryptoSigner:
        if not isinstance(public_key, SSlibKey):
            raise KeystoreError(f"expected an SSlibKey for {priv_key_uri}")
        uri = parse.urlparse(priv_key_uri)
        if uri.scheme != cls.SCHEME:
            raise KeystoreError(f"{priv_key_uri} is not an {cls.SCHEME}: URI")
        if secrets_handler is None:
            raise PassphraseError("an encrypted key needs a passphrase")
        try:
            pem = Path(uri.path).read_bytes()
        except OSError as exc:
            raise KeyNotFoundError(f"private key file {uri.path}: {exc.strerror}") from exc
        passphrase = secrets_handler("passphrase").encode()
        try:
            private_key = serialization.load_pem_private_key(pem, password=passphrase)
        except (ValueError, TypeError) as exc:
            raise PassphraseError(f"cannot decrypt {uri.path}: wrong passphrase?") from exc
        try:
            return CryptoSigner(private_key, public_key)
        except ValueError as exc:
            raise KeystoreError(f"{uri.path} does not match its public key: {exc}") from exc


SIGNER_FOR_URI_SCHEME.setdefault(EncryptedFileSigner.SCHEME, EncryptedFileSigner)


@dataclass(frozen=True)
class KeyEntry:
    """One key of the keystore: which repository role it signs for, its public key, its URI."""

    name: str
    repo: str
    role: str
    public_key: SSlibKey
    uri: str

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    @property
    def scheme(self) -> str:
        return self.public_key.scheme

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": self.repo,
            "role": self.role,
            "public": self.public_key.to_dict() | {"keyid": self.keyid},
            "uri": self.uri,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyEntry:
        try:
            public = dict(data["public"])
            keyid = public.pop("keyid")
            key = SSlibKey.from_dict(keyid, public)
            return cls(data["name"], data["repo"], data["role"], key, data["uri"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"malformed key entry: {exc}") from exc


class Keystore:
    """A folder of key entries: `<name>.json` (public part and URI) and `<name>.pem` (encrypted).

    `passphrase` is a callable so that a prompt happens only when a private key is actually needed.
    """

    def __init__(self, root: Path, passphrase: Callable[[], str]) -> None:
        self.root = root
        self._passphrase = passphrase
        manifest = root / _MANIFEST
        if not manifest.exists():
            raise KeyNotFoundError(f"no keystore at {root} (run `tinyfleet keys init`)")
        self.dev_mode = bool(json.loads(manifest.read_text())["dev"])

    @classmethod
    def create(cls, root: Path, passphrase: Callable[[], str], *, dev_mode: bool) -> Keystore:
        if (root / _MANIFEST).exists():
            raise KeystoreError(f"a keystore already exists at {root}")
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        atomic_write(root / _MANIFEST, json.dumps({"dev": dev_mode, "format": 1}).encode())
        return cls(root, passphrase)

    def _checked_passphrase(self) -> str:
        value = self._passphrase()
        if not value:
            raise PassphraseError("no passphrase given (set TINYFLEET_KEY_PASSPHRASE)")
        if value == DEV_PASSPHRASE and not self.dev_mode:
            raise PassphraseError("the dev passphrase is refused outside dev mode")
        return value

    def generate(self, name: str, repo: str, role: str, scheme: KeyScheme) -> KeyEntry:
        if not _NAME.match(name):
            raise KeystoreError(f"invalid key name {name!r}")
        if (self.root / f"{name}.json").exists():
            raise KeystoreError(f"key {name} exists already")
        signer = generate_signer(scheme)
        private_key = serialization.load_pem_private_key(signer.private_bytes, password=None)
        pem = private_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.BestAvailableEncryption(
                self._checked_passphrase().encode()
            ),
        )
        pem_path = self.root / f"{name}.pem"
        atomic_write(pem_path, pem, mode=0o600)
        entry = KeyEntry(name, repo, role, signer.public_key, f"encfile:{pem_path.name}")
        self._write_entry(entry)
        return entry

    def add_external(
        self, name: str, repo: str, role: str, uri: str, public_pem: bytes
    ) -> KeyEntry:
        """Register a key kept elsewhere (Azure Key Vault, an HSM); only its public part is kept."""
        if not _NAME.match(name):
            raise KeystoreError(f"invalid key name {name!r}")
        scheme = parse.urlparse(uri).scheme
        if scheme not in SIGNER_FOR_URI_SCHEME:
            raise KeystoreError(f"no signer is registered for {scheme}: URIs")
        try:
            public = serialization.load_pem_public_key(public_pem)
            key = SSlibKey.from_crypto(public)
        except (ValueError, TypeError) as exc:
            raise KeystoreError(f"not a usable public key PEM: {exc}") from exc
        entry = KeyEntry(name, repo, role, key, uri)
        self._write_entry(entry)
        return entry

    def _write_entry(self, entry: KeyEntry) -> None:
        atomic_write(
            self.root / f"{entry.name}.json", json.dumps(entry.to_dict(), indent=2).encode()
        )

    def entries(self, *, repo: str | None = None, role: str | None = None) -> list[KeyEntry]:
        found = []
        for path in sorted(self.root.glob("*.json")):
            if path.name == _MANIFEST:
                continue
            entry = KeyEntry.from_dict(json.loads(path.read_text()))
            if (repo is None or entry.repo == repo) and (role is None or entry.role == role):
                found.append(entry)
        return found

    def entry(self, name: str) -> KeyEntry:
        path = self.root / f"{name}.json"
        if not path.exists():
            raise KeyNotFoundError(f"no key named {name}")
        return KeyEntry.from_dict(json.loads(path.read_text()))

    def by_keyid(self, keyid: str) -> KeyEntry:
        for entry in self.entries():
            if entry.keyid == keyid:
                return entry
        raise KeyNotFoundError(f"no key with id {keyid[:12]}… in {self.root}")

    def signer(self, entry: KeyEntry) -> Signer:
        uri = entry.uri
        if uri.startswith(f"{EncryptedFileSigner.SCHEME}:") and not uri.partition(":")[
            2
        ].startswith("/"):
            uri = f"{EncryptedFileSigner.SCHEME}:{self.root.resolve() / uri.partition(':')[2]}"
        try:
            return Signer.from_priv_key_uri(
                uri, entry.public_key, lambda _name: self._checked_passphrase()
            )
        except KeystoreError:
            raise
        except Exception as exc:  # a foreign signer's own failure, translated once here
            raise KeystoreError(f"cannot load signer for key {entry.name}: {exc}") from exc

    def restore(self, name: str) -> None:
        """Undo `retire` (a rotation that failed before it was published)."""
        for suffix in (".json", ".pem"):
            path = self.root / "retired" / f"{name}{suffix}"
            if path.exists():
                os.replace(path, self.root / path.name)

    def retire(self, name: str) -> None:
        """Move a key out of use (after rotation); it stays on disk under retired/ for audit."""
        retired = self.root / "retired"
        retired.mkdir(exist_ok=True)
        for suffix in (".json", ".pem"):
            path = self.root / f"{name}{suffix}"
            if path.exists():
                os.replace(path, retired / path.name)


class KeystoreKeyRing:
    """The repositories' view of a keystore: keys by repository and role, signers loaded once."""

    def __init__(self, keystore: Keystore) -> None:
        self.keystore = keystore
        self._signers: dict[str, Signer] = {}

    def public_keys(self, repo: str, role: str) -> list[Key]:
        return [entry.public_key for entry in self.keystore.entries(repo=repo, role=role)]

    def signers(self, repo: str, role: str) -> list[Signer]:
        found = []
        for entry in self.keystore.entries(repo=repo, role=role):
            if entry.keyid not in self._signers:
                self._signers[entry.keyid] = self.keystore.signer(entry)
            found.append(self._signers[entry.keyid])
        return found


class MemoryKeyRing:
    """Keys generated and held in memory: for simulations and tests, as real as a keystore."""

    def __init__(self) -> None:
        self._signers: dict[tuple[str, str], list[Signer]] = {}

    def add(self, repo: str, role: str, scheme: KeyScheme = KeyScheme.ED25519) -> Signer:
        signer = generate_signer(scheme)
        self._signers.setdefault((repo, role), []).append(signer)
        return signer

    def remove(self, repo: str, role: str, keyid: str) -> Signer:
        signers = self._signers[(repo, role)]
        found = next(s for s in signers if s.public_key.keyid == keyid)
        signers.remove(found)
        return found

    def public_keys(self, repo: str, role: str) -> list[Key]:
        return [s.public_key for s in self._signers.get((repo, role), [])]

    def signers(self, repo: str, role: str) -> list[Signer]:
        return list(self._signers.get((repo, role), []))
