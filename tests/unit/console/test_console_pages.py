"""The console's pages over the in-memory port: sign-in, scope, filters, CSV, audio, purges."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from urllib.parse import parse_qs, urlparse

import pytest
from console_helpers import csrf_of, sign_in

from dialer.console.blocked_pages import CSV_COLUMNS, _cell
from dialer.console.ports import HEALTH_COMPONENTS
from dialer.console.recording_pages import _parse_range
from dialer.console.sample import TOKENS


def rows_of(html: str) -> list[str]:
    return re.findall(r'<tr data-decision="([^"]+)"', html)


def blocked_ids(queries, *, creditors, **match) -> list[str]:
    """What the table must hold, computed from the seeded data directly."""
    out = []
    for d in queries.decisions:
        r = d.row
        if r.allowed or r.creditor not in creditors:
            continue
        if any(getattr(r, k) != v for k, v in match.items() if k != "days"):
            continue
        if "days" in match:
            lo, hi = match["days"]
            if not lo <= r.at.date() <= hi:
                continue
        out.append(r)
    out.sort(key=lambda r: (r.at, r.decision_id), reverse=True)
    return [r.decision_id for r in out]


# -- sign-in and session ----------------------------------------------------------

async def test_pages_redirect_to_sign_in_and_come_back_after_it(client):
    r = await client.get("/console/blocked?rule=window.night")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/console/sign-in?next=")
    target = parse_qs(urlparse(r.headers["location"]).query)["next"][0]
    assert target == "/console/blocked?rule=window.night"
    r = await sign_in(client, "compliance-a", target)
    assert r.status_code == 303 and r.headers["location"] == target
    assert (await client.get(target)).status_code == 200


async def test_session_cookie_is_httponly_strict_and_not_secure_on_plain_http(client):
    r = await client.get("/console/sign-in")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("dg_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie.split("; ")


async def test_session_cookie_is_secure_behind_a_tls_proxy(client):
    r = await client.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.headers["set-cookie"].split("; ")


async def test_sign_in_without_the_csrf_token_is_refused_and_signs_nobody_in(client):
    await client.get("/console/sign-in")
    r = await client.post("/console/sign-in", data={"token": TOKENS["compliance-a"]})
    assert r.status_code == 403
    assert (await client.get("/console/blocked")).status_code == 303


async def test_a_wrong_token_is_refused_in_the_users_language(client):
    page = await client.get("/console/sign-in")
    r = await client.post("/console/sign-in", data={"csrf": csrf_of(page.text), "token": "tok-nope"})
    assert r.status_code == 401
    assert "令牌无效" in r.text


async def test_roles_without_a_console_cannot_sign_in(client):
    r = await sign_in(client, "collector-a")
    assert r.status_code == 403
    assert "催收员" in r.text


async def test_sign_in_replaces_the_anonymous_session_id(client):
    page = await client.get("/console/sign-in")
    before = client.cookies["dg_session"]
    await client.post("/console/sign-in", data={"csrf": csrf_of(page.text), "token": TOKENS["qa-a"], "next": "/console/"})
    assert client.cookies["dg_session"] != before


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(client):
    await sign_in(client, "compliance-a")
    home = await client.get("/console/")
    assert (await client.post("/console/sign-out", data={})).status_code == 403
    assert (await client.get("/console/")).status_code == 200
    r = await client.post("/console/sign-out", data={"csrf": csrf_of(home.text)})
    assert r.status_code == 303
    assert (await client.get("/console/blocked")).status_code == 303


async def test_a_user_removed_from_the_store_is_out_on_the_next_request(client, queries):
    await sign_in(client, "compliance-a")
    assert (await client.get("/console/blocked")).status_code == 200
    del queries.tokens[TOKENS["compliance-a"]]
    assert (await client.get("/console/blocked")).status_code == 303


async def test_sessions_expire(client, clock):
    await sign_in(client, "compliance-a")
    for _ in range(16):  # in use twice an hour: the sign-in still ends 8 hours after it began
        clock.t += 29 * 60
        assert (await client.get("/console/blocked")).status_code == 200
    clock.t += 8 * 3600 - 16 * 29 * 60 + 1
    assert (await client.get("/console/blocked")).status_code == 303


async def test_a_sign_in_left_idle_for_half_an_hour_ends_and_one_in_use_does_not(client, clock):
    # A call-floor PC is shared: the next person must not find the last one signed in.
    await sign_in(client, "compliance-a")
    for _ in range(4):
        clock.t += 25 * 60
        assert (await client.get("/console/blocked")).status_code == 200
    clock.t += 30 * 60 + 1
    r = await client.get("/console/blocked")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")


async def test_sign_in_never_redirects_off_the_console(client):
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/other"):
        r = await sign_in(client, "compliance-a", evil)
        assert r.headers["location"] == "/console/", evil
        client.cookies.clear()


async def test_pages_carry_security_headers_and_server_timing(client):
    await sign_in(client, "compliance-a")
    r = await client.get("/console/blocked")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"])


# -- language ----------------------------------------------------------------------

async def test_console_speaks_chinese_by_default_and_english_after_the_switch(client):
    await sign_in(client, "compliance-a")
    zh = await client.get("/console/blocked")
    assert '<html lang="zh-CN">' in zh.text and "拦截记录" in zh.text
    r = await client.get("/console/lang", params={"to": "en", "next": "/console/blocked"})
    assert r.status_code == 303 and r.headers["location"] == "/console/blocked"
    assert "dg_lang=en" in r.headers["set-cookie"]
    en = await client.get("/console/blocked")
    assert '<html lang="en">' in en.text and "Blocked dials" in en.text and "拦截记录" not in en.text


async def test_language_switch_ignores_unknown_languages_and_foreign_targets(client):
    r = await client.get("/console/lang", params={"to": "xx", "next": "https://evil.example"})
    assert r.headers["location"] == "/console/"
    assert "set-cookie" not in r.headers


# -- roles and creditor scope ---------------------------------------------------------

async def test_qa_may_not_open_the_blocked_dial_review(client):
    await sign_in(client, "qa-a")
    r = await client.get("/console/blocked")
    assert r.status_code == 403
    assert "质检" in r.text


async def test_admin_may_review_but_not_listen(client):
    await sign_in(client, "admin")
    assert (await client.get("/console/blocked")).status_code == 200
    assert (await client.get("/console/recordings/rec-a1")).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/console/cases/bank-b/B-2001",
        "/console/decisions/d-00000",  # i % 5 == 0 → bank-b
        "/console/cases/bank-b/B-2001/recordings",
        "/console/blocked?creditor=bank-b",
        "/console/blocked.csv?creditor=bank-b",
        "/console/cases/bank-a/NO-SUCH",
        "/console/decisions/no-such",
        "/console/recordings/no-such",
    ],
)
async def test_another_creditors_ids_are_not_found(client, path):
    await sign_in(client, "compliance-a")
    r = await client.get(path)
    assert r.status_code == 404
    assert "赵六" not in r.text and "bank-b" not in r.text.split("<main", 1)[1].split("</main>")[0]


async def test_the_other_creditors_user_sees_their_own_case_and_not_ours(client):
    await sign_in(client, "compliance-b")
    assert (await client.get("/console/cases/bank-b/B-2001")).status_code == 200
    assert (await client.get("/console/cases/bank-a/A-1001")).status_code == 404
    assert (await client.get("/console/recordings/rec-a1")).status_code == 404


async def test_the_blocked_table_never_shows_another_creditors_rows(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/blocked?from=&to=")).text
    shown = rows_of(html)
    creditor_of = {d.row.decision_id: d.row.creditor for d in queries.decisions}
    assert shown and {creditor_of[i] for i in shown} == {"bank-a"}


# -- blocked dials ----------------------------------------------------------------------

async def test_filters_show_exactly_the_matching_rows_newest_first(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/blocked", params={"from": "2026-11-08", "to": "2026-11-20", "rule": "window.night", "agent": "agent-01"})).text
    expected = blocked_ids(queries, creditors={"bank-a"}, rule_id="window.night", agent_id="agent-01", days=(date(2026, 11, 8), date(2026, 11, 20)))
    assert 0 < len(expected) <= 20
    assert rows_of(html) == expected
    assert f"共 {len(expected)} 条" in html


async def test_case_filter_narrows_to_one_case(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/blocked", params={"from": "", "to": "", "case": "A-1001"})).text
    assert rows_of(html) == blocked_ids(queries, creditors={"bank-a"}, case_id="A-1001")[:20]


async def test_paging_walks_every_filtered_row_once(client, queries):
    await sign_in(client, "compliance-a")
    expected = blocked_ids(queries, creditors={"bank-a"})
    assert len(expected) > 60
    seen, url = [], "/console/blocked?from=&to="
    while url:
        html = (await client.get(url)).text
        seen += rows_of(html)
        m = re.search(r'id="next-page" href="([^"]+)"', html)
        url = m.group(1).replace("&amp;", "&") if m else None
    assert seen == expected


async def test_default_range_is_the_last_thirty_days(client):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/blocked")).text
    assert 'value="2026-10-22"' in html and 'value="2026-11-20"' in html


async def test_a_bad_date_is_a_clear_error_naming_the_field(client):
    await sign_in(client, "compliance-a")
    r = await client.get("/console/blocked", params={"from": "2026-13-01", "to": "2026-11-20"})
    assert r.status_code == 400
    assert "开始日期不是有效日期（2026-13-01）" in r.text
    assert 'aria-invalid="true"' in r.text
    r = await client.get("/console/blocked", params={"from": "2026-11-20", "to": "2026-11-01"})
    assert r.status_code == 400 and "结束日期早于开始日期" in r.text


async def test_charts_count_the_filtered_rows(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/blocked", params={"from": "", "to": "", "rule": "case.dispute"})).text
    counts = [int(n) for n in re.findall(r'data-day="[^"]+" data-rule="case.dispute" data-count="(\d+)"', html)]
    assert sum(counts) == len(blocked_ids(queries, creditors={"bank-a"}, rule_id="case.dispute"))
    assert html.count('role="img"') == 2


async def test_csv_export_holds_exactly_the_filtered_rows_not_just_one_page(client, queries):
    await sign_in(client, "compliance-a")
    params = {"from": "2026-10-25", "to": "2026-11-20", "rule": "window.night"}
    page = (await client.get("/console/blocked", params=params)).text
    link = re.search(r'id="csv-link" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    r = await client.get(link)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode())
    table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert tuple(table[0]) == CSV_COLUMNS
    expected = blocked_ids(queries, creditors={"bank-a"}, rule_id="window.night", days=(date(2026, 10, 25), date(2026, 11, 20)))
    assert len(expected) > 20  # more than one page
    assert [row[0] for row in table[1:]] == expected
    assert rows_of(page) == expected[:20]
    first = next(d.row for d in queries.decisions if d.row.decision_id == expected[0])
    assert table[1][5] == first.number_masked and table[1][7] == first.reason_zh


def test_csv_cells_that_would_run_as_formulas_are_defused_but_numbers_stay():
    assert _cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert _cell("@SUM(A1)") == "'@SUM(A1)"
    assert _cell("-2+3") == "'-2+3"
    assert _cell("-23") == "-23"
    assert _cell("+cmd|x") == "'+cmd|x"
    assert _cell("+86138****0001") == "+86138****0001"
    assert _cell("张三") == "张三"


async def test_decision_page_lists_every_check_inputs_policy_and_earliest_time(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/decisions/d-night-1")).text
    d = next(x for x in queries.decisions if x.row.decision_id == "d-night-1")
    for c in d.checks:
        assert f"<code>{c.rule_id}</code>" in html
    assert html.count("✕") == 1 and html.count("✓") == len(d.checks) - 1
    assert "policy-2026.11.1" in html
    assert re.search(r'id="earliest">\d{4}-\d\d-\d\d 08:00:00<', html)
    assert "history.number_today" in html and "Asia/Shanghai" in html


# -- case page ------------------------------------------------------------------------

async def test_case_page_shows_masked_contacts_timeline_outcomes_and_hold(client):
    await sign_in(client, "qa-a")
    html = (await client.get("/console/cases/bank-a/A-1001")).text
    assert "138****0001" in html and not re.search(r"1380{3}0001|\+86138", html)
    assert "法律保全" in html and "complaint 投诉 #77" in html
    assert "投诉倾向" in html  # flag
    assert "承诺还款" in html and "客户承诺下周五还款 2000 元。" in html
    assert "2026-11-24" in html  # next action date
    assert html.index("2026-11-18 21:30:00") < html.index("2026-11-17 09:30:00")  # newest first
    assert 'href="/console/recordings/rec-a1"' in html


async def test_case_lookup_form_opens_the_case(client):
    await sign_in(client, "qa-a")
    r = await client.get("/console/case", params={"creditor": "bank-a", "case_id": " A-1001 "})
    assert r.headers["location"] == "/console/cases/bank-a/A-1001"


# -- recordings -------------------------------------------------------------------------

async def listen(client, rid="rec-a1", reason="投诉复核 complaint #77"):
    page = await client.get(f"/console/recordings/{rid}")
    r = await client.post(f"/console/recordings/{rid}/listen", data={"csrf": csrf_of(page.text), "reason": reason})
    return r


async def test_recordings_list_filters_by_agent_number_and_date(client):
    await sign_in(client, "qa-a")
    base = "/console/cases/bank-a/A-1001/recordings"
    assert "rec-a1" in (await client.get(base)).text
    assert "rec-a1" in (await client.get(base, params={"agent": "agent-01", "number": "0001"})).text
    assert "rec-a1" not in (await client.get(base, params={"agent": "agent-02"})).text
    assert "rec-a1" not in (await client.get(base, params={"number": "9999"})).text
    assert "rec-a1" not in (await client.get(base, params={"from": "2026-11-18"})).text
    assert "rec-a1" in (await client.get(base, params={"from": "2026-11-17", "to": "2026-11-17"})).text


async def test_audio_needs_a_reason_first(client, queries):
    await sign_in(client, "qa-a")
    page = (await client.get("/console/recordings/rec-a1")).text
    assert "<audio" not in page and 'name="reason"' in page and "借阅原因" in page
    r = await client.get("/console/recordings/rec-a1/audio")
    assert r.status_code == 403
    r = await listen(client, reason="  x ")
    assert r.status_code == 400 and "至少 4 个字" in r.text
    assert queries.access["rec-a1"] == []


async def test_playing_streams_the_exact_bytes_and_logs_who_why_and_which_range(client, queries):
    await sign_in(client, "qa-a")
    r = await listen(client)
    assert r.status_code == 303
    player = (await client.get(r.headers["location"])).text
    src = re.search(r'<audio id="player"[^>]* src="([^"]+)"', player).group(1).replace("&amp;", "&")
    audio = queries.recordings["rec-a1"][1]
    full = await client.get(src)
    assert full.status_code == 200 and full.content == audio
    part = await client.get(src, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(audio)}"
    assert part.content == audio[1000:2000]
    tail = await client.get(src, headers={"Range": "bytes=-100"})
    assert tail.content == audio[-100:]
    log = queries.access["rec-a1"]
    assert [(e.user, e.reason, e.byte_range) for e in log] == [
        ("qa-a", "投诉复核 complaint #77", f"0-{len(audio) - 1}"),
        ("qa-a", "投诉复核 complaint #77", "1000-1999"),
        ("qa-a", "投诉复核 complaint #77", f"{len(audio) - 100}-{len(audio) - 1}"),
    ]
    fragment = (await client.get("/console/recordings/rec-a1/access-log")).text
    assert fragment.count("<tr>") == 3 and "1000-1999" in fragment


async def test_a_range_past_the_end_is_416_and_logs_nothing(client, queries):
    await sign_in(client, "qa-a")
    r = await listen(client)
    src = r.headers["location"].replace("/console/recordings/rec-a1?", "/console/recordings/rec-a1/audio?")
    size = len(queries.recordings["rec-a1"][1])
    bad = await client.get(src, headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"
    assert queries.access["rec-a1"] == []


async def test_a_grant_is_useless_in_another_session_or_for_another_recording(client, app, queries):
    import httpx

    await sign_in(client, "qa-a")
    r = await listen(client)
    grant = parse_qs(urlparse(r.headers["location"]).query)["grant"][0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as other:
        await sign_in(other, "supervisor-a")
        assert (await other.get("/console/recordings/rec-a1/audio", params={"grant": grant})).status_code == 403
    assert (await client.get("/console/recordings/rec-old/audio", params={"grant": grant})).status_code == 403
    assert queries.access["rec-a1"] == [] and queries.access["rec-old"] == []


def test_range_header_parsing():
    assert _parse_range(None, 100) is None
    assert _parse_range("bytes=0-", 100) == (0, 99)
    assert _parse_range("bytes=10-20", 100) == (10, 20)
    assert _parse_range("bytes=90-500", 100) == (90, 99)
    assert _parse_range("bytes=-10", 100) == (90, 99)
    assert _parse_range("bytes=100-", 100) == "unsatisfiable"
    assert _parse_range("bytes=5-1", 100) == "unsatisfiable"
    assert _parse_range("bytes=0-1,5-6", 100) is None  # multi-range: send it all
    assert _parse_range("items=0-1", 100) is None


# -- purges -------------------------------------------------------------------------------

async def test_the_requester_cannot_approve_their_own_purge(client, queries):
    await sign_in(client, "supervisor-a")  # supervisor-a requested purge-1
    page = await client.get("/console/purges")
    assert 'data-purge="purge-1"' in page.text
    r = await client.post("/console/purges/purge-1/approve", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 409 and "双人控制" in r.text
    assert queries.purges["purge-1"].state == "pending" and queries.register == []


async def test_a_second_person_approves_and_the_register_records_both(client, queries):
    await sign_in(client, "compliance-a")
    page = await client.get("/console/purges")
    assert (await client.post("/console/purges/purge-1/approve", data={})).status_code == 403
    r = await client.post("/console/purges/purge-1/approve", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    (entry,) = queries.register
    assert (entry.recording_id, entry.operator, entry.approver) == ("rec-old", "supervisor-a", "compliance-a")
    reg = (await client.get("/console/destruction-register")).text
    assert "rec-old" in reg and "supervisor-a" in reg and "compliance-a" in reg
    assert (await client.get("/console/recordings/rec-old")).status_code == 404


async def test_qa_cannot_approve_purges(client):
    await sign_in(client, "qa-a")
    assert (await client.get("/console/purges")).status_code == 403
    assert (await client.post("/console/purges/purge-1/approve", data={})).status_code == 403


# -- health strip ---------------------------------------------------------------------------

async def test_health_strip_lists_the_six_components_with_words_not_only_colour(client, queries):
    await sign_in(client, "compliance-a")
    html = (await client.get("/console/")).text
    comps = re.findall(r'data-component="([a-z_]+)"', html)
    assert comps == ["store", "vault", "sip", "mqtt", "leader", "audit_chain", "holidays"]
    assert "MQTT: <strong>降级</strong>" in html and "审计链校验: <strong>正常</strong>" in html
    assert "主实例: <strong>正常</strong>" in html


async def test_a_failing_health_probe_shows_down_instead_of_breaking_the_page(client, queries):
    async def broken():
        raise RuntimeError("boom")

    queries.health = broken
    await sign_in(client, "compliance-a")
    r = await client.get("/console/")
    assert r.status_code == 200 and r.text.count("<strong>故障</strong>") == len(HEALTH_COMPONENTS)


async def test_static_assets_are_served_and_nothing_else(client):
    css = await client.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await client.get("/console/static/..%2Frouter.py")).status_code == 404
    assert (await client.get("/console/static/nope.js")).status_code == 404
