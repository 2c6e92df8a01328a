"""Parsing imported cases and repayments: all errors listed, numbers normalised."""

from __future__ import annotations

import pytest

from dialer.errors import BadRequest, InvalidImport
from dialer.imports import parse_cases_csv, parse_cases_payload, parse_repayments_payload


def region(_: str) -> str:
    return "CN"


def case(**kw: object) -> dict:
    return {"case_id": "X-1", "creditor": "bank-a", "debtor_name": "王五",
            "contacts": [{"number": "138 0000 0001", "relation": "self"}], **kw}


def test_a_valid_case_has_e164_numbers_and_defaults() -> None:
    (c,) = parse_cases_payload({"cases": [case()]}, region)
    assert c.contacts[0].number == "+8613800000001"
    assert c.status == "active" and c.flags == frozenset()


def test_every_bad_field_of_every_row_is_listed() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_cases_payload({"cases": [
            case(status="gone", flags=["angry"]),
            case(case_id="X-2", overdue_days=-1, contacts=[{"number": "1", "relation": "self", "tz": "Mars/Base"}]),
            case(),  # duplicate of row 1's (creditor, case_id)
        ]}, region)
    got = {(e["row"], e["field"]) for e in caught.value.errors}
    assert got == {(1, "status"), (1, "flags"), (2, "overdue_days"), (2, "contacts[0].number"),
                   (2, "contacts[0].tz"), (3, "case_id")}


def test_a_duplicate_number_within_a_case_is_an_error() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_cases_payload({"cases": [case(contacts=[{"number": "13800000001", "relation": "self"},
                                                      {"number": "+86 138-0000-0001", "relation": "work"}])]}, region)
    assert caught.value.errors[0]["field"] == "contacts[1].number"


def test_unknown_fields_are_refused_rather_than_ignored() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_cases_payload({"cases": [case(colour="red")]}, region)
    assert caught.value.errors == [{"row": 1, "field": "colour", "error": "unknown field"}]


def test_commission_end_before_start_is_an_error() -> None:
    with pytest.raises(InvalidImport):
        parse_cases_payload({"cases": [case(commission_start="2026-12-01", commission_end="2026-11-01")]}, region)


def test_the_wrong_top_level_shape_is_a_bad_request() -> None:
    for doc in ([], {"case": []}, {"cases": {}}, {"cases": []}):
        with pytest.raises(BadRequest):
            parse_cases_payload(doc, region)


def test_csv_rows_of_one_case_merge_and_errors_name_csv_lines() -> None:
    text = "creditor,case_id,debtor_name,number,relation\nbank-a,X-1,王五,13800000001,self\nbank-a,X-1,王五,13900000002,boss\n"
    with pytest.raises(InvalidImport) as caught:
        parse_cases_csv(text, region)
    assert caught.value.errors[0]["row"] == 2 and caught.value.errors[0]["field"] == "contacts[1].relation"


def test_a_csv_without_required_columns_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="debtor_name"):
        parse_cases_csv("creditor,case_id\nbank-a,X-1\n", region)


def test_repayments_need_settled_and_valid_amounts() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_repayments_payload({"repayments": [{"creditor": "bank-a", "case_id": "X-1", "amount": "lots"}]})
    assert {e["field"] for e in caught.value.errors} == {"amount", "settled"}


def test_a_case_id_or_creditor_ending_in_a_newline_is_refused_not_taken_for_another_case() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_cases_payload({"cases": [case(case_id="X-1\n"), case(case_id="X-2", creditor="bank-a\n")]}, region)
    assert {(e["row"], e["field"]) for e in caught.value.errors} == {(1, "case_id"), (2, "creditor")}


def test_one_case_id_in_two_letter_cases_within_a_file_is_refused_not_imported_as_two_cases() -> None:
    with pytest.raises(InvalidImport) as caught:
        parse_cases_payload({"cases": [case(case_id="X-1"), case(case_id="x-1")]}, region)
    (error,) = caught.value.errors
    assert (error["row"], error["field"]) == (2, "case_id") and "'X-1'" in error["error"] and "大小写" in error["error"]
    text = "creditor,case_id,debtor_name,number,relation\nbank-a,X-1,王五,13800000001,self\nbank-a,x-1,王五,13800000001,self\n"
    with pytest.raises(InvalidImport) as caught:
        parse_cases_csv(text, region)
    assert [(e["row"], e["field"]) for e in caught.value.errors] == [(3, "case_id")]
