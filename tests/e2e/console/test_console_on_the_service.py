"""The console over the real gate service (SQLite file, real decision log), in-process.

The truth each page is checked against is the service's own JSON API on the same data.
"""

from __future__ import annotations

import csv
import io
import re

from console_seed import Seeded


def ids(html: str) -> list[str]:
    return re.findall(r'<tr data-decision="([^"]+)"', html)


async def all_pages(c, url: str) -> list[str]:
    seen: list[str] = []
    while url:
        html = (await c.get(url)).text
        seen += ids(html)
        m = re.search(r'id="next-page" href="([^"]+)"', html)
        url = m.group(1).replace("&amp;", "&") if m else ""
    return seen


async def test_blocked_table_pages_through_exactly_the_services_blocked_dials(service: Seeded):
    truth = [i["decision_id"] for i in await service.blocked_api("comp-a")]
    assert len(truth) > 10  # more than one console page
    async with service.console("comp-a") as c:
        first = (await c.get("/console/blocked")).text
        assert f"共 {len(truth)} 条" in first
        assert await all_pages(c, "/console/blocked") == truth


async def test_each_filter_matches_the_services_answer(service: Seeded):
    async with service.console("comp-a") as c:
        for params, api in [
            ({"agent": "col-a2"}, {"agent": "col-a2"}),
            ({"rule": "window.outside_hours"}, {"rule_id": "window.outside_hours"}),
            ({"case": "C-2"}, {"case_id": "C-2"}),
            ({"from": "2026-11-24", "to": "2026-11-24", "rule": "cap.number_hourly"}, {"rule_id": "cap.number_hourly"}),
        ]:
            truth = [i["decision_id"] for i in await service.blocked_api("comp-a", **api)]
            assert truth, params
            url = "/console/blocked?" + "&".join(f"{k}={v}" for k, v in params.items())
            assert await all_pages(c, url) == truth, params


async def test_a_date_range_without_blocks_is_empty_and_says_so(service: Seeded):
    async with service.console("comp-a") as c:
        html = (await c.get("/console/blocked", params={"from": "2026-11-20", "to": "2026-11-23"})).text
        assert ids(html) == [] and "没有符合条件的拦截记录" in html


async def test_csv_export_is_exactly_the_filtered_rows(service: Seeded):
    truth = await service.blocked_api("comp-a", agent="col-a")
    async with service.console("comp-a") as c:
        r = await c.get("/console/blocked.csv", params={"from": "2026-11-24", "to": "2026-11-25", "agent": "col-a"})
        assert r.status_code == 200
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["decision_id"] for row in rows] == [i["decision_id"] for i in truth]
    assert [row["rule_id"] for row in rows] == [i["rule_id"] for i in truth]
    assert [row["number"] for row in rows] == [i["number"] for i in truth]
    assert all("****" in row["number"] for row in rows)


async def test_charts_count_what_the_service_counts(service: Seeded):
    truth = await service.blocked_api("comp-a")
    async with service.console("comp-a") as c:
        html = (await c.get("/console/blocked")).text
    per_day = sum(int(n) for n in re.findall(r'data-day="[^"]+" data-rule="[^"]+" data-count="(\d+)"', html))
    assert per_day == len(truth)
    cells = re.findall(r'data-agent="([^"]+)" data-rule="([^"]+)" data-count="(\d+)"', html)
    by_agent: dict[str, int] = {}
    for agent, _, n in cells:
        by_agent[agent] = by_agent.get(agent, 0) + int(n)
    expected: dict[str, int] = {}
    for i in truth:
        expected[i["agent_id"]] = expected.get(i["agent_id"], 0) + 1
    assert by_agent == expected


async def test_decision_page_shows_every_check_the_policy_version_and_earliest_time(service: Seeded):
    d = (await service.blocked_api("comp-a", rule_id="window.outside_hours"))[0]
    async with service.console("comp-a") as c:
        html = (await c.get(f"/console/decisions/{d['decision_id']}")).text
    assert len(d["checks"]) > 5
    for check in d["checks"]:
        assert f"<code>{check['rule_id']}</code>" in html
    assert html.count("✕") == sum(1 for ch in d["checks"] if not ch["passed"])
    assert d["policy_version"] in html
    assert re.search(r'id="earliest">2026-11-25 08:00:00<', html)
    assert "inputs" in html


