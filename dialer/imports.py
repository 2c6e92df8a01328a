"""Parsing imported cases and repayments (JSON or CSV) into validated inputs.

A file is accepted whole or refused whole: every row/field error is collected and the
caller gets `InvalidImport` listing all of them. Numbers are normalised to E.164 in the
creditor's default region.

CSV for cases has one row per contact; case columns repeat on each of a case's rows:
    creditor,case_id,debtor_name,status,commission_start,commission_end,assigned_agent,
    flags,amount_due,overdue_days,number,relation,contact_name,tz,contact_status,do_not_call
(`flags` separated by `;`). CSV for repayments: creditor,case_id,amount,paid_on,settled.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import fields
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

import orjson

from dialer.errors import BadRequest, InvalidImport, PayloadTooLarge
from dialer.masking import redact_on_input
from dialer.model import CaseInput, ContactRecord
from policy import CASE_FLAGS, CASE_STATUSES, RELATIONS, NumberFormatError, normalize_number
from policy.model import CREDITOR_ID
from policy.numbers import load_zone

MAX_JSON_DEPTH = 32  # an import is {"cases": [{"contacts": [{…}]}]}: depth 5


def loads_json(raw: bytes | str) -> Any:
    """A JSON document as the API accepts it: strict JSON (no NaN or Infinity, which
    are not JSON), nested at most MAX_JSON_DEPTH deep. Malformed → 400 with the reason."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", details={"field": "body"}) from exc
    if _depth_over(doc, MAX_JSON_DEPTH):
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", details={"field": "body"})
    return doc


