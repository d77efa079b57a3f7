"""Releases: drafts, streamed uploads with admission checks, signing, publication to the blobs.

```python
releases = ReleaseService(storage, draft_blobs, trust, clock)  # trust.store = repository_store(..)
releases.create_draft("kws-2026-11", ["mt3620"], counter=3, actor="alice")
releases.add_artifact("kws-2026-11", "m4-0", chunks, sidecar, actor="alice")  # AdmissionError
releases.publish("kws-2026-11", actor="alice")  # signed, published, immutable
urls = publication_urls(repo_blobs, timedelta(hours=24))  # for EngineConfig and the twin
```

Errors (see `_errors.py`):

```
ReleaseError
├── AdmissionError (.checks)
├── ReleaseInvalidError
├── ReleaseNotFoundError
├── ReleaseConflictError
├── ReleaseTrustError
└── ReleaseUnavailableError
```
"""

from __future__ import annotations

from service.releases._admission import admit
from service.releases._budgets import BUDGETS, HardwareBudget, budget_for
from service.releases._errors import (
    AdmissionCheck,
    AdmissionError,
    ReleaseConflictError,
    ReleaseError,
    ReleaseInvalidError,
    ReleaseNotFoundError,
    ReleaseTrustError,
    ReleaseUnavailableError,
)
from service.releases._publication import (
    REPOSITORY_PREFIX,
    PublicationUrls,
    publication_urls,
    repository_store,
)
from service.releases._service import MAX_UPLOAD_BYTES, ReleaseService
from service.releases._views import MemberView, ReleasePage, ReleaseView

__all__ = [
    "BUDGETS",
    "MAX_UPLOAD_BYTES",
    "REPOSITORY_PREFIX",
    "AdmissionCheck",
    "AdmissionError",
    "HardwareBudget",
    "MemberView",
    "PublicationUrls",
    "ReleaseConflictError",
    "ReleaseError",
    "ReleaseInvalidError",
    "ReleaseNotFoundError",
    "ReleasePage",
    "ReleaseService",
    "ReleaseTrustError",
    "ReleaseUnavailableError",
    "ReleaseView",
    "admit",
    "budget_for",
    "publication_urls",
    "repository_store",
]