async def test_case_page_shows_masked_contacts_timeline_outcome_and_next_action(service: Seeded):
    api = (await service.client.get("/v1/cases/C-1", headers=service.auth("comp-a"))).json()
    async with service.console("qa-a") as c:
        html = (await c.get("/console/cases/bank-a/C-1")).text
    assert "138****0001" in html and "139****0002" in html
    assert "13800000001" not in html
    assert "客户承诺周五还款 500 元" in html and "本人接通" in html
    assert api["next_action"]["date"] in html
    blocked_here = [i["decision_id"] for i in await service.blocked_api("comp-a", case_id="C-1")]
    for did in blocked_here:
        assert did in html
    assert html.count('class="allowed"') == 2


async def test_another_creditors_pages_are_not_found(service: Seeded):
    b_decision = (await service.blocked_api("comp-b"))[0]["decision_id"]
    async with service.console("comp-a") as c:
        assert (await c.get("/console/cases/bank-b/B-1")).status_code == 404
        assert (await c.get(f"/console/decisions/{b_decision}")).status_code == 404
        assert (await c.get("/console/blocked", params={"creditor": "bank-b"})).status_code == 404
        assert b_decision not in (await c.get("/console/blocked")).text
    async with service.console("comp-b") as c:
        assert (await c.get(f"/console/decisions/{b_decision}")).status_code == 200


async def test_a_collector_token_does_not_open_the_console(service: Seeded):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://gate") as c:
        page = await c.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = await c.post("/console/sign-in", data={"csrf": csrf, "token": service.tokens["col-a"]})
        assert r.status_code == 403
        assert (await c.get("/console/blocked")).status_code == 303


async def test_health_strip_reports_the_store(service: Seeded):
    async with service.console("comp-a") as c:
        html = (await c.get("/console/")).text
    assert re.search(r'data-component="store">\s*<span class="dot" aria-hidden="true">●</span>\s*案件库: <strong>正常</strong>', html)


async def test_a_case_legal_hold_placed_through_the_api_shows_on_the_case_page(service: Seeded):
    async with service.console("qa-a") as c:
        assert 'id="legal-hold"' not in (await c.get("/console/cases/bank-a/C-1")).text
    r = await service.client.post(
        "/v1/cases/C-1/legal-hold", json={"reason": "投诉 #2026-118", "creditor": "bank-a"}, headers=service.auth("sup-a")
    )
    assert r.status_code == 200, r.text
    async with service.console("qa-a") as c:
        html = (await c.get("/console/cases/bank-a/C-1")).text
    banner = re.search(r'<p class="banner hold"[^>]*id="legal-hold">(.*?)</p>', html, re.S)
    assert banner and "投诉 #2026-118" in banner.group(1) and "sup-a" in banner.group(1)


async def test_the_audit_chain_item_reports_the_verified_log(service: Seeded):
    async with service.console("comp-a") as c:
        await c.get("/console/")  # starts the background verification
        task = service.app.state.console[1]._audit_task
        report = await task  # wait on the verification itself, not on time
        assert report.ok
        html = (await c.get("/console/")).text
    n = sum(report.chains.values())
    assert n > 0
    assert f'<li class="h-ok" title="{n} records verified" data-component="audit_chain">' in html


