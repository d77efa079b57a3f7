"""One TUF repository published through a store: load the current state, edit, sign, publish.

Layout under `prefix` (consistent snapshots):
    metadata/<N>.root.json   every root version, forever (old devices walk the chain)
    metadata/<N>.<role>.json snapshot, targets and delegated targets
    metadata/timestamp.json  the only unversioned file
    targets/<dir>/<sha256>.<name>

Invariants:
- Versions only go up; each publish of a role bumps its version and re-signs it.
- A new root is signed by a threshold of the previous root's keys and of its own keys.
- Snapshot lists every targets role with version, length and sha256; timestamp lists the snapshot
  the same way. A role is published before the snapshot that names it, and the snapshot before the
  timestamp, so a reader never sees a name that does not exist yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from signing._errors import PublishError, RepositoryTamperedError
from signing.store import CHUNK, RepositoryStore, RootAnchor, StoreNotFound, read_all

T = TypeVar("T", Root, Timestamp, Snapshot, Targets)
TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_COMPACT = JSONSerializer(compact=True)


class KeyRing(Protocol):
    """Where a repository gets the keys for a role: public keys to trust, signers to sign."""

    def public_keys(self, repo: str, role: str) -> list[Key]: ...

    def signers(self, repo: str, role: str) -> list[Signer]: ...


def _verify(delegator: Root | Targets, role: str, md: Metadata[Any], name: str) -> None:
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except (UnsignedMetadataError, ValueError) as exc:
        raise RepositoryTamperedError(
            f"{name} is not signed by a threshold of {role} keys: {exc}"
        ) from exc


def serialize(md: Metadata[Any]) -> bytes:
    return md.to_bytes(_COMPACT)


class PublishedRepository:
    """In-memory view of one published TUF repository, with the operations to change it."""

    def __init__(
        self,
        store: RepositoryStore,
        prefix: str,
        repo: str,
        keyring: KeyRing,
        anchor: RootAnchor | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.repo = repo  # the keyring's name for this repository's keys ("image", "director")
        self.keyring = keyring
        self.anchor = anchor
        self.root: Metadata[Root] | None = None
        self.targets: Metadata[Targets] | None = None
        self.snapshot: Metadata[Snapshot] | None = None
        self.timestamp: Metadata[Timestamp] | None = None
        self.delegated: dict[str, Metadata[Targets]] = {}

    # -- paths and loading -------------------------------------------------------------------

    def meta_path(self, name: str) -> str:
        return f"{self.prefix}/metadata/{name}"

    def target_path(self, target_path: str, sha256: str) -> str:
        directory, _, base = target_path.rpartition("/")
        return f"{self.prefix}/targets/{directory + '/' if directory else ''}{sha256}.{base}"

    def _read(self, name: str, cls: type[T]) -> Metadata[T]:
        md = Metadata[T].from_bytes(read_all(self.store, self.meta_path(name)))
        if not isinstance(md.signed, cls):
            raise PublishError(f"{name} is not {cls.type} metadata")
        return md

    def root_versions(self) -> list[int]:
        names = self.store.list(self.meta_path(""))
        versions = []
        for name in names:
            base = name.rsplit("/", 1)[-1]
            head, _, tail = base.partition(".")
            if tail == "root.json" and head.isdigit():
                versions.append(int(head))
        return sorted(versions)

    def exists(self) -> bool:
        return bool(self.root_versions())

    def load(self, *, trusted_root: Metadata[Root] | None = None) -> None:
        """Load the published state, verifying it like a client before anything re-signs it.

        Trust starts at the anchor (the last root this service published, kept outside the
        store) or at `trusted_root` (a director device folder, under the director's root); the
        root chain, every signature, and every length and hash the parents list must hold.
        Expiry is not checked: re-signing expired metadata is how a repository recovers.
        """
        if trusted_root is None:
            trusted_root = self._verified_root()
        self.root = trusted_root
        try:
            timestamp = self._read("timestamp.json", Timestamp)
        except StoreNotFound:
            return
        root = trusted_root.signed
        _verify(root, "timestamp", timestamp, "timestamp.json")
        snapshot_meta = timestamp.signed.snapshot_meta
        snapshot = self._read_listed("snapshot", snapshot_meta, Snapshot)
        _verify(root, "snapshot", snapshot, "snapshot.json")
        targets_meta = snapshot.signed.meta.get("targets.json")
        if targets_meta is None:
            raise RepositoryTamperedError(f"{self.prefix}: snapshot lists no targets.json")
        targets = self._read_listed("targets", targets_meta, Targets)
        _verify(root, "targets", targets, "targets.json")
        delegated = {}
        for name, meta in snapshot.signed.meta.items():
            role = name.removesuffix(".json")
            if role == Targets.type:
                continue
            md = self._read_listed(role, meta, Targets)
            _verify(targets.signed, role, md, name)
            delegated[role] = md
        self.timestamp, self.snapshot, self.targets, self.delegated = (
            timestamp,
            snapshot,
            targets,
            delegated,
        )

    def load_unverified(self) -> None:
        """Read the store as it is, trusting nothing: for tools that inspect or attack it."""
        versions = self.root_versions()
        if not versions:
            raise PublishError(f"no repository at {self.prefix}")
        self.root = self._read(f"{versions[-1]}.root.json", Root)
        try:
            self.timestamp = self._read("timestamp.json", Timestamp)
        except StoreNotFound:
            return
        self.snapshot = self._read(
            f"{self.timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot
        )
        for name, meta in self.snapshot.signed.meta.items():
            role = name.removesuffix(".json")
            md = self._read(f"{meta.version}.{name}", Targets)
            if role == Targets.type:
                self.targets = md
            else:
                self.delegated[role] = md

    def _read_listed(self, role: str, meta: MetaFile, cls: type[T]) -> Metadata[T]:
        name = f"{meta.version}.{role}.json"
        data = read_all(self.store, self.meta_path(name))
        try:
            meta.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise RepositoryTamperedError(f"{self.prefix}/{name}: {exc}") from exc
        md = Metadata[T].from_bytes(data)
        if not isinstance(md.signed, cls) or md.signed.version != meta.version:
            raise RepositoryTamperedError(f"{self.prefix}/{name} is not what its parent lists")
        return md

    def _verified_root(self) -> Metadata[Root]:
        """Walk the root chain in the store from the anchor; move the anchor forward."""
        if self.anchor is None:
            raise PublishError(f"{self.prefix}: no trust anchor; refusing to sign over the store")
        anchored = self.anchor.load()
        if anchored is None:
            raise PublishError(
                f"{self.prefix}: the trust anchor is missing (was the repository "
                "created from this data directory?)"
            )
        root = Metadata[Root].from_bytes(anchored)
        while True:
            name = f"{root.signed.version + 1}.root.json"
            if not self.store.exists(self.meta_path(name)):
                break
            new = self._read(name, Root)
            _verify(root.signed, "root", new, name)
            _verify(new.signed, "root", new, name)
            if new.signed.version != root.signed.version + 1:
                raise RepositoryTamperedError(
                    f"{self.prefix}/{name} has version {new.signed.version}"
                )
            root = new
        if root.signed.version != Metadata[Root].from_bytes(anchored).signed.version:
            self.anchor.save(serialize(root))
        return root

    # -- signing and publishing --------------------------------------------------------------

    def _sign(self, md: Metadata[Any], role: str, *, extra: Iterable[Signer] = ()) -> None:
        md.signatures.clear()
        seen: set[str] = set()
        for signer in [*self.keyring.signers(self.repo, role), *extra]:
            if signer.public_key.keyid not in seen:
                md.sign(signer, append=True)
                seen.add(signer.public_key.keyid)

    def _put(self, name: str, md: Metadata[Any]) -> bytes:
        data = serialize(md)
        self.store.put(self.meta_path(name), [data])
        return data

    def publish_root(self, root: Root, *, previous_signers: Iterable[Signer] = ()) -> None:
        md = Metadata(root)
        self._sign(md, Root.type, extra=previous_signers)
        data = self._put(f"{root.version}.root.json", md)
        if self.anchor is not None:
            self.anchor.save(data)
        self.root = md

    def publish_targets(
        self, role: str, md: Metadata[Targets], expires: datetime, *, bump: bool = True
    ) -> None:
        if bump:
            md.signed.version += 1
        md.signed.expires = expires
        self._sign(md, role)
        self._put(f"{md.signed.version}.{role}.json", md)
        if role == Targets.type:
            self.targets = md
        else:
            self.delegated[role] = md

    def publish_snapshot(self, expires: datetime) -> None:
        meta: dict[str, MetaFile] = {}
        roles = {Targets.type: self.targets, **self.delegated}
        for role, md in roles.items():
            if md is None:
                raise PublishError("targets must be published before the snapshot")
            meta[f"{role}.json"] = _metafile(md)
        version = self.snapshot.signed.version + 1 if self.snapshot else 1
        md_snapshot = Metadata(Snapshot(version=version, expires=expires, meta=meta))
        self._sign(md_snapshot, Snapshot.type)
        self._put(f"{version}.snapshot.json", md_snapshot)
        self.snapshot = md_snapshot

    def publish_timestamp(self, expires: datetime) -> None:
        if self.snapshot is None:
            raise PublishError("the snapshot must be published before the timestamp")
        version = self.timestamp.signed.version + 1 if self.timestamp else 1
        md = Metadata(
            Timestamp(version=version, expires=expires, snapshot_meta=_metafile(self.snapshot))
        )
        self._sign(md, Timestamp.type)
        self._put("timestamp.json", md)
        self.timestamp = md

    def publish_target_file(self, target_path: str, source: Path) -> tuple[int, str]:
        """Hash the file (one pass), then store it under its consistent-snapshot name (another)."""
        digest = hashlib.sha256()
        length = 0
        with open(source, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                length += len(chunk)
        sha = digest.hexdigest()
        self.store.put(self.target_path(target_path, sha), _file_chunks(source))
        return length, sha

    def publish_target_bytes_inline(self, target_path: str, data: bytes) -> tuple[int, str]:
        sha = hashlib.sha256(data).hexdigest()
        self.store.put(self.target_path(target_path, sha), [data])
        return len(data), sha

    def root_signers(self) -> list[Signer]:
        return self.keyring.signers(self.repo, Root.type)


def _metafile(md: Metadata[Any]) -> MetaFile:
    data = serialize(md)
    return MetaFile(
        version=md.signed.version,
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).hexdigest()},
    )


def new_root(keyring: KeyRing, repo: str, thresholds: dict[str, int], expires: datetime) -> Root:
    root = Root(expires=expires, consistent_snapshot=True)
    for role in TOP_ROLES:
        keys = keyring.public_keys(repo, role)
        if len(keys) < thresholds.get(role, 1):
            raise PublishError(
                f"{repo} {role} needs {thresholds.get(role, 1)} keys, has {len(keys)}"
            )
        for key in keys:
            root.add_key(key, role)
        root.roles[role].threshold = thresholds.get(role, 1)
    return root


def expiry(now: datetime, lifetime: timedelta) -> datetime:
    return (now + lifetime).replace(microsecond=0)


def _file_chunks(source: Path) -> Iterator[bytes]:
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
