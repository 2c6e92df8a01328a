"""The rules a case file's row applies to a stored case (`dialer.case_merge`), as tables:
what the stored case says, what the file says, what the case says afterwards."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from dialer.case_merge import merge_case, repayment_closes
from dialer.model import CaseInput, ContactRecord

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
TODAY = NOW.date()
SELF = "+8613800000001"
WIFE = "+8613800000002"
REPAIRED = "+8613800000003"


def row(case_id: str, **columns: Any) -> CaseInput:
    """A file row for bank-m, assigned to col-m, self's number only unless given."""
    values: dict[str, Any] = dict(
        creditor="bank-m", case_id=case_id, debtor_name="王五", status="active", commission_start=date(2026, 11, 1),
        commission_end=date(2027, 1, 31), assigned_agent="col-m", flags=frozenset(), amount_due="900.00",
        overdue_days=40, contacts=(ContactRecord(SELF, "self"),),
    )
    values.update(columns)
    return CaseInput(**values)


def stored(case_id: str, **columns: Any) -> dict[str, Any]:
    """The stored case as the file `row(case_id)` left it, before anything else happened."""
    values: dict[str, Any] = dict(
        id=7, creditor="bank-m", case_id=case_id, debtor_name="王五", status="active",
        commission_start=date(2026, 11, 1), commission_end=date(2027, 1, 31), assigned_agent="col-m", flags="",
        creditor_flags="", agency_flags="", status_hold=None, amount_due="900.00", overdue_days=40,
        follow_up_status="waiting", next_action_date=date(2026, 11, 25), event_seq=3, history_seq=4,
        history_hash="h" * 64, first_call_alerted_at=None, commission_extended_to=None,
    )
    values.update(columns)
    return values