async def test_an_edited_decision_record_turns_the_audit_chain_item_red(service: Seeded):
    from sqlalchemy import select, update

    from adapters.db import tables

    svc = service.app.state.services
    async with svc.store.write() as uow:
        row = (await uow.conn.execute(
            select(tables.decisions.c.id, tables.decisions.c.record).order_by(tables.decisions.c.id).limit(1))).first()
        await uow.conn.execute(
            update(tables.decisions).where(tables.decisions.c.id == row[0])
            .values(record=row[1] + " ")  # one byte more: the stored hash no longer matches
        )
    async with service.console("comp-a") as c:
        await c.get("/console/")
        report = await service.app.state.console[1]._audit_task
        assert not report.ok and report.problems[0].kind == "edited"
        html = (await c.get("/console/")).text
    item = re.search(r'<li class="h-down" title="([^"]+)" data-component="audit_chain">', html)
    assert item and item.group(1).startswith("edited at bank-a seq 1")
    assert "审计链校验: <strong>故障</strong>" in html


async def test_counts_and_charts_stay_exact_as_new_decisions_arrive(service: Seeded):
    """The chart counts are kept up to date from the rows appended since the last view;
    new blocked dials, allowed dials and another creditor's blocks must all land right."""

    async def view(c, **params: str) -> tuple[int, int, dict[str, int]]:
        html = (await c.get("/console/blocked", params=params)).text
        total = int(re.search(r'id="result-count"[^>]*>共 (\d+) 条<', html).group(1))
        per_day = sum(int(n) for n in re.findall(r'data-day="[^"]+" data-rule="[^"]+" data-count="(\d+)"', html))
        cells: dict[str, int] = {}
        for agent, _, n in re.findall(r'data-agent="([^"]+)" data-rule="([^"]+)" data-count="(\d+)"', html):
            cells[agent] = cells.get(agent, 0) + int(n)
        return total, per_day, cells

    def expected(items: list[dict]) -> tuple[int, int, dict[str, int]]:
        by_agent: dict[str, int] = {}
        for i in items:
            by_agent[i["agent_id"]] = by_agent.get(i["agent_id"], 0) + 1
        return len(items), len(items), by_agent

    async with service.console("comp-a") as c:
        assert await view(c) == expected(await service.blocked_api("comp-a"))
        assert await view(c, agent="col-a") == expected(await service.blocked_api("comp-a", agent="col-a"))
        await service.dial("col-a", "C-2", "13700000003")  # blocked: not assigned
        await service.dial("col-a", "C-1", "13900000002")  # Wednesday 10:00: allowed
        await service.dial("col-b", "B-1", "18600000006")  # another creditor
        service.clock.advance(minutes=1)
        await service.dial("col-a2", "C-2", "13600000000")  # blocked: not on the list
        assert await view(c) == expected(await service.blocked_api("comp-a"))
        assert await view(c, agent="col-a") == expected(await service.blocked_api("comp-a", agent="col-a"))
    cached = service.app.state.console[1]._summaries
    assert cached and all(top == max(top for top, _, _ in cached.values()) for top, _, _ in cached.values())


async def test_recordings_of_a_case_filter_by_agent_number_and_date_through_the_vault(service: Seeded):
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)
    r = await service.client.post(
        "/v1/recordings",
        params={"attempt_id": service.attempts[0], "started_at": "2026-11-24T10:00:05+08:00", "duration": "1"},
        headers={**service.auth("pbx"), "Content-Type": "audio/wav"}, content=buf.getvalue(),
    )
    assert r.status_code == 201, r.text
    rid = r.json()["recording_id"]
    base = "/console/cases/bank-a/C-1/recordings"
    async with service.console("qa-a") as c:
        shown = lambda html: f'data-recording="{rid}"' in html  # noqa: E731
        assert shown((await c.get(base)).text)
        assert shown((await c.get(base, params={"number": "13800000001"})).text)  # full number: exact match
        assert shown((await c.get(base, params={"number": "0001"})).text)  # digits of the masked number
        assert not shown((await c.get(base, params={"number": "13900000002"})).text)
        assert shown((await c.get(base, params={"agent": "col-a"})).text)
        assert not shown((await c.get(base, params={"agent": "col-a2"})).text)
        assert shown((await c.get(base, params={"from": "2026-11-24", "to": "2026-11-24"})).text)
        assert not shown((await c.get(base, params={"from": "2026-11-25"})).text)
        case_html = (await c.get("/console/cases/bank-a/C-1")).text
        assert f'href="/console/recordings/{rid}"' in case_html  # linked from its attempt on the timeline
    async with service.console("comp-b") as c:
        assert (await c.get(f"/console/recordings/{rid}")).status_code == 404


