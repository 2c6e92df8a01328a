"""Test data the suites share: case documents as `POST /v1/cases:import` takes them,
users with their roles and creditors, the creditors' policy, and the fixed test time.

A test that needs other data says so where it builds it (`case_doc(..., status="paused")`,
`users("col-a", "data-a")`), so what it depends on stays visible in the test.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)  # inside every default calling window

# Every user a suite signs in as: name → (role, creditors). Collectors, data staff,
# QA and compliance see one creditor; the PBX line serves both; admins none.
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "col-a": ("collector", ("bank-a",)),
    "col-a2": ("collector", ("bank-a",)),
    "col-b": ("collector", ("bank-b",)),
    "sup-a": ("supervisor", ("bank-a",)),
    "qa-a": ("qa", ("bank-a",)),
    "qa-b": ("qa", ("bank-b",)),
    "comp-a": ("compliance", ("bank-a",)),
    "comp-b": ("compliance", ("bank-b",)),
    "data-a": ("data", ("bank-a",)),
    "data-b": ("data", ("bank-b",)),
    "pbx": ("pbx", ("bank-a", "bank-b")),
    "admin": ("admin", ()),
    "admin2": ("admin", ()),
}

User = tuple[str, str, tuple[str, ...]]


def users(*names: str) -> tuple[User, ...]:
    """`(name, role, creditors)` for each of `names`, in that order (a name the roster
    does not know is a KeyError, so a typo fails at once)."""
    return tuple((name, *ROLES[name]) for name in names)


def case_doc(case_id: str, creditor: str, agent: str, *contacts: str | tuple[str, str], **fields: Any) -> dict[str, Any]:
    """An active case commissioned from 2026-11-01 to 2027-01-31 (around `TUESDAY_10AM`).

    A contact is a number (the debtor's own, relation "self") or `(number, relation)`;
    `fields` replace or add document fields (`status="paused"`, `debtor_name=...`)."""
    return {
        "case_id": case_id,
        "creditor": creditor,
        "debtor_name": "张三",
        "status": "active",
        "commission_start": "2026-11-01",
        "commission_end": "2027-01-31",
        "assigned_agent": agent,
        "flags": [],
        "amount_due": "1000.00",
        "overdue_days": 40,
        "contacts": [{"number": c, "relation": "self"} if isinstance(c, str) else {"number": c[0], "relation": c[1]}
                     for c in contacts],
        **fields,
    }


def commissioned_around(today: date, days: int = 10) -> dict[str, str]:
    """A commission period around `today`, for a service that runs on the wall clock."""
    return {"commission_start": (today - timedelta(days=days)).isoformat(),
            "commission_end": (today + timedelta(days=days)).isoformat()}


def one_case(case_id: str, creditor: str, agent: str, number: str) -> dict[str, Any]:
    """The fewest fields an import takes: one number, commissioned around today (the
    store suites run `dialgate serve` on the wall clock)."""
    return {
        "case_id": case_id, "creditor": creditor, "debtor_name": "并发测试", "status": "active",
        **commissioned_around(date.today()),
        "assigned_agent": agent, "contacts": [{"number": number, "relation": "self"}],
    }


# Every creditor may be called at any hour on any day: a test on the wall clock then
# decides the same way whenever it runs.
ALL_DAY_POLICY = '[policy]\ncn_holidays = false\nwindow = { start = "00:00", end = "24:00" }\n'
