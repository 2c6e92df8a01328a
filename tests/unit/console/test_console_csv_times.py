"""The console's CSV export writes times as the page shows them: to the second, in the display zone."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from dialer.console.blocked_pages import _csv_stream
from dialer.console.ports import DecisionRow

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def one(row: DecisionRow) -> AsyncIterator[DecisionRow]:
    yield row


async def test_csv_times_are_whole_seconds_in_the_display_zone_even_when_stored_with_microseconds() -> None:
    row = DecisionRow(
        decision_id="d-1", at=datetime(2026, 11, 24, 2, 0, 5, 731_204, tzinfo=timezone.utc), creditor="bank-a",
        case_id="C-1", agent_id="col-a", number_masked="138****0001", channel="api", allowed=False,
        rule_id="cap.number_hourly", reason="cap", reason_zh="上限", policy_version="v1",
        next_allowed_at=datetime(2026, 11, 24, 3, 0, 6, tzinfo=timezone.utc),
    )
    body = b"".join([chunk async for chunk in _csv_stream(one(row), SHANGHAI)]).decode("utf-8-sig")
    (line,) = list(csv.DictReader(io.StringIO(body)))
    assert line["time"] == "2026-11-24T10:00:05+08:00"
    assert line["next_allowed_at"] == "2026-11-24T11:00:06+08:00"