async def test_each_days_bar_counts_that_local_days_blocked_dials_per_rule(service: Seeded):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    sh = ZoneInfo("Asia/Shanghai")
    assert (await service.dial("col-a", "C-2", "13700000003")).status_code == 403  # Wednesday 10:00
    expected: dict[tuple[str, str], int] = {}
    for i in await service.blocked_api("comp-a"):
        key = (datetime.fromisoformat(i["at"]).astimezone(sh).date().isoformat(), i["rule_id"])
        expected[key] = expected.get(key, 0) + 1
    assert {day for day, _ in expected} == {"2026-11-24", "2026-11-25"}
    async with service.console("comp-a") as c:
        for params in ({}, {"from": "2026-11-24", "to": "2026-11-25"}, {"from": "", "to": ""}):
            html = (await c.get("/console/blocked", params=params)).text
            bars = {(day, rule): int(n) for day, rule, n in
                    re.findall(r'data-day="([^"]+)" data-rule="([^"]+)" data-count="(\d+)"', html)}
            assert bars == expected, params


async def test_a_dial_blocked_at_ring_time_is_listed_by_the_console_exactly_as_by_the_api(service: Seeded):
    """The creditor pauses a case between the agent's click and the ring: the PBX's
    recheck is blocked. The console's table, count, charts and CSV list that recheck as
    the JSON API does, labelled as a recheck; an allowed recheck and a what-if check are
    never listed; another creditor's reviewer does not see it."""
    from sqlalchemy import select

    from adapters.db import tables as t
    from adapters.pbx.service import PBX_ACTOR
    from tests.support.builders import case_doc

    gate = service.app.state.services.gate

    def total(html: str) -> int:
        return int(re.search(r'id="result-count"[^>]*>共 (\d+) 条<', html).group(1))

    def charted(html: str) -> int:
        return sum(int(n) for n in re.findall(r'data-day="[^"]+" data-rule="[^"]+" data-count="(\d+)"', html))

    async with service.console("comp-a") as c:
        # Viewed once before: the counts are then brought up to date from the rows
        # appended since (the Python matcher), not recounted in SQL.
        before = (await c.get("/console/blocked")).text
        assert total(before) == len(await service.blocked_api("comp-a"))

        r = await service.dial("col-a", "C-1", "13900000002")  # Wednesday 10:00: allowed
        assert r.status_code == 201, r.text
        attempt = r.json()["attempt_id"]
        assert (await gate.recheck_attempt(attempt, PBX_ACTOR)).allowed  # nothing changed: it rings
        r = await service.client.post("/v1/dial-checks", headers=service.auth("col-a"),
                                      json={"case_id": "C-2", "number": "13700000003", "agent_id": "col-a"})
        assert r.status_code == 200 and r.json()["allowed"] is False, r.text  # a what-if answer: nobody dialled
        r = await service.client.post("/v1/cases:import", headers=service.auth("data-a"), json={"cases": [
            case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), ("13900000002", "family"), status="paused"),
        ]})
        assert r.status_code == 200, r.text
        service.clock.advance(seconds=20)
        rung = await gate.recheck_attempt(attempt, PBX_ACTOR)  # the PBX asks again at ring time
        assert not rung.allowed and rung.rule_id == "case.paused"

        truth = await service.blocked_api("comp-a")
        rechecks = [i for i in truth if i["kind"] == "recheck"]
        assert [(i["rule_id"], i["case_id"], i["allowed"]) for i in rechecks] == [("case.paused", "C-1", False)]
        recheck_id = rechecks[0]["decision_id"]
        async with service.app.state.services.store.read() as uow:
            d = t.decisions.c
            never = {
                (kind, allowed): did
                for did, kind, allowed in await uow.conn.execute(
                    select(d.decision_id, d.kind, d.allowed).where(d.kind.in_(("check", "recheck")))
                )
            }
        assert set(never) == {("check", False), ("recheck", True), ("recheck", False)}
        never = {never[("check", False)], never[("recheck", True)]}

        html = (await c.get("/console/blocked")).text
        assert total(html) == charted(html) == len(truth)
        shown = await all_pages(c, "/console/blocked")
        assert shown == [i["decision_id"] for i in truth]
        assert recheck_id in shown and not never & set(shown)
        row = re.search(rf'<tr data-decision="{recheck_id}">(.*?)</tr>', html, re.S).group(1)
        assert 'data-kind="recheck"' in row and ">振铃复核<" in row
        page = (await c.get(f"/console/decisions/{recheck_id}")).text
        assert re.search(r'id="kind" data-kind="recheck"[^>]*>振铃复核<', page)
        assert "case.paused" in page
        dial_row = re.search(rf'<tr data-decision="{truth[1]["decision_id"]}">(.*?)</tr>', html, re.S).group(1)
        assert truth[1]["kind"] == "dial" and 'data-kind="dial"' in dial_row and ">拨号<" in dial_row

        for params, api in [({"case": "C-1"}, {"case_id": "C-1"}), ({"rule": "case.paused"}, {"rule_id": "case.paused"}),
                            ({"agent": "col-a", "from": "2026-11-25", "to": "2026-11-25"},
                             {"agent": "col-a", "from": "2026-11-25T00:00:00+08:00", "to": "2026-11-26T00:00:00+08:00"})]:
            want = [i["decision_id"] for i in await service.blocked_api("comp-a", **api)]
            assert recheck_id in want, params
            page = (await c.get("/console/blocked", params=params)).text
            assert total(page) == charted(page) == len(want), params
            url = "/console/blocked?" + "&".join(f"{k}={v}" for k, v in params.items())
            assert await all_pages(c, url) == want, params

        # The case page's timeline lists the case's attempts (the recheck's attempt once, as
        # allowed when dialled) and links to the review of the case, where the recheck is.
        case_page = (await c.get("/console/cases/bank-a/C-1")).text
        assert recheck_id not in case_page
        link = re.search(r'id="case-blocked" href="([^"]+)"', case_page).group(1).replace("&amp;", "&")
        assert await all_pages(c, link) == [i["decision_id"] for i in await service.blocked_api("comp-a", case_id="C-1")]
        assert recheck_id in await all_pages(c, link)

        r = await c.get("/console/blocked.csv")
        assert r.status_code == 200
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert [(row["decision_id"], row["kind"]) for row in rows] == [(i["decision_id"], i["kind"]) for i in truth]
        assert not never & {row["decision_id"] for row in rows}

        c.cookies.set("dg_lang", "en")
        row = re.search(rf'<tr data-decision="{recheck_id}">(.*?)</tr>', (await c.get("/console/blocked")).text, re.S).group(1)
        assert ">PBX recheck<" in row

    assert recheck_id not in {i["decision_id"] for i in await service.blocked_api("comp-b")}
    async with service.console("comp-b") as c:
        assert recheck_id not in await all_pages(c, "/console/blocked")
        csv_text = (await c.get("/console/blocked.csv")).content.decode("utf-8-sig")
        assert recheck_id not in csv_text and "bank-a" not in csv_text
        assert (await c.get("/console/blocked", params={"creditor": "bank-a"})).status_code == 404


