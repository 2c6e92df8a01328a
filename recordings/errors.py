"""Errors of the recordings vault.

Every error the vault raises derives from `VaultError`; each carries a stable kebab
`error_id` (the HTTP layer maps it to a problem+json `type` and a status) and a
bilingual message (Chinese / English) that names what is wrong::

    VaultError
    ├── InvalidRequest             bad input: missing reason, bad range, bad id ...   (400)
    │   ├── ReasonRequired         an audio read without a reason (借阅原因)          (400)
    │   ├── UnsupportedMediaType   not audio/wav|mpeg|ogg, or bytes not matching     (415)
    │   ├── RecordingTooLarge      over the configured size                          (413)
    │   ├── RangeNotSatisfiable    byte range outside the recording                  (416)
    │   └── ConfigError            a retention/creditor value that cannot be used     (400)
    ├── Forbidden                  the actor's role may not do this                    (403)
    │   └── DualControlViolation   the approver is the requester                       (403)
    ├── NotFound                                                                     (404)
    │   ├── NoSuchRecording        unknown id, or another creditor's recording
    │   ├── NoSuchPurge
    │   └── NoSuchKey              no key-encryption key for a creditor / key id
    ├── Conflict                                                                     (409)
    │   ├── DuplicateSource        a recording with this source id exists (repository)
    │   ├── PurgeNotPending        approving a purge twice (or at once: one wins)
    │   ├── AlreadyDestroyed       destroying a recording another purge destroyed
    │   └── BlobLocked             the blob store's retention lock or legal hold
    │                              refuses a deletion (S3 Object Lock)
    ├── Unreadable                 audio cannot be produced                          (410)
    │   ├── RecordingDestroyed     purged: data key destroyed, blob deleted
    │   └── KeyDestroyed           the creditor's key was destroyed (commission ended)
    ├── KeyUnavailable             no key to seal a creditor's recordings with       (503)
    ├── SealingStalled             encrypting/writing an upload made no progress     (503)
    └── IntegrityError             the blob does not authenticate: tampered,
                                   truncated, reordered, wrong key, or the SHA-256 of
                                   the plaintext differs from the one stored at ingest (500)

Adapters translate their own library errors into these at their boundary
(``raise NoSuchKey(...) from exc``); nothing outside the vault sees `cryptography`'s
``InvalidTag`` or ``OSError`` from the blob store.
"""

from __future__ import annotations

from typing import Any


class VaultError(Exception):
    error_id = "vault-error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(VaultError):
    error_id = "invalid-request"
    status = 400


class ReasonRequired(InvalidRequest):
    error_id = "reason-required"


class UnsupportedMediaType(InvalidRequest):
    error_id = "unsupported-media-type"
    status = 415


class RecordingTooLarge(InvalidRequest):
    error_id = "recording-too-large"
    status = 413


class RangeNotSatisfiable(InvalidRequest):
    error_id = "range-not-satisfiable"
    status = 416


class ConfigError(InvalidRequest):
    error_id = "config-error"


class Forbidden(VaultError):
    error_id = "forbidden"
    status = 403


class DualControlViolation(Forbidden):
    error_id = "dual-control-violation"


class NotFound(VaultError):
    error_id = "not-found"
    status = 404


class NoSuchRecording(NotFound):
    error_id = "no-such-recording"


class NoSuchPurge(NotFound):
    error_id = "no-such-purge"


class NoSuchKey(NotFound):
    error_id = "no-such-key"


class Conflict(VaultError):
    error_id = "conflict"
    status = 409


class DuplicateSource(Conflict):
    error_id = "duplicate-source"


class PurgeNotPending(Conflict):
    error_id = "purge-not-pending"


class AlreadyDestroyed(Conflict):
    """The recording was destroyed meanwhile (by another purge): it gets no second
    register entry."""

    error_id = "already-destroyed"


class RecordingHeld(Conflict):
    """The recording (or its case) came under legal hold after the purge checked it:
    it is skipped, not destroyed."""

    error_id = "recording-held"


class BlobLocked(Conflict):
    error_id = "blob-locked"


class Unreadable(VaultError):
    error_id = "recording-unreadable"
    status = 410


class RecordingDestroyed(Unreadable):
    error_id = "recording-destroyed"


class KeyDestroyed(Unreadable):
    error_id = "key-destroyed"


class KeyUnavailable(VaultError):
    error_id = "key-unavailable"
    status = 503


class SealingStalled(VaultError):
    error_id = "sealing-stalled"
    status = 503


class IntegrityError(VaultError):
    error_id = "integrity-error"
    status = 500
