"""Which case a dial or an INVITE means (`dialer.dial_resolution`), as a table."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from dialer.dial_resolution import consumable, pick, resolve_case
from dialer.errors import AmbiguousCase, NoSuchCase
from dialer.model import AttemptRecord, CaseRecord, ContactRecord
from dialer.ports import DialInputs, DialQuery

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
NUMBER = "+8613800000021"


def case(creditor: str, case_id: str, pk: int) -> CaseRecord:
    return CaseRecord(
        pk=pk, creditor=creditor, case_id=case_id, debtor_name="x", status="active",
        commission_start=date(2026, 11, 1), commission_end=date(2026, 12, 31), assigned_agent="col-r",
        flags=frozenset(), amount_due=None, overdue_days=None, follow_up_status="new", next_action_date=None,
        event_seq=0, contacts=(ContactRecord(NUMBER, "self"),),
    )


def pending(creditor: str, case_id: str, pk: int, *, state: str = "authorised", age_s: int = 10,
            number: str = NUMBER, agent: str = "col-r") -> AttemptRecord:
    at = NOW - timedelta(seconds=age_s)
    return AttemptRecord(attempt_id="a-1", case_pk=pk, creditor=creditor, case_id=case_id, number=number,
                         relation="self", agent_id=agent, channel="api", state=state, at=at,
                         valid_until=at + timedelta(seconds=120), decision_id="d-1")


A1, B1, A2 = case("bank-a", "C-1", 1), case("bank-b", "C-1", 2), case("bank-a", "C-2", 3)

# (what the dial names, the candidates the ledger found, the pending authorisation,
#  the case meant or the refusal)
TABLE = [
    ("C-1", [A1], None, A1),
    ("C-1", [], None, NoSuchCase),
    ("C-1", [A1, B1], None, AmbiguousCase),
    ("C-1", [A1, B1], pending("bank-b", "C-1", 2), B1),  # the authorisation says which creditor
    ("C-1", [A1, B1], pending("bank-a", "C-2", 3), AmbiguousCase),  # another case's: no help
    ("", [A2], pending("bank-a", "C-2", 3), A2),
    ("", [A1], None, A1),
    ("", [A1, A2], None, AmbiguousCase),
    ("", [], None, NoSuchCase),
]


@pytest.mark.parametrize(("case_id", "cases", "found", "meant"), TABLE)
def test_the_case_a_dial_means(case_id: str, cases: list[CaseRecord], found: AttemptRecord | None, meant: object) -> None:
    query = DialQuery(number=NUMBER, agent_id="col-r", at=NOW, since=NOW - timedelta(days=30), case_id=case_id)
    inputs = DialInputs(tuple(cases), pick(case_id, cases, found), found, None, None, (), ())
    if isinstance(meant, CaseRecord):
        assert resolve_case(query, inputs) == meant
    else:
        with pytest.raises(meant):  # type: ignore[call-overload]
            resolve_case(query, inputs)


def test_a_refusal_names_the_case_id_or_says_the_number_matched_no_case_of_the_agent() -> None:
    named = DialQuery(number=NUMBER, agent_id="col-r", at=NOW, since=NOW, case_id="C-9")
    unnamed = DialQuery(number=NUMBER, agent_id="col-r", at=NOW, since=NOW)
    empty = DialInputs((), None, None, None, None, (), ())
    with pytest.raises(NoSuchCase) as by_id:
        resolve_case(named, empty)
    with pytest.raises(NoSuchCase) as by_number:
        resolve_case(unnamed, empty)
    assert by_id.value.details == {"case_id": "C-9"} and by_number.value.details == {"case_id": ""}
    with pytest.raises(AmbiguousCase) as several:
        resolve_case(unnamed, DialInputs((A1, B1), None, None, None, None, (), ()))
    assert several.value.details["creditors"] == ["bank-a", "bank-b"]


CONSUME = [
    (pending("bank-a", "C-1", 1), True),
    (pending("bank-a", "C-1", 1, state="dialing"), False),
    (pending("bank-a", "C-1", 1, age_s=600), False),  # past its validity
    (pending("bank-b", "C-1", 2), False),  # another case
    (pending("bank-a", "C-1", 1, number="+8613800000099"), False),
    (pending("bank-a", "C-1", 1, agent="col-x"), False),
    (None, False),
]


@pytest.mark.parametrize(("found", "consumed"), CONSUME)
def test_an_authorisation_is_consumed_only_while_live_and_for_this_case_number_and_agent(
    found: AttemptRecord | None, consumed: bool
) -> None:
    query = DialQuery(number=NUMBER, agent_id="col-r", at=NOW, since=NOW, consume=True)
    assert consumable(query, A1, found) is consumed
    assert not consumable(DialQuery(number=NUMBER, agent_id="col-r", at=NOW, since=NOW), A1, found)