def contact(number: str, cid: int, **columns: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(id=cid, case_pk=7, number=number, relation="self", name=None, tz=None,
                                  status="valid", do_not_call=False, source="creditor", added_at=NOW)
    values.update(columns)
    return values


CASE_RULES = [
    # (stored columns, file row columns, what the case says afterwards)
    pytest.param(dict(agency_flags="dispute", flags="dispute"), dict(flags=frozenset()),
                 dict(flags="dispute", agency_flags="dispute", creditor_flags=""),
                 id="a dispute set by a call survives a file without flags"),
    pytest.param(dict(agency_flags="complaint_risk,deceased", flags="complaint_risk,deceased"),
                 dict(flags=frozenset({"litigation"})),
                 dict(flags="complaint_risk,deceased,litigation", agency_flags="complaint_risk,deceased",
                      creditor_flags="litigation"),
                 id="the bank's own flags are replaced and join the agency's"),
    pytest.param(dict(creditor_flags="litigation", flags="litigation"), dict(flags=frozenset()),
                 dict(flags="", creditor_flags=""),
                 id="the bank lifts its own flag with its next file"),
    pytest.param(dict(status="settled", status_hold="repayment", follow_up_status="closed", next_action_date=None),
                 dict(status="active"),
                 dict(status="settled", status_hold="repayment", follow_up_status="closed", next_action_date=None),
                 id="a repayment closure stays closed against a stale file that says active"),
    pytest.param(dict(status="paused", status_hold="pause", follow_up_status="paused", next_action_date=None),
                 dict(status="active"), dict(status="paused", status_hold="pause", follow_up_status="paused"),
                 id="a pause made through the API stays against a file that says active"),
    pytest.param(dict(status="settled", status_hold="repayment", follow_up_status="closed", next_action_date=None),
                 dict(status="active", reopen="bank reversed the payment"),
                 dict(status="active", status_hold=None, follow_up_status="waiting", next_action_date=TODAY),
                 id="an explicit reopen with a reason lifts the hold and is due today"),
    pytest.param(dict(status="settled", status_hold="repayment", follow_up_status="closed", next_action_date=None),
                 dict(status="withdrawn"), dict(status="withdrawn", status_hold="repayment", follow_up_status="closed"),
                 id="a held case still takes a file's closing status"),
    pytest.param(dict(), dict(status="paused"), dict(status="paused", follow_up_status="paused", next_action_date=None),
                 id="a file that pauses clears the next action date"),
    pytest.param(dict(), dict(status="withdrawn"),
                 dict(status="withdrawn", follow_up_status="closed", next_action_date=None),
                 id="a file that withdraws closes the follow up"),
    pytest.param(dict(status="paused", follow_up_status="paused", next_action_date=None), dict(status="active"),
                 dict(status="active", follow_up_status="waiting", next_action_date=TODAY),
                 id="a file that resumes a pause it set makes the case due today"),
    pytest.param(dict(follow_up_status="new", next_action_date=date(2026, 11, 20),
                      first_call_alerted_at=datetime(2026, 11, 21, tzinfo=timezone.utc)),
                 dict(assigned_agent="col-n"),
                 dict(assigned_agent="col-n", follow_up_status="new", next_action_date=date(2026, 11, 26),
                      first_call_alerted_at=None),
                 id="a case reassigned before its first call gives the new agent two days and a new alert"),
    pytest.param(dict(commission_end=date(2027, 3, 31), commission_extended_to=date(2027, 3, 31)),
                 dict(commission_end=date(2027, 1, 31)), dict(commission_end=date(2027, 3, 31)),
                 id="the creditor's extension outlasts a file with an earlier end"),
    pytest.param(dict(commission_end=date(2027, 3, 31), commission_extended_to=date(2027, 3, 31)),
                 dict(commission_end=date(2027, 6, 30)), dict(commission_end=date(2027, 6, 30)),
                 id="a file with a later end supersedes the extension"),
]


@pytest.mark.parametrize(("before", "file", "after"), CASE_RULES)
def test_a_file_row_changes_the_stored_case_by_the_rules(before: dict[str, Any], file: dict[str, Any],
                                                          after: dict[str, Any]) -> None:
    merge = merge_case(stored("M-1", **before), [contact(SELF, 1)], row("M-1", **file), NOW)
    assert not merge.created
    assert {k: merge.values[k] for k in after} == after


def test_a_stale_file_held_off_puts_the_refusal_and_its_reason_on_the_record() -> None:
    merge = merge_case(stored("M-2", status="settled", status_hold="repayment", follow_up_status="closed",
                              next_action_date=None), [contact(SELF, 1)], row("M-2"), NOW)
    (refusal,) = [c for c in merge.changes if c[0] == "status"]
    assert refusal[1:3] == ("settled", "settled")
    assert "held by repayment" in refusal[3] and "reopen" in refusal[3]


def test_a_reopening_carries_its_reason_onto_every_entry_without_one_of_its_own() -> None:
    merge = merge_case(stored("M-3", status="settled", status_hold="repayment", follow_up_status="closed",
                              next_action_date=None), [contact(SELF, 1)],
                       row("M-3", reopen="bank reversed the payment"), NOW)
    assert merge.reason == "bank reversed the payment"
    assert ("status_hold", "repayment", None) in merge.changes


def test_an_unchanged_file_row_changes_nothing_on_the_record() -> None:
    merge = merge_case(stored("M-4"), [contact(SELF, 1)], row("M-4"), NOW)
    assert merge.changes == [] and merge.insert_contacts == [] and merge.update_contacts == []
    assert merge.delete_contacts == []


def test_a_new_case_is_due_for_its_first_call_within_two_days_with_one_creation_entry() -> None:
    merge = merge_case(None, [], row("M-5", contacts=(ContactRecord(SELF, "self"), ContactRecord(WIFE, "family"))),
                       NOW)
    assert merge.created
    assert (merge.values["follow_up_status"], merge.values["next_action_date"]) == ("new", date(2026, 11, 26))
    ((field, old, entry),) = merge.changes
    assert (field, old) == ("case", None)
    # Numbers are on the record masked; the debtor's name is not on it at all.
    assert [c["number"] for c in entry["contacts"]] == ["138****0001", "138****0002"]
    assert "王五" not in str(entry)
    assert [c.number for c in merge.insert_contacts] == [SELF, WIFE]


@pytest.mark.parametrize(("status", "follow_up"), [("paused", "paused"), ("settled", "closed"),
                                                   ("returned", "closed")])
def test_a_new_case_that_is_not_active_has_no_next_action_date(status: str, follow_up: str) -> None:
    merge = merge_case(None, [], row("M-6", status=status), NOW)
    assert (merge.values["follow_up_status"], merge.values["next_action_date"]) == (follow_up, None)


CONTACT_RULES = [
    # (stored contacts, file contacts, contacts afterwards as (number, status, do_not_call, source))
    pytest.param([contact(SELF, 1, do_not_call=True)], [ContactRecord(SELF, "self")],
                 [(SELF, "valid", True, "creditor")], id="a do-not-call mark survives the bank's list"),
    pytest.param([contact(SELF, 1, status="invalid")], [ContactRecord(SELF, "self")],
                 [(SELF, "invalid", False, "creditor")], id="an invalid number stays invalid"),
    pytest.param([contact(SELF, 1), contact(REPAIRED, 2, relation="family", source="info_repair")],
                 [ContactRecord(SELF, "self")],
                 [(SELF, "valid", False, "creditor"), (REPAIRED, "valid", False, "info_repair")],
                 id="a number found by info repair stays when the bank's list lacks it"),
    pytest.param([contact(SELF, 1), contact(WIFE, 2, relation="family")], [ContactRecord(SELF, "self")],
                 [(SELF, "valid", False, "creditor")], id="a bank number the new list drops is removed"),
    pytest.param([contact(SELF, 1), contact(WIFE, 2, relation="family", do_not_call=True)],
                 [ContactRecord(SELF, "self")],
                 [(SELF, "valid", False, "creditor"), (WIFE, "valid", True, "creditor")],
                 id="a do-not-call number the new list drops stays with its mark"),
    pytest.param([contact(SELF, 1), contact(WIFE, 2, relation="family", status="invalid")],
                 [ContactRecord(SELF, "self")],
                 [(SELF, "valid", False, "creditor"), (WIFE, "invalid", False, "creditor")],
                 id="an invalid number the new list drops stays invalid"),
    pytest.param([contact(SELF, 1)], [ContactRecord(SELF, "self"), ContactRecord(WIFE, "family")],
                 [(SELF, "valid", False, "creditor"), (WIFE, "valid", False, "creditor")],
                 id="a new bank number is added after the stored ones"),
    pytest.param([contact(SELF, 1)], [ContactRecord(SELF, "self", do_not_call=True)],
                 [(SELF, "valid", True, "creditor")], id="the bank can mark a number do-not-call"),
]


@pytest.mark.parametrize(("before", "file", "after"), CONTACT_RULES)
def test_a_file_row_changes_the_stored_contacts_by_the_rules(before: list[dict[str, Any]],
                                                              file: list[ContactRecord],
                                                              after: list[tuple[Any, ...]]) -> None:
    merge = merge_case(stored("M-7"), before, row("M-7", contacts=tuple(file)), NOW)
    assert [(c.number, c.status, c.do_not_call, c.source) for c in merge.contacts] == after
    kept = {c.number for c in merge.contacts}
    assert {c["id"] for c in before if c["number"] not in kept} == set(merge.delete_contacts)


def test_each_contact_change_is_an_entry_naming_the_masked_number() -> None:
    merge = merge_case(stored("M-8"), [contact(SELF, 1), contact(WIFE, 2, relation="family")],
                       row("M-8", contacts=(ContactRecord(SELF, "self", do_not_call=True),)), NOW)
    fields = [c[0] for c in merge.changes]
    assert fields == ["contact 138****0001", "contact 138****0002"]
    assert merge.changes[0][2]["do_not_call"] is True and merge.changes[1][2] is None


@pytest.mark.parametrize(("settled", "status", "hold", "closes"), [
    (True, "active", None, True),
    (True, "settled", None, True),  # the bank's file said settled: the repayment still holds it
    (True, "settled", "repayment", False),  # held already: nothing more to write
    (False, "active", None, False),  # a part payment closes nothing
])
def test_a_settled_repayment_closes_and_holds_its_case(settled: bool, status: str, hold: str | None,
                                                       closes: bool) -> None:
    assert repayment_closes(settled, status, hold) is closes


@pytest.mark.parametrize("field", ["commission_start", "commission_end"])
def test_a_file_row_without_a_commission_date_keeps_the_stored_one_and_says_so(field: str) -> None:
    merge = merge_case(stored("M-9"), [contact(SELF, 1)], row("M-9", **{field: None}), NOW)
    kept = stored("M-9")[field]
    assert merge.values[field] == kept
    assert (field, kept.isoformat(), kept.isoformat(), f"file gives no {field.replace('_', ' ')}; kept the stored one") \
        in merge.changes