def _depth_over(doc: Any, limit: int) -> bool:
    """Whether `doc` nests containers more than `limit` deep (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


CASE_FIELDS = (
    "case_id", "creditor", "debtor_name", "status", "commission_start", "commission_end",
    "assigned_agent", "flags", "amount_due", "overdue_days", "contacts", "reopen",
)
MAX_REASON = 500
CONTACT_FIELDS = ("number", "relation", "name", "tz", "status", "do_not_call", "source")
# `\Z`, not `$`: `$` also matches before a final newline, and "C-1\n" would be a second
# case beside C-1, with none of its stops, marks or calls.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}\Z")
_CREDITOR = CREDITOR_ID  # the policy's creditor sections are keyed alike
MAX_ROWS = 200_000  # `[imports] max_rows` overrides it


def case_key(case_id: str) -> str:
    """A case id with its letter case folded: what two spellings of one case share. A
    file naming "c-1" beside a stored "C-1" means that case, not a second one, which
    would carry none of its stops, marks or calls; such a row is refused."""
    return case_id.upper()  # case ids are ASCII (`_ID`): no Unicode folding needed


def spelling_error(case_id: str, other: str, row: int | None = None) -> str:
    """The refusal of `case_id`, which is `other` (stored, or of file row `row`) in another letter case."""
    where, where_zh = ("the stored case", "已有案件") if row is None else (f"row {row}", f"第 {row} 行")
    return (f"case id {case_id!r} is {other!r} of {where} in another letter case: one case written two ways;"
            f" write it {other!r} (案件编号 {case_id} 与{where_zh}的 {other} 仅大小写不同，属同一案件，请写作 {other})")


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError("expected a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}") from None
    if not 1970 <= day.year < 2100:  # beyond, date arithmetic downstream overflows
        raise ValueError(f"expected a date between 1970 and 2099, got {value!r}")
    return day


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


MAX_AMOUNT = Decimal(10**12)
MAX_OVERDUE_DAYS = 100_000
# The store's column widths (adapters/db/tables.py): a longer value is refused here, by
# row and field, since PostgreSQL refuses it only while applying, after earlier batches
# have committed, and SQLite keeps it whole.
MAX_NAME = 200  # debtor_name, a contact's name
MAX_AGENT = 100  # assigned_agent
MAX_AMOUNT_TEXT = 40  # an amount as stored


def _amount(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValueError("expected an amount")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected an amount, got {value!r}") from None
    if not d.is_finite() or d < 0 or d > MAX_AMOUNT:  # NaN first: comparing it raises
        raise ValueError(f"amount must be a number from 0 to {MAX_AMOUNT}")
    if len(str(d)) > MAX_AMOUNT_TEXT:
        raise ValueError(f"amount has too many digits (at most {MAX_AMOUNT_TEXT} characters)")
    return str(d)


def parse_contact(
    raw: Any, region: str, where: str, errors: list[dict[str, Any]], row: int, *, default_source: str = "creditor"
) -> ContactRecord | None:
    def err(field: str, msg: str) -> None:
        errors.append({"row": row, "field": f"{where}{field}", "error": msg})

    if not isinstance(raw, Mapping):
        err("", "expected an object")
        return None
    for key in raw:
        if key not in CONTACT_FIELDS:
            err(str(key), "unknown field")
    number = None
    if not isinstance(raw.get("number"), str) or not raw.get("number"):
        err("number", "required")
    else:
        try:
            number = normalize_number(raw["number"], region)
        except NumberFormatError as exc:
            err("number", exc.reason)
    relation = raw.get("relation")
    if relation not in RELATIONS:
        err("relation", f"expected one of {', '.join(RELATIONS)}")
    status = raw.get("status", "valid") or "valid"
    if status not in ("valid", "invalid"):
        err("status", "expected valid or invalid")
    tz = raw.get("tz") or None
    if tz is not None and (not isinstance(tz, str) or load_zone(tz) is None):
        err("tz", f"unknown IANA time zone {tz!r}")
    try:
        dnc = _bool(raw.get("do_not_call", False))
    except ValueError as exc:
        err("do_not_call", str(exc))
        dnc = False
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        err("name", f"expected a string of at most {MAX_NAME} characters")
    source = raw.get("source", default_source) or default_source
    if not isinstance(source, str) or len(source) > 40:
        err("source", "expected a short string")
    if number is None or relation not in RELATIONS:
        return None
    return ContactRecord(
        number=number, relation=str(relation), name=redact_on_input(name), tz=tz, status=str(status), do_not_call=dnc,
        source=redact_on_input(str(source)) or str(source),  # free text too: a card or ID number is not stored
    )


def parse_case(raw: Any, row: int, errors: list[dict[str, Any]], region_of: Callable[[str], str]) -> CaseInput | None:
    n_before = len(errors)

    def err(field: str, msg: str) -> None:
        errors.append({"row": row, "field": field, "error": msg})

    if not isinstance(raw, Mapping):
        err("", "expected a case object")
        return None
    for key in raw:
        if key not in CASE_FIELDS:
            err(str(key), "unknown field")
    case_id = raw.get("case_id")
    if not isinstance(case_id, str) or not _ID.match(case_id):
        err("case_id", "required: 1-100 letters, digits, '.', '_' or '-'")
    creditor = raw.get("creditor")
    if not isinstance(creditor, str) or not _CREDITOR.match(creditor):
        err("creditor", "required: lower-case id like bank-a")
        creditor = ""
    debtor = raw.get("debtor_name")
    if not isinstance(debtor, str) or not debtor.strip():
        err("debtor_name", "required")
    elif len(debtor.strip()) > MAX_NAME:
        err("debtor_name", f"at most {MAX_NAME} characters")
    status = raw.get("status", "active")
    if status not in CASE_STATUSES:
        err("status", f"expected one of {', '.join(CASE_STATUSES)}")
    start = end = None
    try:
        start = _date(raw.get("commission_start"))
    except ValueError as exc:
        err("commission_start", str(exc))
    try:
        end = _date(raw.get("commission_end"))
    except ValueError as exc:
        err("commission_end", str(exc))
    if start and end and end < start:
        err("commission_end", "before commission_start")
    agent = raw.get("assigned_agent")
    if agent is not None and (not isinstance(agent, str) or not agent or len(agent) > MAX_AGENT):
        err("assigned_agent", f"expected an agent id (at most {MAX_AGENT} characters) or null")
    flags = raw.get("flags", []) or []
    if not isinstance(flags, list) or any(f not in CASE_FLAGS for f in flags):
        err("flags", f"expected a list of {', '.join(CASE_FLAGS)}")
        flags = []
    amount = None
    try:
        amount = _amount(raw.get("amount_due"))
    except ValueError as exc:
        err("amount_due", str(exc))
    overdue = raw.get("overdue_days")
    if overdue is not None and (isinstance(overdue, bool) or not isinstance(overdue, int)
                                or not 0 <= overdue <= MAX_OVERDUE_DAYS):
        err("overdue_days", f"expected a whole number of days from 0 to {MAX_OVERDUE_DAYS}")
    # An explicit reopening (a reason): lifts a repayment closure, a pause or a withdrawal.
    reopen = raw.get("reopen")
    if reopen is not None and (not isinstance(reopen, str) or not reopen.strip() or len(reopen) > MAX_REASON):
        err("reopen", f"expected the reason for reopening (1-{MAX_REASON} characters)")
    contacts_raw = raw.get("contacts", [])
    contacts: list[ContactRecord] = []
    if not isinstance(contacts_raw, list):
        err("contacts", "expected a list")
    else:
        region = region_of(creditor) if creditor else "CN"
        seen: set[str] = set()
        for i, c in enumerate(contacts_raw):
            rec = parse_contact(c, region, f"contacts[{i}].", errors, row)
            if rec is not None:
                if rec.number in seen:
                    err(f"contacts[{i}].number", "duplicate number in this case")
                seen.add(rec.number)
                contacts.append(rec)
    if len(errors) > n_before:
        return None
    return CaseInput(
        creditor=str(creditor),
        case_id=str(case_id),
        debtor_name=redact_on_input(str(debtor).strip()) or "",
        status=str(status),
        commission_start=start,
        commission_end=end,
        assigned_agent=agent,
        flags=frozenset(flags),
        amount_due=amount,
        overdue_days=overdue,
        contacts=tuple(contacts),
        reopen=reopen.strip() if isinstance(reopen, str) else None,
    )


NUL_ERROR = "contains a NUL character (\\u0000), which no field may hold"


def nul_errors(row: int, value: Any) -> list[dict[str, Any]]:
    """The row errors of `value`'s fields that hold a NUL character (`nul_fields`)."""
    return [{"row": row, "field": f, "error": NUL_ERROR} for f in nul_fields(value)]


