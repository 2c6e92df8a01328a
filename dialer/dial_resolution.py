"""Which case a dial or an INVITE means: one pure rule for every channel.

In this order:

1. a named case id: the one case with that id the caller may see; when two creditors
   share the id, the one the pending authorisation belongs to;
2. no case id: the case of the pending authorisation (found by attempt id, else the
   agent's oldest live one for the number), and only that one;
3. else the agent's active cases that hold the number.

Exactly one case answers; none is `NoSuchCase`, several `AmbiguousCase`. The ledger
reads the candidates (`DialInputs.cases`); nothing here reads a store or a clock.
"""

from __future__ import annotations

from typing import Sequence

from dialer.errors import AmbiguousCase, NoSuchCase
from dialer.model import AttemptRecord, CaseRecord
from dialer.ports import DialInputs, DialQuery


def pick(case_id: str, cases: Sequence[CaseRecord], pending: AttemptRecord | None) -> CaseRecord | None:
    """The one case among the candidates, or None (none, or several)."""
    if len(cases) == 1:
        return cases[0]
    if case_id and pending is not None and pending.case_id == case_id:
        for c in cases:
            if c.creditor == pending.creditor:
                return c
    return None


def resolve_case(query: DialQuery, inputs: DialInputs) -> CaseRecord:
    """The case `query` means, or the 404/409-type refusal naming why not."""
    if inputs.case is not None:
        return inputs.case
    found = pick(query.case_id, inputs.cases, inputs.pending)
    if found is not None:
        return found
    return refuse(query.case_id, query.agent_id, inputs.cases)


def resolve_named(case_id: str, cases: Sequence[CaseRecord]) -> CaseRecord:
    """The case a request naming `case_id` means, from the cases with that id it may see."""
    if len(cases) == 1:
        return cases[0]
    return refuse(case_id, "", cases)


def refuse(case_id: str, agent_id: str, cases: Sequence[CaseRecord]) -> CaseRecord:
    if case_id:
        if not cases:
            # Another creditor's case is indistinguishable from a missing one (404).
            raise NoSuchCase(f"no case {case_id!r}", details={"case_id": case_id})
        raise AmbiguousCase(
            f"case {case_id!r} exists for several creditors; say which",
            details={"case_id": case_id, "creditors": sorted(c.creditor for c in cases)},
        )
    if not cases:
        raise NoSuchCase(f"no case of agent {agent_id!r} holds this number", details={"case_id": ""})
    raise AmbiguousCase(
        f"several active cases of agent {agent_id!r} hold this number",
        details={"case_id": "", "creditors": sorted(c.creditor for c in cases)},
    )


def consumable(query: DialQuery, case: CaseRecord, pending: AttemptRecord | None) -> bool:
    """Whether `pending` is an authorisation this dial consumes instead of deciding again:
    still authorised and valid, for this case, number and agent."""
    return (
        query.consume
        and pending is not None
        and pending.state == "authorised"
        and pending.valid_until >= query.at
        and pending.case_pk == case.pk
        and pending.number == query.number
        and pending.agent_id == query.agent_id
    )
