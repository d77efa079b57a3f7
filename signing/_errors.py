"""Exceptions of the signing package, split by who must act.

SigningError
├── KeystoreError                 the operator: keys, passphrases, key URIs
│   ├── PassphraseError           missing, default outside dev mode, or wrong
│   └── KeyNotFoundError
├── PublishError                  the operator: what they asked the repositories to publish
│   ├── ArtifactError             an artifact or its custom fields are invalid
│   └── ReleaseExistsError        releases are immutable
├── FetchError                    nobody yet: transport failed, try again later
└── UpdateRejected                the device refuses an update (an attack or a mismatch);
    │                             `reason` is the short code the device reports
    ├── MetadataRejected          the TUF rules
    │   ├── SignatureError        unsigned, below threshold, revoked or unknown key
    │   ├── VersionError          rollback, or a version other than the parent lists
    │   ├── ExpiredError          freeze: an expired role
    │   ├── MetadataMismatchError length or hash differs from the parent's (mix-and-match)
    │   └── OversizeError         endless data: metadata over its cap
    ├── BindingRejected           the Uptane checks between director, image repo and device
    │   ├── WrongDeviceError      director metadata of another device
    │   ├── WrongHardwareError
    │   ├── WrongCoreError
    │   ├── UnknownTargetError    director names what the image repository does not sign
    │   ├── ImageMismatchError    director and image repository disagree on a target
    │   ├── ReleaseRollbackError  release counter lower than the installed one
    │   ├── MixedBundleError      targets that no signed release puts together
    │   └── MalformedDirectorError
    ├── IncompleteReleaseError    a release committed before every target verified
    └── TargetRejected            the target bytes themselves
        ├── TargetTooLongError    endless data: more bytes than signed
        ├── TargetTruncatedError
        └── TargetHashError
"""

from __future__ import annotations

from typing import ClassVar


class SigningError(Exception):
    """Root of every error the signing package raises."""


class KeystoreError(SigningError):
    pass


class PassphraseError(KeystoreError):
    pass


class KeyNotFoundError(KeystoreError):
    pass


class PublishError(SigningError):
    pass


class ArtifactError(PublishError):
    pass


class ReleaseExistsError(PublishError):
    pass


class RepositoryTamperedError(PublishError):
    """What is in the store fails verification from the service's own trust anchor."""


class FetchError(SigningError):
    """Metadata or a target could not be fetched; the device keeps its state and retries later."""


class UpdateRejected(SigningError):
    """The device refuses an update. Its trusted state is unchanged when this is raised."""

    reason: ClassVar[str] = "rejected"


class MetadataRejected(UpdateRejected):
    reason = "metadata"


class SignatureError(MetadataRejected):
    reason = "signature"


class VersionError(MetadataRejected):
    reason = "version"


class ExpiredError(MetadataRejected):
    reason = "expired"


class MetadataMismatchError(MetadataRejected):
    reason = "metadata-mismatch"


class OversizeError(MetadataRejected):
    reason = "oversize"


class BindingRejected(UpdateRejected):
    reason = "binding"


class WrongDeviceError(BindingRejected):
    reason = "wrong-device"


class WrongHardwareError(BindingRejected):
    reason = "wrong-hardware"


class WrongCoreError(BindingRejected):
    reason = "wrong-core"


class UnknownTargetError(BindingRejected):
    reason = "unknown-target"


class ImageMismatchError(BindingRejected):
    reason = "image-mismatch"


class ReleaseRollbackError(BindingRejected):
    reason = "release-rollback"


class MixedBundleError(BindingRejected):
    reason = "mixed-bundle"


class MalformedDirectorError(BindingRejected):
    reason = "malformed-director"


class IncompleteReleaseError(UpdateRejected):
    reason = "incomplete-release"


class TargetRejected(UpdateRejected):
    reason = "target"


class TargetTooLongError(TargetRejected):
    reason = "target-too-long"


class TargetTruncatedError(TargetRejected):
    reason = "target-truncated"


class TargetHashError(TargetRejected):
    reason = "target-hash"