def nul_fields(value: Any) -> list[str]:
    """The fields (dotted paths) of a row whose text holds a NUL character. PostgreSQL
    cannot store one and SQLite can: refused here, both engines answer alike, and a
    large file is not refused by the store halfway through its batches."""
    try:
        # One encoding of the row says whether to look further: walking every row's
        # fields cost half again the row's validation.
        if b"\\u0000" not in orjson.dumps(value):
            return []
    except (TypeError, orjson.JSONEncodeError):
        pass  # a value orjson does not encode (an integer past 64 bits): walk it
    return _nul_paths(value, "")


def _nul_paths(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, Mapping):
        return [f for k, v in value.items() for f in _nul_paths(v, f"{path}.{k}" if path else str(k))] + (
            [path or "(field name)"] if any("\x00" in str(k) for k in value) else [])
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _nul_paths(v, f"{path}.{i}")]
    return []


def parse_cases_payload(doc: Any, region_of: Callable[[str], str], max_rows: int = MAX_ROWS) -> list[CaseInput]:
    if not isinstance(doc, Mapping) or set(doc) != {"cases"} or not isinstance(doc["cases"], list):
        raise BadRequest('expected a JSON object {"cases": [ … ]}')
    rows = doc["cases"]
    if not rows:
        raise BadRequest("no cases in the file")
    if len(rows) > max_rows:
        raise TooManyRows(len(rows), max_rows, "cases")
    errors: list[dict[str, Any]] = []
    out: list[CaseInput] = []
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for i, raw in enumerate(rows):
        errors.extend(nul_errors(i + 1, raw))
        case = parse_case(raw, i + 1, errors, region_of)
        if isinstance(raw, Mapping) and isinstance(raw.get("case_id"), str):
            key = (str(raw.get("creditor")), case_key(raw["case_id"]))
            if key in seen:
                row, first = seen[key]
                errors.append({"row": i + 1, "field": "case_id", "error": f"duplicate of row {row}"
                               if first == raw["case_id"] else spelling_error(raw["case_id"], first, row)})
            else:
                seen[key] = (i + 1, raw["case_id"])
        if case is not None:
            out.append(case)
    if errors:
        raise InvalidImport(errors)
    return out


