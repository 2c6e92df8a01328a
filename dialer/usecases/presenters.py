"""What the use cases answer and publish, as JSON values: cases, outcomes, decision
events, and the decision's inputs with every number masked."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Mapping

import orjson

from dialer.masking import mask_text
from dialer.model import FOLLOW_UP_STATUSES, AttemptRecord, CaseRecord, DecisionRecord, OutcomeRecord
from policy import Check, Decision
from policy.model import jsonable

def _same(value: Any) -> Any:
    return value


def case_json(case: CaseRecord, show: Any, text: Any = _same) -> dict[str, Any]:
    """`show` for the contacts' numbers, `text` for every free-text field: identity for
    roles with full-number rights, else the masks of dialer/masking.py."""
    return {
        "case_id": case.case_id,
        "creditor": case.creditor,
        "debtor_name": text(case.debtor_name),
        "status": case.status,
        "commission_start": case.commission_start.isoformat() if case.commission_start else None,
        "commission_end": case.commission_end.isoformat() if case.commission_end else None,
        "assigned_agent": case.assigned_agent,
        "flags": sorted(case.flags),
        "amount_due": case.amount_due,
        "overdue_days": case.overdue_days,
        "contacts": [
            {
                "number": show(c.number),
                "relation": c.relation,
                "name": text(c.name),
                "tz": c.tz,
                "status": c.status,
                "do_not_call": c.do_not_call,
                "source": text(c.source),
            }
            for c in case.contacts
        ],
        "next_action": {
            "status": case.follow_up_status,
            "status_zh": FOLLOW_UP_STATUSES.get(case.follow_up_status, case.follow_up_status),
            "date": case.next_action_date.isoformat() if case.next_action_date else None,
        },
    }


def outcome_json(o: OutcomeRecord, text: Any = _same) -> dict[str, Any]:
    return {
        "attempt_id": o.attempt_id,
        "disposition": o.disposition,
        "result": o.result,
        "note": text(o.note),
        "callback_at": o.callback_at.astimezone(timezone.utc).isoformat() if o.callback_at else None,
        "promise": {"amount": o.promise_amount, "date": o.promise_date.isoformat()} if o.promise_date else None,
        "logged_by": o.logged_by,
        "logged_at": o.logged_at.astimezone(timezone.utc).isoformat(),
    }


def _decision_event(record: DecisionRecord, attempt: AttemptRecord | None) -> dict[str, Any]:
    return {
        "decision_id": record.decision_id,
        "attempt_id": attempt.attempt_id if attempt else None,
        "state": attempt.state if attempt else None,
        "valid_until": attempt.valid_until.isoformat() if attempt else None,
        "agent_id": record.agent_id,
        "channel": record.channel,
        "number": record.number_masked,
        "rule_id": record.rule_id,
        "next_allowed_at": record.next_allowed_at.isoformat() if record.next_allowed_at else None,
        "policy_version": record.policy_version,
    }


def _decision_from_record(r: DecisionRecord) -> Decision:
    return Decision(
        allowed=r.allowed,
        rule_id=r.rule_id,
        reason=r.reason,
        reason_zh=r.reason_zh,
        next_allowed_at=r.next_allowed_at,
        checks=tuple(Check(c["rule_id"], c["passed"], c["detail"], c.get("detail_zh", "")) for c in r.checks),
        policy_version=r.policy_version,
        evaluated_at=r.evaluated_at,
        inputs_used=r.inputs_used,
    )


_JSON_LEAVES = frozenset({int, float, bool, type(None)})


def _masked_json(value: Any) -> Any:
    """`value` as JSON values (what `Decision.to_dict` does to `inputs_used`, without
    building the rest of the dict) with numbers masked in every string, in one walk
    (`mask_deep` over `to_dict`'s output, fused), for inputs that may hold a number."""
    kind = type(value)
    if kind is str:
        return mask_text(value)
    if kind in _JSON_LEAVES:  # most leaves: no isinstance against typing's ABCs (slow)
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for k, v in value.items():  # leaves inline: one call per nested value only
            vk = type(v)
            if vk is str:
                out[k if type(k) is str else str(k)] = mask_text(v)
            elif vk in _JSON_LEAVES:
                out[k if type(k) is str else str(k)] = v
            else:
                out[k if type(k) is str else str(k)] = _masked_json(v)
        return out
    if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
        return [_masked_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return mask_text(value.isoformat())
    return value


# JSON types only: datetimes, dataclasses and subclasses of str/int/dict/list make
# orjson refuse, and those values take the walks (`_masked_json`, `policy.jsonable`).
_PLAIN = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
# Every byte of the JSON text to its shape: digits "0", space and dash "-", the rest ".".
_SHAPE = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x2D if b in (0x20, 0x2D) else 0x2E for b in range(256)
)


def _plain_text(value: Any) -> bytes | None:
    """`value`'s JSON text when it holds JSON types only (string keys), else None. Read
    back, the text is the value the walks would build, built in C instead of one
    Python call per nested value."""
    try:
        return orjson.dumps(value, option=_PLAIN)
    except TypeError:
        return None


def plain_json(value: Any) -> Any:
    """`policy.jsonable(value)`, for `Decision.to_dict`: the same values (those orjson
    writes natively, such as enums, come back as what the answer's encoder writes)."""
    data = _plain_text(value)
    return jsonable(value) if data is None else orjson.loads(data)


def _masked_inputs(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`_masked_json(inputs)`. Most decisions' inputs hold no number to mask: then their
    JSON text, read back, is the answer, and the walk (a dozen masked strings, the
    costliest step of recording a decision) is skipped. Whatever `_NUMBER_RE` could
    match needs 7 digits in a row or two groups of 4 split by a space or dash, which
    JSON writes as they are; an ASCII text (no other script's digits) with neither
    shape has nothing to mask."""
    data = _plain_text(inputs or {})
    if data is not None and data.isascii():
        shape = data.translate(_SHAPE)
        if b"0000000" not in shape and b"0000-0000" not in shape:
            return orjson.loads(data)  # type: ignore[no-any-return]
    return _masked_json(inputs or {})  # type: ignore[no-any-return]
