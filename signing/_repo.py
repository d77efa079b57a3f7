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
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from signing._errors import PublishError
from signing.store import CHUNK, RepositoryStore, StoreNotFound, read_all

T = TypeVar("T", Root, Timestamp, Snapshot, Targets)
TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_COMPACT = JSONSerializer(compact=True)


class KeyRing(Protocol):
    """Where a repository gets the keys for a role: public keys to trust, signers to sign."""

    def public_keys(self, repo: str, role: str) -> list[Key]: ...

    def signers(self, repo: str, role: str) -> list[Signer]: ...


def serialize(md: Metadata[Any]) -> bytes:
    return md.to_bytes(_COMPACT)


class PublishedRepository:
    """In-memory view of one published TUF repository, with the operations to change it."""

    def __init__(self, store: RepositoryStore, prefix: str, repo: str, keyring: KeyRing) -> None:
        self.store = store
        self.prefix = prefix
        self.repo = repo  # the keyring's name for this repository's keys ("image", "director")
        self.keyring = keyring
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

    def load(self) -> None:
        versions = self.root_versions()
        if not versions:
            raise PublishError(f"no repository at {self.prefix} (run `tinyfleet repo init`)")
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
        self._put(f"{root.version}.root.json", md)
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