# Python's csv module refuses a field longer than this; say so as a row error.
CSV_FIELD_LIMIT = 131_072


def _csv_rows(text: str, required: tuple[str, ...], max_rows: int) -> list[tuple[int, dict[str, str]]]:
    """(line, row) pairs, streamed from `text`. A malformed row (a field over the limit,
    a quote never closed, more values than columns) is a row error naming its line; the
    file is refused with every error found. Over `max_rows` data rows → `TooManyRows`
    with the count (the rest is only counted, not checked)."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidImport([{"row": 1, "field": "", "error": f"malformed CSV header: {exc}"}]) from exc
    if header is None:
        raise BadRequest("empty CSV")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise BadRequest(f"CSV header lacks column(s): {', '.join(missing)}")
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[dict[str, Any]] = []
    count = 0
    while True:
        line_no = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            msg = str(exc)
            if "field larger than field limit" in msg:
                msg = f"a field is longer than {CSV_FIELD_LIMIT} characters"
            elif "unexpected end of data" in msg:
                msg = "a quoted field is never closed (the quote runs to the end of the file)"
            errors.append({"row": line_no, "field": "", "error": f"malformed CSV row: {msg}"})
            # The reader cannot resynchronise after a malformed row: refuse with what we have.
            break
        if not values or values == [""]:
            continue
        count += 1
        if count > max_rows:
            continue
        if len(values) > len(header):
            errors.append({"row": line_no, "field": "", "error": "more values than header columns"})
            continue
        row = {k: (values[i] if i < len(values) else "").strip() for i, k in enumerate(header)}
        nul = nul_errors(line_no, row)
        if nul:
            errors.extend(nul)
            continue
        rows.append((line_no, row))
    if count > max_rows:
        raise TooManyRows(count, max_rows, "CSV rows")
    if errors:
        raise InvalidImport(errors)
    if not rows:
        raise BadRequest("no data rows in the CSV")
    return rows


CASE_CSV_COLUMNS = (
    "creditor", "case_id", "debtor_name", "status", "commission_start", "commission_end", "assigned_agent",
    "flags", "amount_due", "overdue_days", "number", "relation", "contact_name", "tz", "contact_status", "do_not_call",
)


# Columns of the case itself, not of the contact a row adds: every row of a case agrees on them.
CASE_ONLY_COLUMNS = ("debtor_name", "status", "commission_start", "commission_end", "assigned_agent", "flags",
                     "amount_due", "overdue_days", "reopen")


def parse_cases_csv(text: str, region_of: Callable[[str], str], max_rows: int = MAX_ROWS) -> list[CaseInput]:
    rows = _csv_rows(text, ("creditor", "case_id", "debtor_name"), max_rows)
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    first_line: dict[tuple[str, str], int] = {}
    first_row: dict[tuple[str, str], dict[str, str]] = {}
    errors: list[dict[str, Any]] = []
    for line, r in rows:
        key = (r.get("creditor", ""), r.get("case_id", ""))
        if key in grouped:
            # Only the first row's case fields are read: a later row of the case that
            # says otherwise would be dropped in silence.
            for field in CASE_ONLY_COLUMNS:
                value, first = r.get(field) or "", first_row[key].get(field) or ""
                if value and value != first:
                    errors.append({"row": line, "field": field,
                                   "error": f"differs from row {first_line[key]} of the same case ({first!r})"})
        else:
            first_row[key] = r
            doc: dict[str, Any] = {k: r.get(k) or None for k in ("case_id", "creditor", "debtor_name", "commission_start",
                                                                  "commission_end", "assigned_agent", "amount_due",
                                                                  "reopen")}
            doc["status"] = r.get("status") or "active"
            doc["flags"] = [f for f in (r.get("flags") or "").split(";") if f]
            od = r.get("overdue_days") or ""
            if od:
                try:
                    doc["overdue_days"] = int(od)
                except ValueError:
                    errors.append({"row": line, "field": "overdue_days", "error": "expected a whole number"})
            doc["contacts"] = []
            grouped[key] = doc
            first_line[key] = line
        if r.get("number"):
            grouped[key]["contacts"].append(
                {
                    "number": r["number"],
                    "relation": r.get("relation") or "",
                    "name": r.get("contact_name") or None,
                    "tz": r.get("tz") or None,
                    "status": r.get("contact_status") or "valid",
                    "do_not_call": r.get("do_not_call") or "false",
                }
            )
    folded: dict[tuple[str, str], tuple[str, str]] = {}
    for creditor, case_id in grouped:
        other = folded.setdefault((creditor, case_key(case_id)), (creditor, case_id))
        if other[1] != case_id:  # rows of one case under two spellings would make two cases
            errors.append({"row": first_line[(creditor, case_id)], "field": "case_id",
                           "error": spelling_error(case_id, other[1], first_line[other])})
    out: list[CaseInput] = []
    for key, doc in grouped.items():
        doc = {k: v for k, v in doc.items() if v is not None}
        case = parse_case(doc, first_line[key], errors, region_of)
        if case is not None:
            out.append(case)
    if errors:
        raise InvalidImport(sorted(errors, key=lambda e: e["row"]))
    return out


def parse_repayments(rows: list[Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    out = []
    if not rows:
        raise BadRequest("no repayments in the file")
    for i, raw in enumerate(rows):
        row = raw[0] if isinstance(raw, tuple) else i + 1
        r = raw[1] if isinstance(raw, tuple) else raw
        if not isinstance(r, Mapping):
            errors.append({"row": row, "field": "", "error": "expected an object"})
            continue
        n = len(errors)
        errors.extend(nul_errors(row, r))
        for key in r:
            if key not in ("creditor", "case_id", "amount", "paid_on", "settled"):
                errors.append({"row": row, "field": str(key), "error": "unknown field"})
        if not isinstance(r.get("creditor"), str) or not r.get("creditor"):
            errors.append({"row": row, "field": "creditor", "error": "required"})
        if not isinstance(r.get("case_id"), str) or not r.get("case_id"):
            errors.append({"row": row, "field": "case_id", "error": "required"})
        try:
            amount = _amount(r.get("amount"))
        except ValueError as exc:
            errors.append({"row": row, "field": "amount", "error": str(exc)})
            amount = None
        try:
            paid_on = _date(r.get("paid_on"))
        except ValueError as exc:
            errors.append({"row": row, "field": "paid_on", "error": str(exc)})
            paid_on = None
        if "settled" not in r:
            errors.append({"row": row, "field": "settled", "error": "required (true or false)"})
            settled = False
        else:
            try:
                settled = _bool(r["settled"])
            except ValueError as exc:
                errors.append({"row": row, "field": "settled", "error": str(exc)})
                settled = False
        if len(errors) == n:
            out.append({"creditor": r["creditor"], "case_id": r["case_id"], "amount": amount,
                        "paid_on": paid_on, "settled": settled})
    if errors:
        raise InvalidImport(errors)
    return out


def parse_repayments_payload(doc: Any, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    if not isinstance(doc, Mapping) or set(doc) != {"repayments"} or not isinstance(doc["repayments"], list):
        raise BadRequest('expected a JSON object {"repayments": [ … ]}')
    if len(doc["repayments"]) > max_rows:
        raise TooManyRows(len(doc["repayments"]), max_rows, "repayments")
    return parse_repayments(doc["repayments"])


def parse_repayments_csv(text: str, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    rows = _csv_rows(text, ("creditor", "case_id", "settled"), max_rows)
    return parse_repayments([(line, {k: v for k, v in r.items() if v != "" or k == "settled"}) for line, r in rows])


class TooManyRows(PayloadTooLarge):
    """A file over the configured row limit, refused with its count."""

    def __init__(self, count: int, limit: int, what: str) -> None:
        super().__init__(
            f"the file has {count} {what}; at most {limit} per import ([imports] max_rows)",
            details={"rows": count, "max_rows": limit},
        )


# -- encodings ---------------------------------------------------------------------
# What Chinese Excel writes when saving CSV is GBK (code page 936); GB18030 is its
# superset, so it decodes both.
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "gb18030": "gb18030", "gbk": "gb18030",
             "gb2312": "gb18030", "cp936": "gb18030"}


def decode_upload(raw: bytes, declared: str | None) -> tuple[str, str]:
    """(text, encoding name). A declared encoding (Content-Type charset or `?encoding=`)
    is used as is; otherwise a UTF-8 BOM or valid UTF-8 means UTF-8, else GB18030. A
    file that does not decode names the encoding tried and the byte offset."""
    if declared is not None:
        name = ENCODINGS.get(declared.strip().lower())
        if name is None:
            raise BadRequest(
                f"unsupported encoding {declared!r}: use utf-8 or gb18030 (gbk)", details={"encoding": declared}
            )
        try:
            return _decode(raw, name), name
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the file is not valid {declared} (byte {exc.start}: {raw[exc.start:exc.start + 4]!r})",
                details={"encoding": declared, "byte": exc.start},
            ) from exc
    if raw.startswith(codecs.BOM_UTF8):
        try:
            return _decode(raw, "utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the file starts with a UTF-8 byte-order mark but is not valid UTF-8 (byte {exc.start})",
                details={"encoding": "utf-8", "byte": exc.start},
            ) from exc
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as utf8_exc:
        try:
            return raw.decode("gb18030"), "gb18030"
        except UnicodeDecodeError:
            raise BadRequest(
                f"the file is neither UTF-8 (byte {utf8_exc.start}) nor GB18030/GBK; save it as UTF-8 or "
                "declare its encoding (charset= or ?encoding=)",
                details={"encoding": "utf-8", "byte": utf8_exc.start},
            ) from utf8_exc


def _decode(raw: bytes, name: str) -> str:
    return raw.decode("utf-8-sig" if name == "utf-8" else name)


# -- staged rows ---------------------------------------------------------------------
# A validated row is staged as JSON and applied later (maybe by another process):
# these two pairs are the only ways in and out.
def _encode(value: Any) -> Any:
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(value)}
    raise TypeError(f"cannot stage {type(value).__name__}")


def _decode_tag(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        if "$date" in d:
            return date.fromisoformat(d["$date"])
        if "$set" in d:
            return frozenset(d["$set"])
    return d


# Read from the dataclasses once: `fields()` per row cost more than encoding the row.
_STAGED_CASE_FIELDS = tuple(f.name for f in fields(CaseInput) if f.name != "contacts")
_STAGED_CONTACT_FIELDS = tuple(f.name for f in fields(ContactRecord))


def case_to_json(case: CaseInput) -> str:
    """Every field of `CaseInput` (whatever fields it gains), tagged where JSON lacks a type."""
    doc = {name: getattr(case, name) for name in _STAGED_CASE_FIELDS}
    doc["contacts"] = [
        {name: value for name in _STAGED_CONTACT_FIELDS if (value := getattr(c, name)) is not None}
        for c in case.contacts
    ]
    # Dates go to `_encode` for their tag, not orjson's plain ISO text.
    return orjson.dumps(doc, default=_encode, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def case_from_json(text: str) -> CaseInput:
    # orjson and the tags decoded where `case_to_json` puts them (the case's fields and
    # its contacts'): a batch parses hundreds of these, at a third of json's cost.
    doc = orjson.loads(text)
    for key, value in doc.items():
        if type(value) is dict:
            doc[key] = _decode_tag(value)
    contacts = []
    for c in doc["contacts"]:
        for key, value in c.items():  # values replaced in place: no new mapping per contact
            if type(value) is dict:
                c[key] = _decode_tag(value)
        contacts.append(ContactRecord(**c))
    doc["contacts"] = tuple(contacts)
    return CaseInput(**doc)


def repayment_to_json(row: Mapping[str, Any]) -> str:
    paid_on = row.get("paid_on")
    return json.dumps(
        {"creditor": row["creditor"], "case_id": row["case_id"], "amount": row.get("amount"),
         "paid_on": paid_on.isoformat() if paid_on else None, "settled": bool(row["settled"])},
        separators=(",", ":"),
    )


def repayment_from_json(text: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(text)
    d["paid_on"] = date.fromisoformat(d["paid_on"]) if d["paid_on"] else None
    return d