async def test_case_page_shows_the_case_history_as_the_api_lists_it(service: Seeded):
    r = await service.client.post("/v1/cases/C-1/pause", headers=service.auth("sup-a"),
                                  json={"reason": "银行通知停催"})
    assert r.status_code == 200, r.text
    api = (await service.client.get("/v1/cases/C-1/history", headers=service.auth("comp-a"))).json()["items"]
    async with service.console("qa-a") as c:
        html = (await c.get("/console/cases/bank-a/C-1")).text
    assert "案件变更记录" in html
    section = html.split('id="history"')[1].split("</table>")[0]
    seqs = [int(s) for s in re.findall(r"<tr>\s*<td>(\d+)</td>", section)]
    assert seqs == [e["seq"] for e in reversed(api)]  # newest first, every entry
    assert "银行通知停催" in section and "sup-a · supervisor" in section and "接口操作" in section
    assert "13800000001" not in section


async def test_the_supervisors_worklist_shows_missed_first_calls_and_each_agents_due_cases(service: Seeded):
    service.clock.advance(days=2)  # Friday: C-2 never called (first call due Thursday), C-1's promise follow-up due
    api = (await service.client.get("/v1/worklist", headers=service.auth("sup-a"))).json()["items"]
    assert [(i["case_id"], bool(i["first_call"])) for i in api] == [("C-2", True), ("C-1", False)]
    async with service.console("sup-a") as c:
        html = (await c.get("/console/worklist")).text
    missed = html.split('id="overdue-first-calls"')[1].split("</table>")[0]
    assert ">C-2</a>" in missed and "col-a2" in missed and "2026-11-26" in missed and ">C-1<" not in missed
    due = html.split('data-agent="col-a"')[1].split("</table>")[0]
    assert ">C-1</a>" in due and "承诺还款" in due
    async with service.console("qa-a") as c:
        assert (await c.get("/console/worklist")).status_code == 403


