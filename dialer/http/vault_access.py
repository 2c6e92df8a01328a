"""What the recordings routes share: the running vault, the caller as the vault's actor,
vault errors as problem documents, and a recording as JSON.

The routes themselves are in `recording_uploads` (upload, link), `recordings` (lookup,
audio, access log) and `recording_retention` (legal holds, purges, the destruction
register).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

from dialer.errors import AmbiguousCase, ApiError, NoSuchAttempt, NoSuchCase
from dialer.http.inputs import parse_when
from dialer.masking import mask_text
from dialer.model import Principal
from dialer.services import Services
from recordings.errors import VaultError
from recordings.model import ADMIN_ROLES, READ_ROLES, Actor, Link, Recording
from recordings.vault import Vault

META_ROLES = READ_ROLES | ADMIN_ROLES


class VaultProblem(ApiError):
    """A vault error as a problem document (status and type from the vault's tree)."""

    def __init__(self, exc: VaultError) -> None:
        details = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        super().__init__(exc.message, details=details)
        self.status = exc.status
        self.problem_id = exc.error_id
        self.title = type(exc).__name__


def vault_of(svc: Services) -> Vault:
    if svc.vault is None:
        raise ApiError("the recordings vault is not running (extension recordings-vault)")
    return svc.vault


def actor_of(who: Principal) -> Actor:
    return Actor(user=who.name, role=who.role, creditors=who.scope())


@asynccontextmanager
async def mapped() -> AsyncIterator[None]:
    try:
        yield
    except VaultError as exc:
        raise VaultProblem(exc) from exc


def recording_json(r: Recording, held_by_case: bool = False) -> dict[str, Any]:
    return {
        "recording_id": r.recording_id,
        "source": {"kind": r.source_kind, "id": r.source_id},
        "creditor": r.creditor,
        "case_id": r.case_id,
        "agent": r.agent,
        "number": r.number_masked,
        "started_at": r.started_at.isoformat(),
        "duration_s": r.duration_s,
        "media_type": r.media_type,
        "size": r.size,
        "sha256": r.sha256,
        "key_id": r.kek_id,
        "retain_until": r.retain_until.isoformat(),
        "state": r.state,
        # Numbers are masked here for every role, in free text as in the number field.
        "legal_hold": (
            {"reason": mask_text(r.hold.reason), "by": r.hold.by, "at": r.hold.at.isoformat()} if r.hold else None
        ),
        "held_by_case": held_by_case,
        "created_at": r.created_at.isoformat(),
        "destroyed_at": r.destroyed_at.isoformat() if r.destroyed_at else None,
    }


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (date, datetime)):
        return obj.isoformat()
    return obj


def when(value: str | None, name: str) -> datetime | None:
    return parse_when(value, name)


async def link_for_attempt(svc: Services, who: Principal, attempt_id: str) -> tuple[Link, datetime | None]:
    """The case, agent and number of an attempt; an unknown attempt gives no link."""
    async with svc.store.read() as uow:
        att = await uow.attempts.get(attempt_id)
    if att is None:
        return Link(), None
    if not who.can_see(att.creditor):
        raise NoSuchAttempt(f"no attempt {attempt_id}")
    return Link(creditor=att.creditor, case_id=att.case_id, agent=att.agent_id, number=att.number), att.at


async def case_creditor(svc: Services, who: Principal, case_id: str, creditor: str | None) -> str:
    async with svc.store.read() as uow:
        found = await uow.cases.find(case_id, who.scope())
    if creditor is not None:
        found = [c for c in found if c.creditor == creditor]
    if not found:
        raise NoSuchCase(f"no case {case_id}")
    if len(found) > 1:
        raise AmbiguousCase(
            f"case {case_id} exists for several creditors; add ?creditor=",
            details={"creditors": sorted(c.creditor for c in found)},
        )
    return found[0].creditor
