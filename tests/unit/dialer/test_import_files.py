"""Reading an import file: encodings, malformed CSV rows, row and size limits, staging."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
from starlette.requests import Request

from dialer.errors import BadRequest, ConfigError, InvalidImport, PayloadTooLarge
from dialer.http.imports import read_upload
from dialer.import_jobs import ImportLimits, load_import_limits
from dialer.import_validation import Upload, validate
from dialer.imports import (
    CSV_FIELD_LIMIT,
    TooManyRows,
    case_from_json,
    case_to_json,
    decode_upload,
    parse_cases_csv,
    parse_cases_payload,
    parse_repayments_csv,
    repayment_from_json,
    repayment_to_json,
)
from dialer.model import Principal

HEADER = "creditor,case_id,debtor_name,number,relation\n"
DATA = Principal(1, "data-a", "data", frozenset({"bank-a"}))


def region(_: str) -> str:
    return "CN"


def csv_cases(*lines: str) -> str:
    return HEADER + "".join(line + "\n" for line in lines)


def test_utf8_with_a_byte_order_mark_is_read_as_utf8_without_the_mark() -> None:
    text, enc = decode_upload(b"\xef\xbb\xbf" + csv_cases("bank-a,C-1,张三,13800000001,self").encode(), None)
    assert enc == "utf-8"
    (case,) = parse_cases_csv(text, region)
    assert case.debtor_name == "张三"


def test_a_gbk_file_from_chinese_excel_is_detected_as_gb18030() -> None:
    raw = csv_cases("bank-a,C-1,张三,13800000001,self").encode("gbk")
    text, enc = decode_upload(raw, None)
    assert enc == "gb18030"
    (case,) = parse_cases_csv(text, region)
    assert case.debtor_name == "张三"


def test_a_gbk_file_declared_as_utf8_is_refused_naming_the_encoding_and_the_byte() -> None:
    raw = csv_cases("bank-a,C-1,张三,13800000001,self").encode("gbk")
    with pytest.raises(BadRequest) as caught:
        decode_upload(raw, "utf-8")
    assert "utf-8" in caught.value.detail
    assert caught.value.details == {"encoding": "utf-8", "byte": raw.index("张三".encode("gbk"))}


def test_a_file_declared_gbk_is_decoded_as_gb18030() -> None:
    text, enc = decode_upload("王五".encode("gbk"), "GBK")
    assert (text, enc) == ("王五", "gb18030")


def test_an_unknown_declared_encoding_is_refused_by_name() -> None:
    with pytest.raises(BadRequest, match="unsupported encoding 'latin-9'"):
        decode_upload(b"abc", "latin-9")


def test_bytes_that_are_neither_utf8_nor_gb18030_are_refused_naming_both() -> None:
    with pytest.raises(BadRequest) as caught:
        decode_upload(b"creditor\n\x80\x80\xff\xff", None)
    assert "UTF-8" in caught.value.detail and "GB18030" in caught.value.detail


def test_a_csv_field_over_the_limit_is_a_row_error_naming_its_line() -> None:
    big = "x" * (CSV_FIELD_LIMIT + 1)
    text = csv_cases("bank-a,C-1,张三,13800000001,self", f'bank-a,C-2,"{big}",13800000002,self')
    with pytest.raises(InvalidImport) as caught:
        parse_cases_csv(text, region)
    (error,) = caught.value.errors
    assert error["row"] == 3
    assert f"longer than {CSV_FIELD_LIMIT} characters" in error["error"]


def test_an_unterminated_quote_is_a_row_error_naming_the_line_where_the_row_starts() -> None:
    text = csv_cases("bank-a,C-1,张三,13800000001,self", 'bank-a,C-2,"李四,13800000002,self', "bank-a,C-3,王五,1,self")
    with pytest.raises(InvalidImport) as caught:
        parse_cases_csv(text, region)
    (error,) = caught.value.errors
    assert error["row"] == 3
    assert "never closed" in error["error"]


def test_a_csv_over_the_row_limit_is_refused_with_its_count() -> None:
    text = csv_cases(*(f"bank-a,C-{i},张三,138{i:08d},self" for i in range(12)))
    with pytest.raises(TooManyRows) as caught:
        parse_cases_csv(text, region, max_rows=10)
    assert caught.value.status == 413
    assert caught.value.details == {"rows": 12, "max_rows": 10}
    assert "12" in caught.value.detail


def test_a_json_file_over_the_row_limit_is_refused_with_its_count() -> None:
    doc = {"cases": [{"case_id": f"C-{i}"} for i in range(5)]}
    with pytest.raises(TooManyRows) as caught:
        parse_cases_payload(doc, region, max_rows=4)
    assert caught.value.details == {"rows": 5, "max_rows": 4}


def test_a_repayment_csv_over_the_row_limit_is_refused_with_its_count() -> None:
    text = "creditor,case_id,settled\n" + "".join(f"bank-a,C-{i},true\n" for i in range(3))
    with pytest.raises(TooManyRows):
        parse_repayments_csv(text, max_rows=2)


def test_validation_refuses_a_creditor_outside_the_submitters_scope_by_row() -> None:
    body = csv_cases("bank-a,C-1,张三,13800000001,self", "bank-b,C-2,李四,13800000002,self").encode()
    with pytest.raises(InvalidImport) as caught:
        validate(Upload("cases", body, "text/csv"), DATA, region, 100)
    assert [(e["row"], e["field"]) for e in caught.value.errors] == [(2, "creditor")]


def test_a_staged_case_reads_back_equal_to_the_validated_one() -> None:
    (case,) = parse_cases_payload({"cases": [{
        "case_id": "C-1", "creditor": "bank-a", "debtor_name": "张三", "commission_start": "2026-11-01",
        "commission_end": "2027-02-28", "flags": ["dispute", "complaint_risk"], "amount_due": "12.50",
        "overdue_days": 3, "reopen": "银行重新委案 / re-commissioned",
        "contacts": [{"number": "13800000001", "relation": "self", "tz": "Asia/Shanghai", "do_not_call": True},
                     {"number": "13800000002", "relation": "family", "name": "李四"}],
    }]}, region)
    assert case_from_json(case_to_json(case)) == case


def test_a_staged_repayment_reads_back_with_its_date() -> None:
    row = {"creditor": "bank-a", "case_id": "C-1", "amount": "10", "paid_on": date(2026, 11, 2), "settled": True}
    assert repayment_from_json(repayment_to_json(row)) == row


def test_an_unknown_imports_key_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError, match="imports.max_rowz: unknown key"):
        load_import_limits({"max_rowz": 3})
    with pytest.raises(ConfigError, match="imports.batch_rows"):
        load_import_limits({"batch_rows": 0})
    assert load_import_limits({"max_rows": 7}).max_rows == 7


def _request(headers: dict[str, str], chunks: list[bytes]) -> tuple[Request, list[int]]:
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/imports", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive), received


def test_a_declared_size_over_the_limit_is_413_before_any_byte_is_read() -> None:
    request, received = _request({"content-length": str(10_000), "content-type": "text/csv"}, [b"x" * 10_000])
    with pytest.raises(PayloadTooLarge) as caught:
        asyncio.run(read_upload(request, "cases", ImportLimits(max_bytes=1_000), None))
    assert caught.value.details == {"bytes": 10_000, "max_bytes": 1_000}
    assert received == []


def test_a_body_that_outgrows_the_limit_without_declaring_it_stops_being_read() -> None:
    request, received = _request({"content-type": "text/csv"}, [b"x" * 600, b"x" * 600, b"x" * 600])
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_upload(request, "cases", ImportLimits(max_bytes=1_000), None))
    assert len(received) == 2


def test_the_charset_parameter_declares_the_encoding() -> None:
    request, _ = _request({"content-type": 'text/csv; charset="GBK"'}, [b"a"])
    upload = asyncio.run(read_upload(request, "cases", ImportLimits(), None))
    assert (upload.content_type, upload.encoding) == ("text/csv", "GBK")


def test_rows_of_one_case_that_disagree_on_a_case_field_are_refused_naming_the_later_row() -> None:
    # One row per contact: a second row that names another debtor or agent for the same
    # case would otherwise be dropped in silence, the first row's values kept.
    text = ("creditor,case_id,debtor_name,assigned_agent,number,relation\n"
            "bank-a,C-1,张三,col-a,13800000001,self\n"
            "bank-a,C-1,李四,col-b,13800000002,family\n")
    with pytest.raises(InvalidImport) as caught:
        parse_cases_csv(text, region)
    assert sorted((e["row"], e["field"]) for e in caught.value.errors) == [(3, "assigned_agent"), (3, "debtor_name")]
    assert "row 2" in caught.value.errors[0]["error"]


def test_rows_of_one_case_may_repeat_its_fields_or_leave_them_empty() -> None:
    text = ("creditor,case_id,debtor_name,assigned_agent,number,relation\n"
            "bank-a,C-1,张三,col-a,13800000001,self\n"
            "bank-a,C-1,张三,col-a,13800000002,family\n"
            "bank-a,C-1,,,13800000003,family\n")
    (case,) = parse_cases_csv(text, region)
    assert (case.debtor_name, len(case.contacts)) == ("张三", 3)