async def test_filters_in_year_1_or_9999_and_forged_cursors_are_4xx_pages_never_5xx(service: Seeded):
    async with service.console("comp-a") as c:
        for params in ({"from": "0001-01-01"}, {"to": "9999-12-31"}, {"from": "0001-01-01", "to": "9999-12-31"}):
            r = await c.get("/console/blocked", params=params)
            assert r.status_code == 400, (params, r.status_code)
            r = await c.get("/console/blocked.csv", params=params)
            assert r.status_code == 400, (params, r.status_code)
        for cursor in ("00010101T000000.000000~1", "20261124T000000.000000~" + "9" * 40):
            r = await c.get("/console/blocked", params={"cursor": cursor})
            assert 400 <= r.status_code < 500, (cursor, r.status_code)
        r = await c.get("/console/destruction-register", params={"cursor": "9" * 5000})
        assert 400 <= r.status_code < 500, r.status_code


async def _signed_in(c) -> bool:  # type: ignore[no-untyped-def]
    r = await c.get("/console/")
    return r.status_code == 200 and "/console/sign-out" in r.text


async def test_a_signed_out_sessions_cookie_no_longer_signs_anyone_in(service: Seeded):
    async with service.console("comp-a") as c:
        assert await _signed_in(c)
        kept = dict(c.cookies)  # what a thief copied before the user signed out
        page = (await c.get("/console/blocked")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = await c.post("/console/sign-out", data={"csrf": csrf})
        assert r.status_code == 303
        assert not await _signed_in(c)
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://gate",
                                 cookies=kept) as thief:
        assert not await _signed_in(thief)


async def test_disabling_a_user_ends_their_console_session_at_the_next_page(service: Seeded):
    from dialer.auth import USERS_REVISION_FILE, UserAdmin, UsersRevision

    svc = service.app.state.services
    admin = UserAdmin(svc.store, svc.clock, UsersRevision(svc.config.paths.data_dir / USERS_REVISION_FILE))
    async with service.console("qa-a") as c:
        assert await _signed_in(c)
        await admin.set_disabled("qa-a", True)
        assert not await _signed_in(c)


async def test_rotating_a_token_ends_the_console_sessions_it_opened_and_enable_does_not_revive_them(service: Seeded):
    from dialer.auth import USERS_REVISION_FILE, UserAdmin, UsersRevision

    svc = service.app.state.services
    admin = UserAdmin(svc.store, svc.clock, UsersRevision(svc.config.paths.data_dir / USERS_REVISION_FILE))
    async with service.console("comp-a") as c:
        assert await _signed_in(c)
        service.clock.advance(seconds=1)
        service.tokens["comp-a"] = await admin.rotate_token("comp-a")
        assert not await _signed_in(c)  # the session the old token opened
    async with service.console("comp-a") as c:  # the new token signs in
        assert await _signed_in(c)
        service.clock.advance(seconds=1)
        await admin.set_disabled("comp-a", True)
        await admin.set_disabled("comp-a", False)
        assert not await _signed_in(c)


