"""Reuses the Azurite fixture of the blob contract suite (session scoped, started on demand)."""

from __future__ import annotations

from tests.contract.blobs.conftest import azurite

__all__ = ["azurite"]
