"""DialGate's exceptions.

A *refusal* is not an exception: a blocked dial is a `policy.model.Decision` value.
Exceptions mean "could not do what was asked" and each maps to one HTTP answer, an RFC
9457 problem document with a stable `type` (``https://dialgate.dev/problems/<id>``)::

    DialGateError
    ├── ConfigError                  bad config.toml / environment (start-up only)
    ├── StoreUnavailable             the case store failed; the gate fails CLOSED
    ├── StoreRefusedValue       400  a value the store cannot hold (out of range); the
    │                                edges bound inputs first, this is the backstop
    ├── RequestDecided               another unit stored the request identity first: the
    │                                use case rolls back and answers with its replay
    └── ApiError                     has .status, .problem_id, .title, .details
        ├── BadRequest          400  bad-request: malformed JSON / CSV / parameter
        │   ├── InvalidImport   400  invalid-import: a file with bad rows, refused whole
        │   └── AmbiguousCase   400  ambiguous-case: case_id exists for two creditors
        ├── Unauthenticated     401  unauthenticated: missing / unknown bearer token
        ├── Forbidden           403  forbidden: the role may not do this
        ├── DialBlocked         403  dial-blocked: carries the Decision (not an error
        │                            of the caller; the gate said no)
        ├── NotFound            404  not-found
        │   ├── NoSuchCase      404  no-such-case (also: another creditor's case)
        │   ├── NoSuchAttempt   404  no-such-attempt
        │   └── NoSuchContact   404  no-such-contact
        ├── Conflict            409  conflict
        │   └── OutcomeConflict 409  outcome-conflict: a different outcome was logged
        ├── BodyTooLarge        413  body-too-large: over the route's limit, not read
        ├── PayloadTooLarge     413  payload-too-large: a file over an import limit (rows, bytes)
        ├── UnprocessableEntity 422  validation-failed: well-formed but invalid fields
        │   └── RequestReused   422  idempotency-key-reused: a request identity reused
        │                            for a different request
        └── TooManyRequests     429  too-many-requests: too many refused tokens from
                                     one client; carries Retry-After
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://dialgate.dev/problems/"


class DialGateError(Exception):
    """Base of everything DialGate raises on purpose."""


class ConfigError(DialGateError):
    """The configuration is wrong; the message names the key (`store.url: …`)."""


class StoreUnavailable(DialGateError):
    """The case store could not answer (connection, lock timeout, I/O)."""


class StoreRefusedValue(DialGateError):
    """A statement failed on a value it carried (not on the store): the request's fault."""


class RequestDecided(DialGateError):
    """A request identity was stored by another unit after this one gathered."""


class ApiError(DialGateError):
    status: int = 500
    problem_id: str = "internal"
    title: str = "Internal error"
    headers: dict[str, str] = {}  # extra response headers (never mutated: replaced)

    def __init__(self, detail: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.details = details or {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.problem_id

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(ApiError):
    status, problem_id, title = 400, "bad-request", "Bad request"


class InvalidImport(BadRequest):
    problem_id, title = "invalid-import", "Import refused: invalid rows"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(
            f"{len(errors)} error(s); nothing was imported", details={"errors": errors}
        )
        self.errors = errors


class AmbiguousCase(BadRequest):
    problem_id, title = "ambiguous-case", "Case id exists for more than one creditor"


class Unauthenticated(ApiError):
    status, problem_id, title = 401, "unauthenticated", "Authentication required"


class Forbidden(ApiError):
    status, problem_id, title = 403, "forbidden", "Not allowed for this role"


class DialBlocked(ApiError):
    status, problem_id, title = 403, "dial-blocked", "Dial blocked by policy"

    def __init__(self, decision: dict[str, Any], decision_id: str) -> None:
        super().__init__(decision.get("reason", "blocked"), details={})
        self.decision = decision
        self.decision_id = decision_id

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body = super().to_problem(instance)
        body["decision_id"] = self.decision_id
        body["decision"] = self.decision
        return body


class NotFound(ApiError):
    status, problem_id, title = 404, "not-found", "Not found"


class NoSuchCase(NotFound):
    problem_id, title = "no-such-case", "No such case"


class NoSuchAttempt(NotFound):
    problem_id, title = "no-such-attempt", "No such attempt"


class NoSuchContact(NotFound):
    problem_id, title = "no-such-contact", "No such contact"


class Conflict(ApiError):
    status, problem_id, title = 409, "conflict", "Conflict"


class OutcomeConflict(Conflict):
    problem_id, title = "outcome-conflict", "A different outcome was already logged"


class PayloadTooLarge(ApiError):
    status, problem_id, title = 413, "payload-too-large", "Payload too large"


class UnprocessableEntity(ApiError):
    status, problem_id, title = 422, "validation-failed", "Validation failed"


class RequestReused(UnprocessableEntity):
    problem_id, title = "idempotency-key-reused", "Idempotency key reused for a different request"


class BodyTooLarge(ApiError):
    status, problem_id, title = 413, "body-too-large", "Request body too large"

    def __init__(self, limit: int, method: str, path: str) -> None:
        super().__init__(
            f"请求体超过上限 {limit} 字节 / the body exceeds the {limit}-byte limit of {method} {path}",
            details={"limit_bytes": limit},
        )


class TooManyRequests(ApiError):
    status, problem_id, title = 429, "too-many-requests", "Too many refused requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail, details={"retry_after_s": retry_after_s})
        self.headers = {"Retry-After": str(retry_after_s)}