async def test_the_holiday_item_is_off_without_cn_holidays_and_amber_when_next_years_arrangement_is_missing(
    service: Seeded,
):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from policy import load_policy

    async with service.console("comp-a") as c:
        html = (await c.get("/console/")).text
    assert re.search(r'<li class="h-off" title="[^"]*" data-component="holidays">', html)
    # 25 days before 2027, whose arrangement is not built in (sign in again at that time).
    service.app.state.services.policies = load_policy({"creditors": {"bank-a": {"cn_holidays": True}}})
    service.clock.set(datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    async with service.console("comp-a") as c:
        html = (await c.get("/console/")).text
    item = re.search(r'<li class="h-degraded" title="([^"]+)" data-component="holidays">', html)
    assert item and "2027" in item.group(1)
    assert "节假日安排: <strong>降级</strong>" in html


async def test_numbers_typed_into_a_note_are_masked_on_the_case_page(service: Seeded):
    r = await service.client.post(f"/v1/attempts/{service.attempts[1]}/outcome", headers=service.auth("col-a"), json={
        "disposition": "connected_self", "note": "客户新号码13912345678，身份证11010519491231002X"})
    assert r.status_code == 201, r.text
    async with service.console("qa-a") as c:
        html = (await c.get("/console/cases/bank-a/C-1")).text
    assert "客户新号码139****5678，身份证**************002X" in html
    assert "13912345678" not in html and "11010519491231002X" not in html


async def test_token_guesses_at_the_api_and_the_sign_in_form_share_one_allowance(service: Seeded):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://gate") as c:
        page = (await c.get("/console/sign-in")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        for i in range(10):
            r = await c.get("/v1/worklist", headers={"Authorization": f"Bearer dg_guess{i}"})
            assert r.status_code == 401
            r = await c.post("/console/sign-in", data={"csrf": csrf, "token": f"dg_guess{i}"})
            assert r.status_code == 401
        r = await c.post("/console/sign-in", data={"csrf": csrf, "token": service.tokens["comp-a"]})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert (await c.get("/v1/worklist", headers=service.auth("comp-a"))).status_code == 429


async def test_card_and_id_numbers_in_a_console_access_reason_reach_neither_the_audio_link_nor_the_access_log(
        service: Seeded):
    import base64
    from urllib.parse import parse_qs, urlsplit

    from recordings.testing import wav_bytes

    r = await service.client.post(
        "/v1/recordings", params={"attempt_id": service.attempts[0], "duration": "1"},
        headers={**service.auth("pbx"), "Content-Type": "audio/wav"}, content=wav_bytes(1.0),
    )
    assert r.status_code == 201, r.text
    rid = r.json()["recording_id"]
    async with service.console("qa-a") as c:
        page = (await c.get(f"/console/recordings/{rid}")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = await c.post(f"/console/recordings/{rid}/listen",
                         data={"csrf": csrf, "reason": "投诉核查 卡号 4111 1111 1111 1111 身份证11010519491231002X"})
        assert r.status_code == 303
        grant = parse_qs(urlsplit(r.headers["location"]).query)["grant"][0]
        assert (await c.get(f"/console/recordings/{rid}/audio", params={"grant": grant})).status_code == 200
    carried = b"".join(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in grant.split(".") if p.isascii()
                       and re.fullmatch(r"[A-Za-z0-9_-]+", p))
    assert b"4111 1111" not in carried and b"11010519491231002X" not in carried  # the link is signed, not sealed
    entries = await service.svc.vault.repo.access_log(rid)
    assert [e.reason for e in entries] == ["投诉核查 卡号 ************1111 身份证**************002X"]
