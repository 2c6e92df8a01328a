"""Every console page, fuzzed like the API (tests/e2e/api/test_api_fuzz.py): hostile path
and query values, Range headers and form posts from a signed-in compliance user. Never a
5xx, and a 4xx wrote nothing."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from adapters.db import tables
from console_seed import Seeded

HOSTILE = [
    "", "0", "-1", "9" * 40, "9" * 5000, "NaN", "0001-01-01", "9999-12-31", "2026-11-24", "2026-13-45",
    "\x00", "\x1b[2J", "../../etc/passwd", "' OR 1=1 --", "<script>x</script>", "C-1", "bank-a", "bank-b",
    "13800000001", "%", "a" * 3000, "00010101T000000.000000~1", "20261124T000000.000000~" + "9" * 40,
]
GETS = [
    ("/console/", []), ("/console/case", ["creditor", "case_id"]),
    ("/console/blocked", ["from", "to", "creditor", "agent", "rule", "case", "cursor"]),
    ("/console/blocked.csv", ["from", "to", "creditor", "agent", "rule", "case"]),
    ("/console/decisions/{x}", []), ("/console/cases/{x}/{y}", []),
    ("/console/cases/{x}/{y}/recordings", ["agent", "number", "from", "to"]),
    ("/console/recordings/{x}", ["grant"]), ("/console/recordings/{x}/audio", ["grant"]),
    ("/console/recordings/{x}/access-log", []), ("/console/destruction-register", ["cursor"]),
    ("/console/purges", ["done"]), ("/console/lang", ["to", "next"]), ("/console/sign-in", ["next"]),
    ("/console/static/{x}", []),
]
# The filter pages parse the most: drawn more often.
GETS += [g for g in GETS if g[0] in ("/console/blocked", "/console/blocked.csv", "/console/cases/{x}/{y}/recordings")] * 2
POSTS = ["/console/recordings/{x}/listen", "/console/purges/{x}/approve"]
DATES = ["0001-01-01", "9999-12-31", "2026-11-24", "2026-13-45", "2026-11-24T10:00:00+08:00", "1999-12-31"]
value = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30))
date_value = st.one_of(st.sampled_from(DATES), st.sampled_from(DATES), st.sampled_from(DATES), value)


async def _rows(service: Seeded) -> dict[str, int]:
    store = service.app.state.services.store
    async with store.read() as uow:
        return {name: (await uow.conn.execute(select(func.count()).select_from(getattr(tables, name)))).scalar_one()
                for name in ("cases", "attempts", "decisions", "audit_log", "users")}


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_every_console_page_answers_hostile_values_without_a_5xx(service: Seeded, data: st.DataObject) -> None:
    async with service.console("comp-a") as c:
        before = await _rows(service)
        if data.draw(st.integers(0, 4)) == 0:
            path = data.draw(st.sampled_from(POSTS))
            page = (await c.get("/console/")).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            url = path.replace("{x}", quote(data.draw(value) or "x", safe=""))
            r = await c.post(url, data={"csrf": csrf, "reason": data.draw(value)})
        else:
            path, names = data.draw(st.sampled_from(GETS))
            url = path.replace("{x}", quote(data.draw(value) or "x", safe="")).replace(
                "{y}", quote(data.draw(value) or "y", safe=""))
            params = {n: data.draw(date_value if n in ("from", "to") else value)
                      for n in names if data.draw(st.booleans())}
            headers: dict[str, Any] = {}
            if path.endswith("/audio") and data.draw(st.booleans()):
                headers["Range"] = data.draw(st.sampled_from(["bytes=" + "9" * 5000 + "-", "bytes=-1", "bytes=5-1"]))
            r = await c.get(url, params=params, headers=headers)
        assert r.status_code < 500, (url, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert await _rows(service) == before, url
